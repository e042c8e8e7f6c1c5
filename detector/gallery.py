"""Stage 9, gallery: one PNG with a keyframe per shot, each bordered in the colour of
its score, with the shot's times and score written large enough for a phone screen;
under the shots, one row per person (people across shots): who, where, and their most
suspicious faces.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap

import numpy as np

from .report import PERSON_FACES, SCORE_MEANS, Report, fmt_clock, score_colour


def fmt_score(score: float | None) -> str:
    return "no face scored" if score is None else f"{score * 100:.0f}%"


HEADLINE_PT = 20
FOOTER_PT = 11
MAX_PEOPLE = 6  # the most suspicious; more people: the report lists them


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
    # the people, most suspicious first: a row each (name, heat map, faces), small enough that
    # six of them do not dwarf the shots
    people = sorted(report.people, key=lambda p: -p.score)[:MAX_PEOPLE]
    explained = any(p.heatmap_jpeg_b64 for p in people)
    cell_w = min(width / (1 + explained + PERSON_FACES), 1.45)
    side = cell_w - 0.1
    person_h = side + 0.5  # with two lines of caption under the heat map
    people_in = person_h * len(people) + (0.15 if people else 0.0)
    shots_h = panel_w * aspect * rows + 0.8 * rows + 0.2 + title_in + footer_in
    fig = plt.figure(figsize=(width, shots_h), dpi=110)
    fig.patch.set_facecolor("white")
    for k, shot in enumerate(shots):
        _shot_panel(fig.add_subplot(rows, cols, k + 1), report, shot, keyframes.get(shot.index), gated)
    fig.tight_layout(rect=(0, footer_in / shots_h, 1, 1 - title_in / shots_h))
    height = shots_h + people_in
    if people:  # the figure grows under the shots, which keep their laid-out place in inches
        boxes = [ax.get_position(original=True) for ax in fig.axes]
        fig.set_size_inches(width, height)
        for ax, b in zip(fig.axes, boxes):
            ax.set_position((b.x0, (b.y0 * shots_h + people_in) / height, b.width, b.height * shots_h / height))
    if footer:
        fig.text(0.5, 0.004, footer, ha="center", va="bottom", fontsize=FOOTER_PT, color="#444444")
    fig.suptitle(headline, fontsize=HEADLINE_PT, fontweight="bold", color=colour, y=0.995)
    # the people's rows, placed under the shots once those are laid out
    for j, person in enumerate(people):
        bottom = footer_in + person_h * (len(people) - 1 - j) + 0.45
        axes = [fig.add_axes((0.0, bottom / height, cell_w / width, side / height))]
        for c in range(len(person.faces) + explained):
            left = cell_w * (c + 1) + (cell_w - side) / 2
            axes.append(fig.add_axes((left / width, bottom / height, side / width, side / height)))
        _person_row(axes, report, person, gated, explained)
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


def _thumb(b64: str | None) -> np.ndarray | None:
    if not b64:
        return None
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _person_row(axes, report: Report, person, gated: bool, explained: bool = False) -> None:
    """'Person B', where they appear and their score; the heat map of their most suspicious
    face (why); then their most suspicious faces, each bordered in its score's colour with
    its shot and score under it."""
    video = report.media.kind == "video"
    name = axes[0]
    name.axis("off")
    where = person.where(report.media.kind)
    label, _, shots = where.partition(" (")
    text = label + (f"\n({shots}" if shots else "") + ("" if gated else f"\n{person.score * 100:.0f}%")
    name.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, fontweight="bold",
              color=score_colour(None if gated else person.score), transform=name.transAxes)
    if explained:
        why = axes[1]
        img = _thumb(person.heatmap_jpeg_b64)
        if img is not None:
            why.imshow(img)
            why.set_xlabel("why: where the\ndetectors looked (red)", fontsize=8)
        else:
            why.axis("off")
        why.set_xticks([])
        why.set_yticks([])
        axes = axes[:1] + axes[2:]
    for ax, face in zip(axes[1:], person.faces):
        img = _thumb(face.thumbnail_jpeg_b64)
        if img is not None:
            ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # the person's score in that shot, as the shot shows it
            spine.set_edgecolor(score_colour(None if gated else face.cluster_score))
            spine.set_linewidth(5)
        caption = (f"shot {face.shot + 1}" if video else "") + ("" if gated else
                                                               f"{' · ' if video else ''}{face.cluster_score * 100:.0f}%")
        ax.set_xlabel(caption, fontsize=9)
