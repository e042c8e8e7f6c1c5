// The service worker: context menu -> submit -> follow by polling -> storage -> views.
// Everything a check needs is kept in chrome.storage.local, so when the browser stops
// this worker mid-check, the next start (an alarm, the popup, any event) resumes it.
import { ApiError, HISTORY_MAX, forwardOnly, MENU_ID, getCheck, getSettings, messageFor, pct, sendFeedback, submitFile,
         submitUrl, summarise } from "./api.js";

const POLL_MS = 1500;
// Answers that pass: the service (or its store) is down for a while, or asks to slow down.
const PASSING = ["service-down", "service-unavailable", "rate-limited"];
const ALARM = "poll-checks";

chrome.runtime.onInstalled.addListener((details) => {
  chrome.contextMenus.create({ id: MENU_ID, title: "Check for deepfake",
                               contexts: ["image", "video", "link", "page"] });
  if (details.reason === "install")  // the first check must not fail before the options were seen
    chrome.tabs.create({ url: chrome.runtime.getURL("options.html#welcome") });
});
chrome.contextMenus.onClicked.addListener((info, tab) => { handleMenuClick(info, tab); });
chrome.alarms.onAlarm.addListener((alarm) => { if (alarm.name === ALARM) resumePending(); });
chrome.runtime.onMessage.addListener((msg, _sender, reply) => {
  if (msg && msg.type === "resume") { resumePending(); reply({ ok: true }); }
  if (msg && msg.type === "check-link" && /^https?:/i.test(msg.url || "")) {  // an offer taken in the popup
    handleMenuClick({ linkUrl: msg.url, pageUrl: msg.pageUrl }, { id: -1, url: msg.pageUrl, title: msg.pageTitle })
      .then(localId => reply({ localId }));
    return true;  // the answer comes after the check was created
  }
  if (msg && msg.type === "feedback" && ["right", "wrong"].includes(msg.opinion)) {  // a popup button
    giveFeedback(msg.localId, msg.opinion).then(reply);
    return true;
  }
});

// "Looks right / looks wrong" on a finished check: stored by the service (one opinion per
// person, this token being one person's), remembered with the check to show which was pressed.
async function giveFeedback(localId, opinion) {
  const c = (await loadChecks()).find(x => x.localId === localId);
  if (!c || !c.jobId) return { ok: false };
  try {
    const answer = await sendFeedback(await getSettings(), c.jobId, opinion);
    const note = answer.previous && answer.previous !== opinion
      ? `Changed: you now say this verdict looks ${opinion}. Thank you.`
      : `Thank you: noted that this verdict looks ${opinion} to you.`;
    await updateCheck(localId, { feedback: opinion, feedbackNote: note });
    return { ok: true };
  } catch (e) {
    await updateCheck(localId, { feedbackNote: messageFor(e.code, e.detail) });
    return { ok: false };
  }
}
chrome.notifications.onClicked.addListener((id) => {
  chrome.storage.local.get("checks").then(({ checks }) => {
    const c = (checks || []).find(x => x.localId === id);
    if (c && c.links && c.links.report_page) chrome.tabs.create({ url: c.links.report_page });
  });
});

// --- storage of the checks (newest first) -----------------------------------------------
async function loadChecks() {
  const { checks } = await chrome.storage.local.get("checks");
  return checks || [];
}

let writing = Promise.resolve();
function updateCheck(localId, patch) {
  // Serialised read-modify-write: concurrent polls never lose each other's updates.
  writing = writing.then(async () => {
    const checks = await loadChecks();
    const i = checks.findIndex(c => c.localId === localId);
    if (i >= 0) checks[i] = { ...checks[i], ...forwardOnly(checks[i], patch), updated: Date.now() };
    else checks.unshift({ localId, ...patch, created: Date.now(), updated: Date.now() });
    await chrome.storage.local.set({ checks: checks.slice(0, HISTORY_MAX) });
    return checks[i >= 0 ? i : 0];
  });
  return writing;
}

