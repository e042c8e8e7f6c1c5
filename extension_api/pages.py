"""Server-rendered HTML: the report page bots link to as "full report", and the model card."""

from __future__ import annotations

from html import escape

from detector.report import SCORE_MEANS, VERDICT_COLOURS, ReportVersionError, fmt_clock, read_report, score_colour
from detector.vocabulary import State

# Warnings for the service's operators, not for the reader: shown in small print.
OPERATOR_WARNINGS = {"members_not_scored"}


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:0 auto;padding:16px;
color:#1d1d1f;background:#fafafa;line-height:1.45}
h1{font-size:1.5rem;margin:.2em 0}.verdict{padding:16px 20px;border-radius:12px;color:#fff;margin:12px 0}
.verdict .score{font-size:2.4rem;font-weight:700}.muted{color:#666;font-size:.9rem}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:8px;border-bottom:1px solid #ddd;text-align:left}
.pill{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-weight:600}
img.gallery{width:100%;border-radius:8px;border:1px solid #ddd}.faces img{width:96px;height:96px;border-radius:6px;
margin:4px;border:4px solid}.warn{background:#fff4d6;border-left:4px solid #e0a100;padding:8px 12px;margin:6px 0}
a{color:#0b63c5}.person .faces{display:flex;flex-wrap:wrap;gap:6px}.person figure{margin:0;text-align:center}
.person figcaption{font-size:.85rem;color:#444}
.person .why{max-width:220px}.person .why img{width:160px;height:160px;border-radius:6px;border:4px solid #ddd}
"""


def _pct(score) -> str:
    return "no score" if score is None else f"{score * 100:.0f}%"


def page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>")


def report_page(view: dict, model_card_url: str) -> str:
    state = view.get("state")
    if state in (State.QUEUED, State.RUNNING):
        prog = view.get("progress") or {}
        frac = f" ({prog['done']}/{prog['total']})" if prog.get("total") else ""
        body = (f"<h1>Checking…</h1><p>{escape(view.get('message') or '')}{escape(frac)}</p>"
                f'<p class="muted">Stage: {escape(view.get("stage") or "")}. This page refreshes itself.</p>')
        return page("Deepfake check in progress", body, refresh=3)
    if state == State.FAILED:
        prob = view.get("problem") or {}
        body = (f"<h1>The check could not be completed</h1><p><b>{escape(prob.get('title', ''))}</b></p>"
                f"<p>{escape(prob.get('detail', ''))}</p>")
        return page("Deepfake check failed", body)
    try:
        r = read_report(view["report"])
    except ReportVersionError as e:
        body = (f"<h1>The check finished</h1><p>Its report is in a format this page does not read ({escape(str(e))}). "
                f'The JSON is at <a href="{escape(view.get("links", {}).get("self", ""))}">the job</a>.</p>')
        return page("Deepfake check", body)
    colour = VERDICT_COLOURS[r.verdict]
    src, media = r.source, r.media
    what = (f"video, {media.width}×{media.height}, {media.duration_s or 0:.1f} s"
            if media.kind == "video" else f"image, {media.width}×{media.height}")
    origin = src.url or src.input
    link = (f'<a href="{escape(origin)}" rel="noopener nofollow">{escape(src.title or origin)}</a>'
            if origin and origin.startswith("http") else escape(src.title or origin or ""))
    parts = [f"<h1>Deepfake check</h1><p class='muted'>{link} · {escape(what)}</p>",
             f'<div class="verdict" style="background:{colour}"><div class="score">{escape(_pct(r.score))}'
             f'</div><div>{escape(r.verdict_label)}: {SCORE_MEANS}</div></div>'
             if not r.verdict_note else
             f'<div class="verdict" style="background:{colour}"><div class="score">{escape(r.verdict_label)}'
             f'</div><div>{escape(r.verdict_note)} (The models said {escape(_pct(r.score))}; '
             'read it as no evidence either way.)</div></div>']
    if r.score is not None and not r.verdict_note:
        parts.append(f'<p class="muted">{escape(r.bands_note)}</p>')
    if r.shots_note:
        parts.append(f"<p>{escape(r.shots_note)}</p>")
    if view.get("seen_before"):
        parts.append('<p class="muted">This medium was checked before; this is the stored result.</p>')
    operator_notes = [w for w in r.warnings if w.code in OPERATOR_WARNINGS]
    for w in r.warnings:
        if w.code not in OPERATOR_WARNINGS:
            parts.append(f'<div class="warn">{escape(w.message)}</div>')
    if view.get("links", {}).get("gallery"):
        parts.append(f'<img class="gallery" alt="Keyframes of each shot, bordered by score" '
                     f'src="{escape(view["links"]["gallery"])}">')
    if r.people:
        parts.append("<h2>People</h2>" + "".join(_person_html(p, media.kind) for p in r.people))
    rows = []
    for s in r.shots:
        faces = "".join(
            f'<img alt="face, {escape(_pct(c.score))}" title="{c.face_count} faces, {escape(_pct(c.score))}"'
            f' style="border-color:{score_colour(c.score)}" src="data:image/jpeg;base64,{c.thumbnail_jpeg_b64}">'
            for c in s.clusters if c.thumbnail_jpeg_b64)
        times = f"{fmt_clock(s.start_s)}–{fmt_clock(s.end_s)}" if media.kind == "video" else "image"
        rows.append(f"<tr><td>{s.index + 1}</td><td>{escape(times)}</td><td>{s.faces_detected}</td>"
                    f'<td><span class="pill" style="background:{score_colour(s.score)}">{escape(_pct(s.score))}'
                    f'</span></td><td class="faces">{faces}</td></tr>')
    parts.append("<h2>Shots</h2><table><tr><th>#</th><th>time</th><th>faces</th><th>score</th>"
                 f"<th>people (scored faces)</th></tr>{''.join(rows)}</table>")
    models = ", ".join(f"{escape(m.name)} {escape(m.version)}" for m in r.models)
    notes = " ".join(escape(w.message) for w in operator_notes)
    parts.append(f'<p class="muted">Models: {models}. {notes} <a href="{escape(model_card_url)}">Model card</a>. '
                 f"Report version {escape(r.report_version)}, analysed {escape(r.created_at.isoformat()[:19])} UTC."
                 " A score is a statistical estimate about the faces only, not proof; read the model card.</p>")
    return page(f"Deepfake check: {r.verdict_label} ({_pct(r.score)})", "".join(parts))


def _person_html(p, kind: str) -> str:
    """One person: 'Person B (shots 2, 5, 7): 81%' and their most suspicious faces."""
    faces = "".join(
        f'<figure><img alt="face of person {escape(p.label)}, {escape(_pct(f.cluster_score))}"'
        f' title="this frame alone: {escape(_pct(f.score))}" style="border-color:{score_colour(f.cluster_score)}"'
        f' src="data:image/jpeg;base64,{f.thumbnail_jpeg_b64}">'
        f"<figcaption>{'shot ' + str(f.shot + 1) + ': ' if kind == 'video' else ''}{escape(_pct(f.cluster_score))}"
        "</figcaption></figure>" for f in p.faces if f.thumbnail_jpeg_b64)
    why = (f'<figure class="why"><img alt="heat map: where the detectors looked most" '
           f'src="data:image/jpeg;base64,{p.heatmap_jpeg_b64}"><figcaption>{escape(p.heatmap_note or "")}'
           "</figcaption></figure>" if p.heatmap_jpeg_b64 else "")
    return (f'<div class="person"><p><b>{escape(p.where(kind))}</b>: <span class="pill" '
            f'style="background:{score_colour(p.score)}">{escape(_pct(p.score))}</span></p>'
            f'<div class="faces">{why}{faces}</div></div>')


def _num(v, fmt="{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def disputed_sentence(fb: dict) -> str:
    """'Readers disputed 3 of the 41 verdicts they gave feedback on (52 opinions: 44 right, 8 wrong).'"""
    o = fb["opinions"]
    if not fb["checks_with_feedback"]:
        return "No reader has said yet whether a verdict looks right or wrong."
    return (f"Readers disputed {fb['disputed']} of the {fb['checks_with_feedback']} verdicts they gave feedback on "
            f"({o['right'] + o['wrong']} opinions: {o['right']} looks right, {o['wrong']} looks wrong).")


def model_card_page(card: dict) -> str:
    rows = "".join(
        f"<tr><td>{escape(m['name'])}</td><td>{escape(m['version'])}</td><td>{escape(m['architecture'])}</td>"
        f"<td>{'yes' if m['trained'] else 'no (never scored)'}"
        f"{'' if m.get('in_default_ensemble', True) else ' · optional, used once installed'}</td>"
        f"<td>{escape(m['licence'])}</td><td>{escape(m['training_data'])}</td></tr>" for m in card["members"])
    caveats = "".join(f"<li>{escape(c)}</li>" for c in card["caveats"])
    parts = [f"<h1>Model card</h1><p>{escape(card['intended_use'])}</p><h2>Caveats</h2><ul>{caveats}</ul>",
             "<h2>Ensemble members</h2><table><tr><th>name</th><th>version</th><th>architecture</th>"
             f"<th>trained weights</th><th>licence</th><th>training data</th></tr>{rows}</table>"]
    for ev in card.get("evaluations", []):
        d = ev.get("data", {})
        which = "the default ensemble" if ev.get("default_ensemble") else "members: " + ", ".join(d.get("members", []))
        parts.append(f"<h2>Evaluation: {escape(ev['name'])}</h2><p class='muted'>{escape(str(d.get('labels', '')))}"
                     f" · {escape(str(d.get('split', '')))} · {escape(str(ev.get('rows') or ''))} items · "
                     f"{escape(which)}</p>")
        for title, key in (("video level", "video_level"), ("face level", "face_level")):
            lvl = ev.get(key)
            if not lvl:
                continue
            body = "".join(f"<tr><td>{escape(n)}</td><td>{m['n']}</td><td>{_num(m['auc'])}</td>"
                           f"<td>{_num(m['balanced_accuracy'])}</td></tr>"
                           for n, m in [("ensemble", lvl["ensemble"])] + list(lvl["members"].items()))
            parts.append(f"<h3>{title}</h3><table><tr><th>model</th><th>n</th><th>AUC</th>"
                         f"<th>balanced accuracy</th></tr>{body}</table>")
        pm = ev.get("per_manipulation") or {}
        if pm:
            body = "".join(f"<tr><td>{escape(k)}</td><td>{v['n']}</td><td>{_num(v['mean_score'])}</td>"
                           f"<td>{_num(v['accuracy'])}</td></tr>" for k, v in pm.items())
            parts.append("<h3>per manipulation (ensemble)</h3><table><tr><th>group</th><th>n</th>"
                         f"<th>mean score</th><th>accuracy</th></tr>{body}</table>")
    rob = card.get("robustness")
    if rob:
        body = "".join(f"<tr><td>{escape(r['attack'])}</td><td>{escape(r['norm'] or '–')}</td>"
                       f"<td>{_num(r['eps'], '{:.4g}')}</td><td>{r['iterations']}</td>"
                       f"<td>{_num(r['balanced_accuracy'])}</td><td>{_num(r.get('fakes_detected'), '{:.0%}')}</td></tr>"
                       for r in rob["rows"])
        parts.append(f"<h2>Robustness</h2><p>PGD on the whole ensemble pushing fake faces towards 'real' "
                     f"({escape(str(rob.get('data', '')))}).</p><table><tr><th>attack</th><th>norm</th>"
                     f"<th>ε</th><th>iterations</th><th>balanced accuracy</th><th>fakes caught</th></tr>{body}</table>")
    g = card.get("reliability_gate")
    if g:
        parts.append("<h2>Reliability gate</h2><p>'Inconclusive' instead of a verdict when the median face is under "
                     f"{g['min_face_px']} px, a video has under {g['min_video_bits_per_pixel']} bits per pixel, a JPEG "
                     f"has quality under {g['min_jpeg_quality']}, or fewer than {g['min_face_frames']} frames show a "
                     "scored face.</p>")
    fb = card.get("user_feedback")
    if fb:
        parts.append(f"<h2>What readers said</h2><p>{disputed_sentence(fb)}</p><p class='muted'>{escape(fb['note'])}</p>")
    hist = "".join(f"<li><b>{escape(h['report_version'])}</b>: {escape(h['change'])}</li>"
                   for h in card.get("version_history", []))
    parts.append(f"<h2>Version history</h2><ul>{hist}</ul>"
                 f"<p class='muted'>Report version {escape(card['report_version'])}.</p>")
    return page("Model card", "".join(parts))
