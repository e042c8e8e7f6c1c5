"""Stage 9, gallery: one PNG with a keyframe per shot, each bordered in the colour of
its score, with the shot's times and score written large enough for a phone screen.
"""

from __future__ import annotations

import io
import math
import textwrap

import numpy as np

from .report import SCORE_MEANS, Report, fmt_clock, score_colour


def fmt_score(score: float | None) -> str:
    return "no face scored" if score is None else f"{score * 100:.0f}%"


HEADLINE_PT = 20
FOOTER_PT = 11


def render_gallery(report: Report, keyframes: dict[int, np.ndarray], max_cols: int = 3) -> bytes:
    """PNG bytes. ``keyframes`` maps shot index to an RGB image (boxes are drawn from the report)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = gallery_figure(report, keyframes, max_cols)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=fig.get_facecolor())
    plt.close(fig)
    return buf.getvalue()


def gallery_figure(report: Report, keyframes: dict[int, np.ndarray], max_cols: int = 3):
    """The gallery as a matplotlib figure. An inconclusive report (the reliability gate held
    its number back) shows no percentage anywhere: grey borders and boxes, no scores."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    shots = report.shots
    n = max(1, len(shots))
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    aspect = report.media.height / max(1, report.media.width)
    width = max(6.4, 4.2 * cols)  # room for the headline even with one panel
    panel_w = width / cols
    gated = bool(report.verdict_note)
    colour = score_colour(None if gated else report.score)
    headline = ("no face scored" if report.score is None else
                "no reliable score here (the report says why)" if gated
                else f"{fmt_score(report.score)} {SCORE_MEANS}")
    # wrapped to the figure's width (about 0.6 em a character), never cut at the edges
    per_line = max(12, int(width * 72 / (HEADLINE_PT * 0.62)))
    headline = textwrap.fill(f"{report.verdict_label}: {headline}", per_line)
    title_in = (headline.count("\n") + 1) * HEADLINE_PT * 1.35 / 72
    # what the colours mean, under the panels (not where the gate holds the number back)
    footer = "" if gated or report.score is None else textwrap.fill(report.bands_note, int(per_line * 1.8))
    footer_in = (footer.count("\n") + 1) * FOOTER_PT * 1.5 / 72 if footer else 0.0
    height = panel_w * aspect * rows + 0.8 * rows + 0.2 + title_in + footer_in
    fig = plt.figure(figsize=(width, height), dpi=110)
    if footer:
        fig.text(0.5, 0.004, footer, ha="center", va="bottom", fontsize=FOOTER_PT, color="#444444")
    fig.patch.set_facecolor("white")
    fig.suptitle(headline, fontsize=HEADLINE_PT, fontweight="bold", color=colour, y=0.995)
    for k, shot in enumerate(shots):
        _shot_panel(fig.add_subplot(rows, cols, k + 1), report, shot, keyframes.get(shot.index), gated)
    fig.tight_layout(rect=(0, footer_in / height, 1, 1 - title_in / height))
    return fig


def _shot_panel(ax, report: Report, shot, img: np.ndarray | None, gated: bool) -> None:
    """One shot's keyframe, its faces boxed in their score's colour, the border in the shot's."""
    from matplotlib.patches import Rectangle

    c = score_colour(None if gated else shot.score)
    if img is not None:
        sx = img.shape[1] / report.media.width
        sy = img.shape[0] / report.media.height
        ax.imshow(img)
        faces = report.faces if report.media.kind == "image" else [cl.representative for cl in shot.clusters]
        for f in faces:
            if report.media.kind == "video" and f.frame_index != shot.keyframe_index:
                continue
            b = f.box
            ax.add_patch(Rectangle((b.x1 * sx, b.y1 * sy), (b.x2 - b.x1) * sx, (b.y2 - b.y1) * sy,
                                   fill=False, lw=2.5, ec=score_colour(None if gated else f.score)))
            if gated:
                continue
            ax.text(b.x1 * sx, b.y1 * sy - 4, f"{f.score * 100:.0f}%", color="white", fontsize=12,
                    fontweight="bold", va="bottom", bbox=dict(fc=score_colour(f.score), ec="none", pad=1.5))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(c)
        spine.set_linewidth(9)
    shot_score = "faces found, not scored reliably" if gated and shot.score is not None else fmt_score(shot.score)
    if report.media.kind == "video":
        title = f"Shot {shot.index + 1}  {fmt_clock(shot.start_s)}-{fmt_clock(shot.end_s)}\n{shot_score}"
    else:
        n = len(report.faces)
        title = (f"{n} face{'s' if n != 1 else ''} " + ("found" if gated else "scored")) if n else "no face found"
    ax.set_title(title, fontsize=14, color=c, fontweight="bold")