// --- what was clicked -------------------------------------------------------------------
function targetOf(info, tab) {
  if ((info.mediaType === "image" || info.mediaType === "video") && info.srcUrl)
    return { url: info.srcUrl, kind: info.mediaType };
  if (info.linkUrl) return { url: info.linkUrl, kind: "link" };
  return { url: info.pageUrl || (tab && tab.url), kind: "page" };
}

// What works when the bytes behind a blob: URL cannot be read: links the service can open
// (it hands them to yt-dlp), the embedded player's own address first.
function offersFor(info, tab) {
  const out = [];
  const page = info.pageUrl || (tab && tab.url);
  if (info.frameUrl && info.frameUrl !== page && /^https?:/i.test(info.frameUrl))
    out.push({ url: info.frameUrl, text: `Check the player's address (${hostOf(info.frameUrl)})` });
  if (page && /^https?:/i.test(page)) out.push({ url: page, text: "Check the page's link instead" });
  return out;
}

function hostOf(url) {
  try { return new URL(url).host; } catch (e) { return url; }
}

async function bytesOf(url, tab, info) {
  // data: URLs are read here; blob: URLs belong to the document that made them, so they are
  // read there: the frame the menu was opened in (an embedded player may be another site).
  if (url.startsWith("data:")) return await (await fetch(url)).blob();
  let answers;
  try {
    answers = await chrome.scripting.executeScript({
      target: { tabId: tab.id, frameIds: [info.frameId || 0] }, world: "MAIN",
      func: async (u) => {
        try {
          const b = await (await fetch(u)).blob();
          return { data: await new Promise((ok) => { const r = new FileReader(); r.onload = () => ok(r.result); r.readAsDataURL(b); }) };
        } catch (e) {
          // A MediaSource's URL names no file: the player streams the video in pieces.
          const playing = [...document.querySelectorAll("video, audio")].some(v => v.src === u || v.currentSrc === u);
          return { error: playing ? "streamed-video" : "blob-gone" };
        }
      },
      args: [url],
    });
  } catch (e) {  // no access to that frame (an embedded player from another site)
    throw new ApiError(info.frameId ? "embedded-player" : "page-unreadable", String(e && e.message || e));
  }
  const result = answers && answers[0] && answers[0].result;
  if (!result || result.error) throw new ApiError((result && result.error) || "page-unreadable");
  return await (await fetch(result.data)).blob();
}

function filenameFor(kind, blob) {
  const ext = (blob.type.split("/")[1] || "bin").split(";")[0];
  return `${kind}.${ext}`;
}

function label(url, kind) {
  // data: and blob: media are sent as bytes; storage and views keep a short label instead.
  if (url && url.startsWith("data:")) return `${kind === "video" ? "Video" : "Image"} embedded in the page`;
  if (url && url.startsWith("blob:")) return `${kind === "video" ? "Video" : "Image"} from the page (${url.slice(5, 60)})`;
  return url;
}

export async function handleMenuClick(info, tab) {
  const target = targetOf(info, tab);
  const localId = crypto.randomUUID();
  const idemKey = crypto.randomUUID();  // a resubmission after an interruption reuses it
  const resubmit = /^https?:/i.test(target.url || "") ? target.url : null;  // bytes from a tab cannot be re-read
  await updateCheck(localId, { url: label(target.url, target.kind), kind: target.kind, pageTitle: tab && tab.title,
                               state: "submitting", stage: "submitting", idemKey, resubmit });
  try { await chrome.action.openPopup(); } catch (e) { /* not allowed here: the notification tells */ }
  submittingHere.add(localId);
  try {
    const settings = await getSettings();
    if (!settings.apiUrl || !settings.token) throw new ApiError("no-api");
    if (!target.url) throw new ApiError("unsupported-url");
    let view;
    if (target.url.startsWith("data:") || target.url.startsWith("blob:")) {
      const blob = await bytesOf(target.url, tab, info);
      view = await submitFile(settings, blob, filenameFor(target.kind, blob), idemKey);
    } else {
      view = await submitUrl(settings, target.url, idemKey);
    }
    await updateCheck(localId, { jobId: view.id, ...summarise(view) });
    if (view.state === "done" || view.state === "failed") await finished(localId);
    else startPolling();
  } catch (e) {
    const offers = OFFERED.includes(e.code) ? offersFor(info, tab) : [];
    await updateCheck(localId, { state: "failed", error: messageFor(e.code, e.detail), offers });
    await finished(localId);
  } finally {
    submittingHere.delete(localId);
  }
  return localId;
}
self.handleMenuClick = handleMenuClick;  // the same entry point, for tests and debugging

