import { call, getSettings, messageFor, normaliseApiUrl, saveSettings } from "./api.js";

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
  const { url, error } = normaliseApiUrl(settings.apiUrl);  // the same address Save would store
  if (error) return show(error, false);
  try {
    await call({ apiUrl: url, token: "" }, "healthz");
  } catch (e) {
    return show(messageFor("service-down"), false);
  }
  try {
    const me = await call({ apiUrl: url, token: settings.token.trim() }, "v1/token");
    await saveSettings(settings);  // what was tested is what is used from now on
    $("apiUrl").value = url;
    show(`Connected and saved: the service accepts the token "${me.name}".`, true);
  } catch (e) {
    show(OPTIONS_MESSAGES[e.code] || messageFor(e.code, e.detail), false);
  }
}

// On this page, "check it in the options" would point at itself.
const OPTIONS_MESSAGES = {
  "unauthorised": "Paste your API token above (see “Where do I get a token?”).",
  "bad-token": "The service refused this token: check that it was copied whole, or ask for a new one.",
  "rate-limited": "Too many attempts in a short time; wait a minute and test again.",
};

$("save").addEventListener("click", async () => {
  try {
    await saveSettings(current());
  } catch (e) {
    return show(e.detail || String(e), false);  // nothing stored: the old settings stay
  }
  const saved = await getSettings();
  $("apiUrl").value = saved.apiUrl;
  show("Saved.", true);
});
$("test").addEventListener("click", test);
getSettings().then(s => { $("apiUrl").value = s.apiUrl; $("token").value = s.token; });
if (location.hash === "#welcome") $("welcome").hidden = false;
