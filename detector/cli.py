"""``deepfake-check <url-or-path> [--json] [--gallery out.png] [--device cpu|cuda]``

Runs the whole pipeline in this process (no server), shows progress per stage on
stderr, then prints a readable summary or the JSON report on stdout.
Exit codes: 0 scored, 3 no face (no score), 2 a user error (bad link/file), 1 other.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import DetectorError
from .report import SCORE_MEANS, Report, fmt_clock
from .vocabulary import Stage


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepfake-check", description=__doc__.split("\n\n")[1])
    p.add_argument("source", nargs="?", help="a URL (platform link or direct media) or a local file")
    p.add_argument("--demo", action="store_true",
                   help="check the built-in demo: a 3-shot video made from a photo shipped with matplotlib")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    p.add_argument("--gallery", type=Path, help="write the gallery PNG here")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--frames-per-shot", type=int, help="face-detection budget per shot")
    p.add_argument("--members", help="comma-separated manifest names to use (default: every trained member)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


class _StageProgress:
    """One line per stage on stderr; the line is rewritten in place on a terminal."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.stage = None

    def __call__(self, ev) -> None:
        label = Stage(ev.stage).label
        frac = f" [{ev.done}/{ev.total}]" if ev.total else ""
        line = f"  {label:<9} {ev.message}{frac}"
        if self.tty and ev.stage == self.stage:
            self.stream.write("\r\033[K" + line)
        else:
            if self.stage is not None:
                self.stream.write("\n")
            self.stream.write(line)
        self.stage = ev.stage
        if ev.terminal:
            self.end()
        self.stream.flush()

    def end(self) -> None:
        if self.stage is not None:
            self.stream.write("\n")
            self.stream.flush()
        self.stage = None


def summary(report: Report) -> str:
    def pct(x):
        return "   -  " if x is None else f"{x * 100:5.1f}%"

    lines = []
    score = "no score" if report.score is None else f"{report.score * 100:.1f}% {SCORE_MEANS}"
    lines.append(f"{report.verdict_label.upper()}: {score}")
    if report.verdict_note:
        lines.append(report.verdict_note)
    elif report.score is not None:
        lines.append(report.bands_note)
    if report.shots_note:
        lines.append(report.shots_note)
    m = report.media
    what = (f"video {m.width}x{m.height}, {m.duration_s:.1f} s at {m.fps:.2f} fps"
            if m.kind == "video" else f"image {m.width}x{m.height}")
    lines.append(f"source: {report.source.input} ({what})")
    lines.append("")
    if m.kind == "video":
        lines.append(f"{'shot':>4}  {'start':>7}  {'end':>7}  {'frames':>6}  {'faces':>5}  {'people':>6}  {'score':>6}")
        for s in report.shots:
            lines.append(f"{s.index + 1:>4}  {fmt_clock(s.start_s):>7}  {fmt_clock(s.end_s):>7}  "
                         f"{s.sampled_frames:>6}  {s.faces_detected:>5}  {len(s.clusters):>6}  {pct(s.score)}")
    else:
        lines.append(f"{'face':>4}  {'box (x1,y1,x2,y2)':<24}  {'score':>6}")
        for i, f in enumerate(report.faces):
            b = f.box
            lines.append(f"{i + 1:>4}  {f'{b.x1:.0f},{b.y1:.0f},{b.x2:.0f},{b.y2:.0f}':<24}  {pct(f.score)}")
    if report.people:
        lines.append("")
        gated = bool(report.verdict_note)
        for p in report.people:
            lines.append(f"{p.where(m.kind)}: " + ("faces found, no reliable score" if gated else pct(p.score).strip()))
    for w in report.warnings:
        lines.append(f"! {w.message}")
    lines.append("")
    lines.append("models: " + ", ".join(f"{mm.name} {mm.version}" for mm in report.models))
    lines.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in report.timings_s.items()))
    lines.append(f"report version {report.report_version}, device {report.device}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pyscenedetect").setLevel(logging.INFO if args.verbose else logging.WARNING)
    if not args.source and not args.demo:
        _parser().error("give a URL or a file, or --demo")
    from .pipeline import Analyzer, run
    from .settings import DetectorSettings

    overrides = {}
    if args.frames_per_shot:
        overrides.update(frames_per_shot_cpu=args.frames_per_shot, frames_per_shot_gpu=args.frames_per_shot)
    if args.members:
        overrides["members"] = [m.strip() for m in args.members.split(",") if m.strip()]
    settings = DetectorSettings(**overrides)
    progress = _StageProgress()
    try:
        source = args.source
        if args.demo:
            from .demo import demo_video

            source = str(demo_video(settings.cache_dir / "demo"))
        analyzer = Analyzer(settings, device=args.device)
        analysis = run(source, analyzer, progress=progress)
    except DetectorError as e:
        progress.end()
        print(f"deepfake-check: {e.title}: {e.detail}", file=sys.stderr)
        return 2 if e.status < 500 else 1
    report = analysis.report
    if args.gallery and analysis.gallery_png:
        args.gallery.write_bytes(analysis.gallery_png)
    print(report.to_json(indent=2) if args.json else summary(report))
    if args.gallery and analysis.gallery_png:
        print(f"gallery: {args.gallery}", file=sys.stderr)
    return 0 if report.status == "scored" else 3


if __name__ == "__main__":
    sys.exit(main())