// --- following the checks ---------------------------------------------------------------
let polling = false;

function startPolling() {
  chrome.alarms.create(ALARM, { periodInMinutes: 0.5 });  // wakes a stopped worker to resume
  if (!polling) { polling = true; pollLoop(); }
}

async function pollLoop() {
  try {
    while (true) {
      const pending = (await loadChecks()).filter(c => c.jobId && !["done", "failed"].includes(c.state));
      if (!pending.length) break;
      const settings = await getSettings();
      for (const c of pending) {
        try {
          const view = await getCheck(settings, c.jobId);
          await updateCheck(c.localId, { ...summarise(view), unreachableSince: null });
          if (view.state === "done" || view.state === "failed") await finished(c.localId);
        } catch (e) {
          if (PASSING.includes(e.code)) {  // the check goes on on the server: say so, keep asking
            await updateCheck(c.localId, { unreachableSince: c.unreachableSince || Date.now() });
          } else {
            await updateCheck(c.localId, { state: "failed", error: messageFor(e.code, e.detail) });
            await finished(c.localId);
          }
        }
      }
      await new Promise(r => setTimeout(r, POLL_MS));
    }
    await chrome.alarms.clear(ALARM);
  } finally {
    polling = false;
  }
}

const submittingHere = new Set();  // submissions this worker instance is making right now
let resuming = null;  // one resumption at a time (the wake-up, an alarm and a popup may all ask)
function resumePending() {
  resuming = resuming || doResume().finally(() => { resuming = null; });
  return resuming;
}

async function doResume() {
  // A submission this worker was making when it stopped (the browser closed mid-request):
  // sent again with its idempotency key, it finds the check the first attempt created, or
  // creates it if that attempt never arrived. Bytes read from a tab cannot be sent again.
  // (A record without a key, from before keys, is left to show "no answer".)
  const interrupted = (await loadChecks()).filter(c => c.state === "submitting" && !c.jobId && c.idemKey
                                                     && !submittingHere.has(c.localId));
  for (const c of interrupted) {
    if (!c.resubmit) {
      await updateCheck(c.localId, { state: "failed", error: INTERRUPTED });
      await finished(c.localId);
      continue;
    }
    try {
      const view = await submitUrl(await getSettings(), c.resubmit, c.idemKey);
      await updateCheck(c.localId, { jobId: view.id, ...summarise(view) });
      if (view.state === "done" || view.state === "failed") await finished(c.localId);
    } catch (e) {
      if (PASSING.includes(e.code)) continue;  // the service is away: tried again at the next wake-up
      await updateCheck(c.localId, { state: "failed", error: messageFor(e.code, e.detail) });
      await finished(c.localId);
    }
  }
  const pending = (await loadChecks()).filter(c => c.jobId && !["done", "failed"].includes(c.state));
  if (pending.length || interrupted.some(c => c.resubmit)) startPolling();
}
// Bytes that could not be read from the page: the popup offers links the service can open.
const OFFERED = ["streamed-video", "embedded-player", "blob-gone", "page-unreadable"];
const INTERRUPTED = "The check was interrupted before it reached the service (the browser closed); please check it again.";

async function finished(localId) {
  const c = (await loadChecks()).find(x => x.localId === localId);
  if (!c || c.notified) return;
  await updateCheck(localId, { notified: true });
  const popups = chrome.runtime.getContexts ? await chrome.runtime.getContexts({ contextTypes: ["POPUP"] }) : [];
  if (popups.length) return;  // the results view is open: no need to interrupt
  const title = c.state === "failed" ? "Deepfake check failed"
    : c.report && c.report.score !== null ? `${c.report.verdictLabel}: ${pct(c.report.score)}`
    : "Deepfake check: no face found";
  chrome.notifications.create(localId, { type: "basic", iconUrl: "icon128.png", title,
                                         message: c.error || c.url || "" });
}

resumePending();  // after any restart of this worker
