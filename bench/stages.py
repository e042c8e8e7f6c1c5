"""Per-stage timings of the pipeline on the devset clips (or any files given).

    python bench/stages.py [--frames-per-shot N] [--device cpu] [FILES...]

Prints one row per file with the seconds spent in each stage, then the mean.
Models are loaded once, outside the timed runs, as in a worker.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from detector.pipeline import Analyzer, run
from detector.settings import DetectorSettings

DEVSET = Path(__file__).resolve().parents[2] / "shared" / "media" / "devset" / "videos"
STAGES = ["probe", "shots", "decode", "faces", "embeddings", "clusters", "scoring", "gallery"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--frames-per-shot", type=int, default=16)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    files = args.files or sorted(DEVSET.glob("*.mp4"))
    if not files:
        raise SystemExit(f"no files (looked in {DEVSET})")
    settings = DetectorSettings(frames_per_shot_cpu=args.frames_per_shot, frames_per_shot_gpu=args.frames_per_shot)
    t0 = time.perf_counter()
    analyzer = Analyzer(settings, device=args.device).load()
    print(f"models loaded in {time.perf_counter() - t0:.2f} s on {analyzer.device}; "
          f"budget {args.frames_per_shot} frames/shot")
    head = f"{'file':<28} {'dur s':>6} {'shots':>5} {'faces':>5} " + " ".join(f"{s:>10}" for s in STAGES) \
        + f" {'total':>7} {'score':>6}"
    print(head)
    rows = []
    for f in files:
        t = time.perf_counter()
        r = run(str(f), analyzer).report
        total = time.perf_counter() - t
        faces = sum(c.face_count for s in r.shots for c in s.clusters)
        row = [r.timings_s.get(s, 0.0) for s in STAGES]
        rows.append(row + [total])
        score = "-" if r.score is None else f"{r.score:.3f}"
        print(f"{f.name[:28]:<28} {r.media.duration_s or 0:>6.1f} {len(r.shots):>5} {faces:>5} "
              + " ".join(f"{v:>10.2f}" for v in row) + f" {total:>7.2f} {score:>6}")
    means = [sum(c) / len(rows) for c in zip(*rows)]
    print(f"{'mean':<28} {'':>6} {'':>5} {'':>5} " + " ".join(f"{v:>10.2f}" for v in means[:-1])
          + f" {means[-1]:>7.2f}")


if __name__ == "__main__":
    main()
