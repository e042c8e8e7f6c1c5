"""What cheaper face finding costs in recall: faces found against the 1.x setting.

    python bench/face_recall.py [--frames 16] [FILES...]

On the frames the pipeline samples (16 per video, one shot) of the devset videos and the
crowd clip in ``media/unlabeled``, the reference is MTCNN on frames downscaled to 1280 px
(all three stages, the 1.x pipeline). Each setting prints its detection time, how many
reference faces it finds (IoU > 0.5), those it loses (side in px, reference probability)
and faces the reference did not have. A face counts as the pipeline counts it:
probability >= 0.90 and a shorter side >= 40 px in the original frame.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from detector.faces import FaceDetector
from detector.frames import read_frames, sample_indices
from detector.probe import probe
from detector.shots import ShotSpan

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
# (max side, MTCNN min face size in detection pixels, last stage on the full frame)
SETTINGS = [(1280, 20, False), (640, 13, False), (640, 20, False), (960, 20, False),
            (1280, 20, True), (640, 13, True), (640, 16, True), (640, 20, True)]


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detect(frames, side: int, min_face: int, refine: bool):
    det = FaceDetector("cpu", min_prob=0.90, min_size=40, max_side=side, full_res_refine=refine).load()
    det.mtcnn.min_face_size = min_face
    t = time.perf_counter()
    found = det.detect(frames)
    return found, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--frames", type=int, default=16)
    args = p.parse_args()
    files = args.files or [*sorted((SHARED / "devset" / "videos").glob("*.mp4")),
                           SHARED / "unlabeled" / "crowd_single_shot.mp4"]
    clips = {}
    for f in files:
        info = probe(f)
        clips[f.name] = [rgb for _, rgb in read_frames(f, sample_indices(ShotSpan(0, info.frame_count), args.frames))]
    print(f"{len(clips)} videos, {sum(map(len, clips.values()))} frames")
    ref = {name: detect(frames, *SETTINGS[0])[0] for name, frames in clips.items()}
    print(f"{'max side':>8} {'min face':>8} {'last stage':>10} {'time s':>7} {'found':>9} {'new':>4}  lost (video, px, ref prob)")
    for side, min_face, refine in SETTINGS:
        total = found = new = 0
        seconds, lost = 0.0, []
        for name, frames in clips.items():
            got, dt = detect(frames, side, min_face, refine)
            seconds += dt
            for r, g in zip(ref[name], got):
                new += sum(1 for d in g if not any(iou(d.box, e.box) > 0.5 for e in r))
                for e in r:
                    total += 1
                    if any(iou(e.box, d.box) > 0.5 for d in g):
                        found += 1
                    else:
                        lost.append(f"{name[:14]} {e.box[2] - e.box[0]:.0f} {e.prob:.3f}")
        print(f"{side:>8} {min_face:>8} {'full' if refine else 'small':>10} {seconds:>7.2f} "
              f"{found:>4}/{total:<4} {new:>4}  {'; '.join(lost[:8])}")


if __name__ == "__main__":
    main()
