"""Calibrate the face-clustering threshold for dlib's 128-d embedder.

Impostor pairs: faces of different people (LFW, one image per person).
Genuine pairs: the same person in different frames of one shot (devset face clips,
one person each). Prints, per Euclidean distance threshold, the false-merge rate
(impostor pairs joined) and the same-person join rate.

    python bench/calibrate_clustering.py [--lfw N] [--clips N]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from detector.embed import FaceEmbedder
from detector.faces import FaceDetector
from detector.frames import read_frames

SHARED = Path(__file__).resolve().parents[2] / "shared"


def largest_face_embedding(det, emb, rgb):
    faces = det.detect([rgb])[0]
    if not faces:
        return None
    f = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    return emb.embed(rgb, [f.box])[0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lfw", type=int, default=500)
    p.add_argument("--clips", type=int, default=23)
    p.add_argument("--frames", type=int, default=8)
    args = p.parse_args()
    det, emb = FaceDetector("cpu", min_size=30).load(), FaceEmbedder().load()

    lfw = sorted((SHARED / "faces" / "lfw").glob("*.jpg"))[: args.lfw]
    impostor = [e for e in (largest_face_embedding(det, emb, np.asarray(Image.open(f).convert("RGB")))
                            for f in lfw) if e is not None]
    imp = np.stack(impostor)
    d_imp = np.array([np.linalg.norm(a - b) for a, b in itertools.combinations(imp, 2)])

    d_gen = []
    clips = sorted((SHARED / "media" / "devset" / "face_clips").glob("*.mp4"))[: args.clips]
    for c in clips:
        import cv2

        n = int(cv2.VideoCapture(str(c)).get(cv2.CAP_PROP_FRAME_COUNT))
        want = np.linspace(0, n - 1, args.frames).astype(int).tolist()
        es = [e for _, rgb in read_frames(c, want) if (e := largest_face_embedding(det, emb, rgb)) is not None]
        d_gen += [np.linalg.norm(a - b) for a, b in itertools.combinations(es, 2)]
    d_gen = np.array(d_gen)

    print(f"impostor pairs: {len(d_imp)} from {len(imp)} LFW faces; genuine pairs: {len(d_gen)} "
          f"from {len(clips)} one-person clips")
    print(f"impostor distance: min {d_imp.min():.3f}, 0.1% {np.quantile(d_imp, 0.001):.3f}, "
          f"1% {np.quantile(d_imp, 0.01):.3f}, median {np.median(d_imp):.3f}")
    print(f"genuine distance:  median {np.median(d_gen):.3f}, 99% {np.quantile(d_gen, 0.99):.3f}, "
          f"max {d_gen.max():.3f}")
    print(f"{'threshold':>9} {'false merge %':>14} {'same-person join %':>19}")
    for t in (0.40, 0.45, 0.50, 0.55, 0.60, 0.65):
        print(f"{t:>9.2f} {100 * (d_imp <= t).mean():>14.3f} {100 * (d_gen <= t).mean():>19.2f}")


if __name__ == "__main__":
    main()
