import { call, getSettings, messageFor, saveSettings } from "./api.js";

const $ = (id) => document.getElementById(id);

function show(text, ok) {
  const s = $("status");
  s.textContent = text;
  s.className = ok ? "ok" : "bad";
}

function current() {
  return { apiUrl: $("apiUrl").value, token: $("token").value };
}

async function test() {
  const settings = current();
  try {
    new URL(settings.apiUrl);
  } catch (e) {
    return show("The service address is not a valid URL.", false);
  }
  try {
    await call({ apiUrl: settings.apiUrl.replace(/\/+$/, ""), token: "" }, "healthz");
  } catch (e) {
    return show(messageFor("service-down"), false);
  }
  try {
    const me = await call({ apiUrl: settings.apiUrl.replace(/\/+$/, ""), token: settings.token.trim() }, "v1/token");
    show(`Connected: the service accepts the token "${me.name}".`, true);
  } catch (e) {
    show(messageFor(e.code === "unauthorised" && !settings.token ? "unauthorised" : e.code, e.detail), false);
  }
}

$("save").addEventListener("click", async () => {
  await saveSettings(current());
  show("Saved.", true);
});
$("test").addEventListener("click", test);
getSettings().then(s => { $("apiUrl").value = s.apiUrl; $("token").value = s.token; });
