"""Which crop convention do the DFDC face crops in ../shared/faces/dfdc follow?

  python bench/crop_convention.py [--shared ../shared] [--n 120]

The crops are said to be "tight around the detected face box". This checks it against
the pipeline's own MTCNN: it re-detects the face inside each DFDC crop (padded with
black, so a box may reach past the crop's edge) and prints where the box lies, as
fractions of the crop (x1, y1, x2, y2) and its width/height. Then it cuts crops of the
devset's full-frame videos from the pipeline's own detections by several candidate
specs, re-detects them the same way, and prints the same numbers and their distance to
the DFDC ones. The closest spec is the crop members trained on these faces should be
served with (their training configs' ``crop``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from detector.faces import CropSpec, FaceDetector

SIDE = 224
CANDIDATES = [CropSpec(margin=1.3), CropSpec(margin=1.0), CropSpec(margin=0.9), CropSpec(margin=0.85),
              CropSpec(margin=0.8), CropSpec(margin=1.0, shape="stretch")]


def redetect(det: FaceDetector, crop: np.ndarray) -> tuple[float, ...] | None:
    """The most confident face box in ``crop`` (pasted on black, twice its size), as crop fractions."""
    crop = cv2.resize(crop, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    pad = np.zeros((2 * SIDE, 2 * SIDE, 3), np.uint8)
    o = SIDE // 2
    pad[o:o + SIDE, o:o + SIDE] = crop
    found = det.detect([pad])[0]
    if not found:
        return None
    x1, y1, x2, y2 = (v - o for v in max(found, key=lambda d: d.prob).box)
    return (x1 / SIDE, y1 / SIDE, x2 / SIDE, y2 / SIDE, (x2 - x1) / (y2 - y1))


def summary(boxes: list) -> np.ndarray:
    return np.median(np.asarray(boxes), 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    p.add_argument("--n", type=int, default=120, help="DFDC crops to re-detect")
    a = p.parse_args()
    det = FaceDetector("cpu", 0.9, 20, 4000).load()
    dfdc = a.shared / "faces/dfdc"
    with open(dfdc / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pick = np.random.default_rng(0).choice(len(rows), min(a.n, len(rows)), replace=False)
    ref = [b for i in pick if (b := redetect(det, np.asarray(Image.open(dfdc / rows[i]["path"]).convert("RGB"))))]
    ref_m = summary(ref)
    fmt = lambda m: " ".join(f"{v:6.3f}" for v in m)  # noqa: E731
    print(f"{'crop':<16} {'n':>4}   x1     y1     x2     y2    w/h   distance")
    print(f"{'DFDC crops':<16} {len(ref):>4} {fmt(ref_m)}")
    dev = a.shared / "media/devset"
    with open(dev / "labels.csv", newline="") as f:
        videos = [r["path"] for r in csv.DictReader(f) if r["path"].startswith("videos/")]
    frames = []
    for v in videos:
        cap = cv2.VideoCapture(str(dev / v))
        for k in range(6):
            cap.set(cv2.CAP_PROP_POS_FRAMES, k * 30)
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frames += [(rgb, d.box) for d in det.detect([rgb])[0]]
        cap.release()
    results = []
    for spec in CANDIDATES:
        got = [b for rgb, box in frames if (b := redetect(det, spec.cut(rgb, box)))]
        m = summary(got)
        dist = float(np.abs(m - ref_m).sum())
        results.append((dist, spec))
        print(f"{spec.label():<16} {len(got):>4} {fmt(m)}  {dist:.3f}")
    print(f"closest to the DFDC crops: {min(results, key=lambda r: r[0])[1].label()}")


if __name__ == "__main__":
    main()
