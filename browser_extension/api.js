// Shared by the service worker, the popup and the options page.
// The API token is kept in chrome.storage.local and sent only to the configured address.

export const DEFAULTS = { apiUrl: "http://127.0.0.1:8080", token: "" };
export const MENU_ID = "check-deepfake";
export const HISTORY_MAX = 20;

// A sentence for every problem code of detector/vocabulary.py (tests/test_vocabulary.py
// checks it), and for the extension's own codes (no-api, no-face, the blob: ones).
export const MESSAGES = {
  "no-api": "Set the service address and your API token in the extension's options first.",
  "unauthorised": "The service needs an API token: add yours in the extension's options.",
  "bad-token": "The service refused the API token. Check it in the extension's options.",
  "service-down": "The checking service is not answering. Is it running at the address in the options?",
  "unsupported-url": "This link can't be checked: only public http(s) links to videos and images work.",
  "private-address": "This link points to a private or local network address, so it can't be checked.",
  "not-found": "Nothing was found at this link. Is it public, and still online?",
  "unreachable": "The link could not be reached right now. Try again in a few minutes.",
  "not-a-medium": "No video or image was found at this link.",
  "too-large": "This file is too large to check.",
  "too-long": "This video is too long to check; try a shorter clip.",
  "corrupt-media": "The file could not be opened; it seems damaged or in an unknown format.",
  "too-many-pixels": "This image or video is too large in pixels to open safely.",
  "too-small": "This image or video is too small to contain a face.",
  "bad-file-name": "The file's name is too long; rename it and try again.",
  "too-many-streams": "Too many checks are being followed at once; close a popup or wait a moment.",
  "rate-limited": "Too many checks in a short time; wait a minute and try again.",
  "timeout": "The check took too long; a shorter clip may work.",
  "no-trained-weights": "The service is not ready: its detectors are not installed.",
  "weights-unverified": "The service is not ready: a detector file failed its integrity check.",
  "bad-setting": "The service is not ready: it is misconfigured. Its operators can see why in its log.",
  "device-unavailable": "The service is not ready: its compute device is missing. Its operators can see why in its log.",
  "detector-error": "The check failed on the service's side; try again later.",
  "internal-error": "Something went wrong on the service's side; try again later.",
  "worker-crashed": "The analysis stopped unexpectedly several times on this medium, so the service gave up on it.",
  "worker-lost": "The check stopped on the service's side and could not be resumed; check it again.",
  "service-unavailable": "The service is not available right now; the check continues when it is back.",
  "unhealthy": "The service is not available right now; try again in a moment.",
  "forbidden": "The service refused this request.",
  "bad-request": "The service could not read the request the extension sent; update the extension or try again.",
  "request-too-large": "This file is too large to send to the service.",
  "request-timeout": "The service timed out while the check was being sent; try again.",
  "unknown-check": "The service no longer knows this check (it may have expired); check the medium again.",
  "no-gallery": "This check has no gallery image yet.",
  "check-running": "The check is still running; it can be deleted once it has ended.",
  "no-verdict": "This check ended without a verdict, so there is nothing to agree or disagree with.",
  "submission-in-progress": "The check is still being handed to the service; it continues by itself.",
  "no-face": "No face was found, so there is no score. That says nothing about whether it is authentic.",
  // bytes of a blob: video that the extension could not read from the page
  "streamed-video": "This video is streamed to the player in pieces, so there is no file to read from the page. "
                    + "Check the page's link instead: the service fetches the video from there.",
  "embedded-player": "This video plays in a player embedded from another site, which the extension may not read. "
                     + "Check the player's address or the page's link instead.",
  "blob-gone": "The page no longer holds this video (it was replaced or removed). Check the page's link instead.",
  "page-unreadable": "The extension could not read this video from the page. Check the page's link instead.",
};

// Every stage of detector/vocabulary.py before the end (tests/test_vocabulary.py checks it).
export const STAGES = {
  queued: "Waiting in the queue…", downloading: "Downloading…", probing: "Opening the file…",
  segmenting: "Splitting the video into shots…", detecting_faces: "Looking for faces…",
  clustering: "Grouping faces by person…", scoring: "Scoring the faces…", rendering: "Drawing the gallery…",
};

export class ApiError extends Error {
  constructor(code, detail) { super(detail || code); this.code = code; this.detail = detail; }
}

