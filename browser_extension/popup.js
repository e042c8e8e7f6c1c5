import { STAGES, bandOf, barWidth, clock, facesText, getSettings, pct } from "./api.js";

const BANDS = { likely_authentic: "Likely authentic", uncertain: "Uncertain",
                likely_manipulated: "Likely manipulated", inconclusive: "Inconclusive" };
let selected = null;
const shownProgress = new Map();  // localId -> widest bar shown in this popup
const OUTAGE_SHOWN_AFTER_MS = 4000;  // one missed poll is not an outage

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

// A link as a line that breaks in its path, never inside the host name.
export function urlLine(url, title) {
  const line = el("div", { class: "url" });
  if (title) line.append(el("span", { class: "title", text: `${title} — ` }));
  let u = null;
  try { u = /^https?:/i.test(url || "") ? new URL(url) : null; } catch (e) { u = null; }
  if (!u) { line.append(el("span", { class: "path", text: url || "" })); return line; }
  line.append(el("span", { class: "host", text: u.host }),
              el("span", { class: "path", text: `${u.pathname}${u.search}`.replace(/^\/$/, "") }));
  return line;
}

async function takeOffer(c, offer) {
  const { localId } = await chrome.runtime.sendMessage({ type: "check-link", url: offer.url,
                                                         pageUrl: c.pageUrl || null, pageTitle: c.pageTitle || null });
  selected = localId;
  render();
}

function detail(c) {
  const card = el("div", { class: "card", "data-state": c.state });
  card.append(urlLine(c.url, c.pageTitle && c.kind === "page" ? c.pageTitle : null));
  if (c.state === "failed") {
    card.append(el("div", { class: "error", text: c.error || "The check failed." }));
    for (const offer of c.offers || []) {
      const b = el("button", { class: "offer", text: offer.text });
      b.addEventListener("click", () => takeOffer(c, offer));
      card.append(b);
    }
    return card;
  }
  if (c.state !== "done") {
    const p = c.progress || {};
    if (c.unreachableSince && Date.now() - c.unreachableSince > OUTAGE_SHOWN_AFTER_MS)
      card.append(el("div", { class: "warn outage",
        text: `The service has not answered for ${Math.round((Date.now() - c.unreachableSince) / 1000)} s. `
              + "The check goes on there and this view continues when the service is back." }));
    card.append(el("p", { text: (STAGES[c.stage] || "Submitting…") + (p.total ? ` ${p.done}/${p.total}` : "") }));
    const bar = el("div", { class: "progress" }, el("div"));
    bar.firstChild.style.width = `${Math.round(100 * barWidth(c, shownProgress))}%`;
    card.append(bar);
    return card;
  }
  const r = c.report;
  if (r.medium) card.append(el("div", { class: "medium" }, el("b", { text: r.medium.name }),
                                el("span", { class: "muted", text: ` · ${r.medium.shape}` })));
  const band = r.score === null || r.note ? "inconclusive" : r.verdict;
  const v = el("div", { class: `verdict band-${band}` },
    el("div", { class: "score", text: r.score === null ? "No score" : r.note ? BANDS.inconclusive : pct(r.score) }),
    el("div", { text: r.score === null ? "No face was found to analyse."
                    : r.note ? r.note : `${BANDS[band]}: probability that the faces were manipulated` }));
  card.append(v);
  if (r.bands && r.score !== null && !r.note) card.append(el("div", { class: "muted bands", text: r.bands }));
  if (r.shotsNote) card.append(el("p", { class: "shots-note", text: r.shotsNote }));
  if (c.seenBefore) card.append(el("div", { class: "muted", text: "Checked before; this is the stored result." }));
  for (const w of r.warnings || []) card.append(el("div", { class: "warn", text: w }));
  const people = r.people || [];
  if (people.length > 1 || (r.kind === "video" && r.shots.length > 1 && people.length)) {
    card.append(el("ul", { class: "people" }, ...people.map(p => el("li", { class: "person" },
      p.thumb ? el("img", { class: "thumb", src: p.thumb, alt: `Face of person ${p.label}` }) : null,
      el("span", { class: "person-text",
                   text: `${p.where}: ${r.note ? "faces found, no reliable score" : pct(p.score)}` })))));
  }
  const rows = r.shots.map(s => el("tr", {},
    el("td", { class: "shot-name" }, el("div", { text: r.kind === "video" ? `Shot ${s.index + 1}` : "Image" }),
       r.kind === "video" ? el("div", { class: "muted", text: `${clock(s.start)}–${clock(s.end)}` }) : null),
    el("td", {}, el("div", { class: "faces-text", text: facesText(s, r.kind) }), thumbs(s)),
    el("td", { class: "shot-score", text: pct(s.score) })));
  card.append(el("table", { class: "shots" }, ...rows));
  if (c.links && c.links.gallery) {
    // a preview of bounded height; the click opens the gallery full size in a tab
    const open = el("a", { class: "gallery-link", href: c.links.gallery, target: "_blank",
                           title: "Open the gallery full size" },
      el("img", { class: "gallery", src: c.links.gallery, alt: "Gallery of the shots" }));
    card.append(open, el("div", { class: "muted", text: "Click the gallery to see it full size." }));
  }
  if (c.links && c.links.report_page)
    card.append(el("p", {}, el("a", { href: c.links.report_page, target: "_blank", text: "Full report" })));
  if (r.score !== null && c.jobId) card.append(feedbackBox(c));
  return card;
}

