"""Calibrate the threshold that links face clusters of different shots into one person.

A cluster's centroid is the mean of dlib descriptors of up to 3 of its faces
(detector.people). Two kinds of pairs:

- impostor: two different people. LFW faces, one image per person (a centroid of one
  face: the noisiest case, so the false-merge rate is, if anything, overstated);
- genuine: one person at two moments. Each one-person devset face clip and devset video
  split into its first and last third, a centroid of 3 frames from each; and the three
  photos of one person in media/unlabeled (obama*.jpg, different days and cameras).

Both sets are split in two (by file order, alternately): the threshold is chosen on the
"fit" half (the largest whose impostor join rate is at most --max-false-merge) and its
rates are reported on the "test" half, which did not choose it.

    python bench/calibrate_people.py [--lfw 2000] [--max-false-merge 0.001]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from detector.embed import FaceEmbedder
from detector.faces import FaceDetector
from detector.frames import read_frames
from detector.people import FACES_PER_CLUSTER

SHARED = Path(__file__).resolve().parents[2] / "shared"


def largest(det, emb, rgb):
    faces = det.detect([rgb])[0]
    if not faces:
        return None
    f = max(faces, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    return emb.embed(rgb, [f.box])[0]


def clip_halves(det, emb, path: Path):
    """Centroids of the first and the last third of a one-person clip (3 frames each)."""
    import cv2

    n = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    if n < 6:
        return None
    first = np.linspace(0, n / 3, FACES_PER_CLUSTER).astype(int).tolist()
    last = np.linspace(2 * n / 3, n - 1, FACES_PER_CLUSTER).astype(int).tolist()
    es = {i: e for i, rgb in read_frames(path, first + last) if (e := largest(det, emb, rgb)) is not None}
    a = [es[i] for i in first if i in es]
    b = [es[i] for i in last if i in es]
    return (np.mean(a, 0), np.mean(b, 0)) if a and b else None


def pair_distances(x: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
    iu = np.triu_indices(len(x), k=1)
    return np.sqrt(np.clip(d2[iu], 0, None))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lfw", type=int, default=2000)
    p.add_argument("--max-false-merge", type=float, default=0.001)
    args = p.parse_args()
    det, emb = FaceDetector("cpu", min_size=30).load(), FaceEmbedder().load()

    lfw = sorted((SHARED / "faces" / "lfw").glob("*.jpg"))[: args.lfw]
    imp = {"fit": [], "test": []}
    for k, f in enumerate(lfw):
        e = largest(det, emb, np.asarray(Image.open(f).convert("RGB")))
        if e is not None:
            imp["fit" if k % 2 == 0 else "test"].append(e)
    gen = {"fit": [], "test": []}
    dev = SHARED / "media" / "devset"
    clips = sorted((dev / "face_clips").glob("*.mp4")) + sorted((dev / "videos").glob("*.mp4"))
    for k, c in enumerate(clips):
        if (h := clip_halves(det, emb, c)) is not None:
            gen["fit" if k % 2 == 0 else "test"].append(float(np.linalg.norm(h[0] - h[1])))
    photos = [largest(det, emb, np.asarray(Image.open(f).convert("RGB")))
              for f in sorted((SHARED / "media" / "unlabeled").glob("obama*.jpg"))]
    photos = [e for e in photos if e is not None]
    photo_d = pair_distances(np.stack(photos)).tolist() if len(photos) > 1 else []
    gen["test"] += photo_d  # the only different-photo pairs: kept for the report, never for the choice

    d_imp = {h: pair_distances(np.stack(v).astype(np.float64)) for h, v in imp.items()}
    d_gen = {h: np.array(v) for h, v in gen.items()}
    for h in ("fit", "test"):
        print(f"{h}: {len(d_imp[h])} impostor pairs ({len(imp[h])} LFW faces), {len(d_gen[h])} genuine pairs")
    print(f"different photos of one person (obama*.jpg): {', '.join(f'{d:.3f}' for d in photo_d)}")
    grid = np.round(np.arange(0.40, 0.701, 0.025), 3)
    print(f"{'threshold':>9} {'fit false merge %':>18} {'fit same join %':>16} "
          f"{'test false merge %':>19} {'test same join %':>17}")
    for t in grid:
        print(f"{t:>9.3f} {100 * (d_imp['fit'] <= t).mean():>18.4f} {100 * (d_gen['fit'] <= t).mean():>16.1f} "
              f"{100 * (d_imp['test'] <= t).mean():>19.4f} {100 * (d_gen['test'] <= t).mean():>17.1f}")
    ok = [t for t in grid if (d_imp["fit"] <= t).mean() <= args.max_false_merge]
    if not ok:
        print("no threshold meets --max-false-merge on the fit half")
        return
    t = max(ok)
    print(f"chosen on fit (false merge <= {100 * args.max_false_merge:.2f}%): {t:.3f}; on test: false merge "
          f"{100 * (d_imp['test'] <= t).mean():.4f}%, same person joined {100 * (d_gen['test'] <= t).mean():.1f}% "
          f"({int((d_gen['test'] <= t).sum())}/{len(d_gen['test'])})")


if __name__ == "__main__":
    main()