export function messageFor(code, detail) {
  return MESSAGES[code] || detail || "The check failed.";
}

export async function getSettings() {
  const { settings } = await chrome.storage.local.get("settings");
  return { ...DEFAULTS, ...(settings || {}) };
}

// The service address as typed, made usable: trimmed, without trailing slashes, with its
// scheme. Returns { url } or { error } (a sentence for the options page).
export function normaliseApiUrl(raw) {
  const s = String(raw || "").trim().replace(/\/+$/, "");
  if (!s) return { error: "Enter the service address, e.g. http://127.0.0.1:8080." };
  if (!/^https?:\/\//i.test(s))
    return { error: `The service address needs http:// or https:// in front, e.g. http://${s.replace(/^[a-z]*:\/*/i, "")}.` };
  try {
    new URL(s);
  } catch (e) {
    return { error: "The service address is not a valid URL." };
  }
  return { url: s };
}

export async function saveSettings(settings) {
  const blank = !String(settings.apiUrl || "").trim();  // clearing the address is allowed
  const { url, error } = blank ? { url: "" } : normaliseApiUrl(settings.apiUrl);
  if (error) throw new ApiError("bad-address", error);
  await chrome.storage.local.set({ settings: { apiUrl: url, token: settings.token.trim() } });
}

// How far a check has come, 0..1, from its stage and the stage's done/total.
const STAGE_ORDER = ["submitting", "queued", "downloading", "probing", "segmenting", "detecting_faces",
                     "clustering", "scoring", "rendering"];
// A check's stored stage only moves forward: the analysis queue after the download is not
// shown as "Waiting in the queue…" again (a terminal state always comes through).
export function forwardOnly(prev, next) {
  if (!prev || !next.stage || ["done", "failed"].includes(next.state)) return next;
  const was = STAGE_ORDER.indexOf(prev.stage), now = STAGE_ORDER.indexOf(next.stage);
  return was > now && now >= 0 ? { ...next, stage: prev.stage, progress: prev.progress } : next;
}

export function progressFraction(c) {
  const i = Math.max(0, STAGE_ORDER.indexOf(c.stage));
  const p = c.progress || {};
  const within = p.total ? Math.min(1, (p.done || 0) / p.total) : 0;
  return Math.max(0.05, (i + within) / STAGE_ORDER.length);
}

// The bar never moves back while it is on screen (a check waits in the queue again after its
// download, and a stage starts at 0 of N): the widest it has been shown is kept per check.
export function barWidth(c, shown) {
  const w = Math.max(shown.get(c.localId) || 0, progressFraction(c));
  shown.set(c.localId, w);
  return w;
}

function codeOf(body) {
  if (!body) return "";
  return body.code || String(body.type || "").split("/").pop();
}

export async function call(settings, path, init = {}) {
  if (!settings.apiUrl) throw new ApiError("no-api");
  let resp;
  try {
    resp = await fetch(new URL(path, settings.apiUrl + "/"), {
      ...init, headers: { ...(init.headers || {}), ...(settings.token ? { Authorization: `Bearer ${settings.token}` } : {}) },
    });
  } catch (e) {
    throw new ApiError("service-down", String(e));
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) throw new ApiError(codeOf(body) || `http-${resp.status}`, body && body.detail);
  return body;
}

// idemKey: the same key on a retry finds the check the first attempt created (its answer
// may have been lost when the browser closed mid-request).
export function submitUrl(settings, url, idemKey) {
  return call(settings, "v1/checks", { method: "POST", body: JSON.stringify({ url }),
                                       headers: { "Content-Type": "application/json",
                                                  ...(idemKey ? { "Idempotency-Key": idemKey } : {}) } });
}

export function submitFile(settings, blob, filename, idemKey) {
  const form = new FormData();
  form.append("file", blob, filename);
  return call(settings, "v1/checks", { method: "POST", body: form,
                                       headers: idemKey ? { "Idempotency-Key": idemKey } : {} });
}

export function sendFeedback(settings, id, opinion) {
  return call(settings, `v1/checks/${id}/feedback`, { method: "PUT", body: JSON.stringify({ opinion }),
                                                      headers: { "Content-Type": "application/json" } });
}

export function getCheck(settings, id) {
  return call(settings, `v1/checks/${id}`);
}

// What the views need of a job, small enough for storage (no face thumbnails).
export function summarise(view) {
  const out = { state: view.state, stage: view.stage, message: view.message, progress: view.progress || {},
                links: view.links || {}, seenBefore: !!view.seen_before };
  if (view.report) {
    const r = view.report;
    out.report = {
      score: r.score, verdict: r.verdict, verdictLabel: r.verdict_label, kind: r.media.kind,
      note: r.verdict_note || null, bands: r.bands_note || null, shotsNote: r.shots_note || null,
      title: r.source.title, warnings: (r.warnings || []).filter(w => !["members_not_scored"].includes(w.code))
        .map(w => w.message),
      medium: mediumOf(r),
      people: (r.people || []).map(p => ({ label: p.label, where: personWhere(p, r.media.kind), score: p.score,
        thumb: p.faces && p.faces[0] && p.faces[0].thumbnail_jpeg_b64
          ? `data:image/jpeg;base64,${p.faces[0].thumbnail_jpeg_b64}` : null })),
      shots: r.shots.map(s => ({ index: s.index, start: s.start_s, end: s.end_s, score: s.score, faces: s.faces_detected,
                                 people: (s.clusters || []).map(c => c.face_count),
                                 thumbs: thumbsOf(s) })),
    };
  }
  if (view.problem) out.error = messageFor(view.problem.code, view.problem.detail);
  return out;
}

// "Person B (shots 2, 5, 7)", as every channel names a person (shots 1-based; an image has none).
export function personWhere(p, kind) {
  if (kind !== "video") return `Person ${p.label}`;
  const n = p.shots.map(k => k + 1);
  return `Person ${p.label} (shot${n.length > 1 ? "s" : ""} ${n.join(", ")})`;
}

// The people of a shot as the popup shows them: their face thumbnails (the report's, small
// JPEGs), most suspicious first, at most THUMBS_PER_SHOT of them.
export const THUMBS_PER_SHOT = 4;
function thumbsOf(shot) {
  return (shot.clusters || []).filter(c => c.thumbnail_jpeg_b64)
    .sort((a, b) => b.score - a.score).slice(0, THUMBS_PER_SHOT)
    .map(c => ({ src: `data:image/jpeg;base64,${c.thumbnail_jpeg_b64}`, score: c.score, frames: c.face_count }));
}

// Which medium was analysed: its name (a title, a file name, the link's last part) and shape.
export function mediumOf(r) {
  const src = r.source || {}, m = r.media || {};
  let name = src.title || "";
  if (!name && src.input && !/^https?:/i.test(src.input)) name = src.input;  // an uploaded file's name
  if (!name && (src.url || src.input)) {
    try { name = decodeURIComponent(new URL(src.url || src.input).pathname.split("/").filter(Boolean).pop() || ""); }
    catch (e) { name = ""; }
  }
  const shape = m.kind === "video"
    ? `video, ${m.width}×${m.height}, ${clock(m.duration_s || 0)}`
    : `image, ${m.width}×${m.height}`;
  return { name: name || (m.kind === "video" ? "a video" : "an image"), shape, url: src.url || null, via: src.via };
}

export function clock(s) {
  const m = Math.floor((s || 0) / 60);
  const sec = ((s || 0) - 60 * m).toFixed(1).padStart(4, "0");
  return `${m}:${sec}`;
}

// The score bands of detector/report.py (AUTHENTIC_BELOW, MANIPULATED_FROM), for one face.
export function bandOf(score) {
  if (score === null || score === undefined) return "inconclusive";
  return score < 0.35 ? "likely_authentic" : score >= 0.65 ? "likely_manipulated" : "uncertain";
}

export function pct(score) {
  return score === null || score === undefined ? "no face" : `${Math.round(score * 100)}%`;
}

// "16 faces" reads as 16 people; it is 16 sightings of one. A shot's faces as people.
export function facesText(shot, kind = "video") {
  const people = shot.people || [];
  if (!shot.faces) return "no face";
  if (kind !== "video") return `${shot.faces} face${shot.faces === 1 ? "" : "s"}`;  // a photo: each face a person
  if (!people.length) return `${shot.faces} brief face${shot.faces === 1 ? "" : "s"}, not scored`;
  const who = people.length === 1 ? "1 person" : `${people.length} people`;
  return `${who}, seen in ${people.join(" + ")} frame${people.reduce((a, b) => a + b, 0) === 1 ? "" : "s"}`;
}