// "Does this verdict look right to you?": one opinion per check, changeable; the pressed one is marked.
const FEEDBACK = { right: "✓ Looks right", wrong: "✗ Looks wrong" };
function feedbackBox(c) {
  const box = el("div", { class: "feedback" }, el("div", { class: "muted", text: "Does this verdict look right to you?" }));
  for (const [opinion, text] of Object.entries(FEEDBACK)) {
    const b = el("button", { class: c.feedback === opinion ? "fb selected" : "fb", "data-opinion": opinion, text });
    b.addEventListener("click", () => chrome.runtime.sendMessage({ type: "feedback", localId: c.localId, opinion }));
    box.append(b);
  }
  if (c.feedbackNote) box.append(el("div", { class: "muted feedback-note", text: c.feedbackNote }));
  return box;
}

function thumbs(shot) {
  if (!(shot.thumbs || []).length) return null;
  return el("div", { class: "thumbs" }, ...shot.thumbs.map(t => {
    return el("img", { src: t.src, alt: `face, ${pct(t.score)}`, class: `border-${bandOf(t.score)}`,
                       title: `${pct(t.score)} (seen in ${t.frames} frame${t.frames === 1 ? "" : "s"})` });
  }));
}

const STUCK_MS = 10 * 60 * 1000;  // no news for this long: the row says so instead of "…"

// What a history row shows: its verdict band (colour) and a short text, never a number the
// reliability gate held back.
export function rowBadge(c, now = Date.now()) {
  if (c.state === "done") {
    const r = c.report || {};
    if (r.score === null || r.score === undefined) return { band: "inconclusive", text: "no face" };
    if (r.note) return { band: "inconclusive", text: "inconclusive" };
    return { band: r.verdict, text: pct(r.score) };
  }
  if (c.state === "failed") return { band: "failed", text: "failed" };
  if (now - (c.updated || c.created || now) > STUCK_MS) return { band: "stuck", text: "no answer" };
  return { band: "pending", text: "…" };
}

function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
               : d.toLocaleDateString([], { day: "numeric", month: "short" });
}

function rowTitle(c) {
  if (c.report && c.report.title) return c.report.title;
  if (c.kind === "page" && c.pageTitle) return c.pageTitle;
  return c.url;
}

function row(c, shownId) {
  const badge = rowBadge(c);
  const r = el("div", { class: c.localId === shownId ? "row selected" : "row", title: c.url || "" },
    el("span", { class: "url", text: rowTitle(c) }),
    el("span", { class: "when muted", text: when(c.created) }),
    el("span", { class: `pill band-${badge.band}`, text: badge.text }));
  r.addEventListener("click", () => { selected = c.localId; render(); });
  return r;
}

async function clearHistory() {
  // Finished checks go; checks still running stay (they would come back at the next poll).
  const { checks } = await chrome.storage.local.get("checks");
  const kept = (checks || []).filter(c => !["done", "failed"].includes(c.state));
  selected = null;
  await chrome.storage.local.set({ checks: kept });
}

async function render() {
  const { checks } = await chrome.storage.local.get("checks");
  const list = checks || [];
  const current = document.getElementById("current");
  const history = document.getElementById("history");
  if (!list.length) {
    current.replaceChildren(el("p", { class: "muted",
      text: 'Right-click a video, an image, a link or the page and choose "Check for deepfake".' }));
    history.replaceChildren();
    return;
  }
  const shown = list.find(c => c.localId === selected) || list[0];
  current.replaceChildren(detail(shown));
  const rest = list.length > 1 ? list : [];  // every check, the one shown above marked
  const clear = el("button", { class: "clear", text: "Clear history" });
  clear.addEventListener("click", clearHistory);
  history.replaceChildren(...(rest.length ? [el("h1", { text: "Checks" }), ...rest.map(c => row(c, shown.localId)), clear] : []));
}

chrome.storage.onChanged.addListener((changes, area) => { if (area === "local" && changes.checks) render(); });
render();
getSettings().then(s => {
  document.getElementById("model-card").append(el("a", { href: `${s.apiUrl}/v1/model-card`, target: "_blank",
                                                         text: "What the detectors can and cannot do" }));
});
chrome.runtime.sendMessage({ type: "resume" }).catch(() => {});  // wakes the worker to resume pending checks
