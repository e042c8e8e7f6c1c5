"""Calibrate the threshold that links face clusters of different shots into one person.

A cluster's centroid is the mean of dlib descriptors of up to 3 of its faces
(detector.people). Two kinds of pairs:

- impostor: two different people. LFW faces, one image per person (a centroid of one
  face: the noisiest case, so the false-merge rate is, if anything, overstated);
- impostor, from video: two people on screen at the same time. In every devset and
  unlabeled video, faces are tracked over 24 sampled frames (IoU, detector.tracks); two
  tracks that share a frame are two people; a centroid of 3 faces of each. These are the
  hard cases LFW lacks: small, dark, blurred, turned faces (the crowd, the concert clip).
- genuine: one person at two moments. Each one-person devset face clip and devset video
  split into its first and last third, a centroid of 3 frames from each; and the three
  photos of one person in media/unlabeled (obama*.jpg, different days and cameras).

Both sets are split in two (LFW faces and clips alternately by file order; the video
impostor pairs by video, alternately): the threshold is chosen on the "fit" half (the
largest whose join rate is at most --max-false-merge for LFW pairs and for video pairs
alike) and its rates are reported on the "test" half, which did not choose it.

    python bench/calibrate_people.py [--lfw 2000] [--max-false-merge 0.001]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from calibrate_clustering import SHARED
from calibrate_clustering import largest_face_embedding as largest  # this script's folder is on sys.path
from PIL import Image

from detector.embed import FaceEmbedder
from detector.faces import FaceDetector
from detector.frames import read_frames
from detector.people import FACES_PER_CLUSTER, spread
from detector.tracks import link_tracks


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


def video_impostors(det, emb, path: Path, frames: int = 24) -> list[float]:
    """Centroid distances of face tracks that share a frame (two people at once)."""
    import cv2

    n = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    want = np.linspace(0, n - 1, min(frames, n)).astype(int).tolist()
    pos, boxes, embs = [], [], []
    for k, (_, rgb) in enumerate(read_frames(path, want)):
        found = [d for d in det.detect([rgb])[0] if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= 24]
        if found:
            for d, e in zip(found, emb.embed(rgb, [d.box for d in found])):
                pos.append(k)
                boxes.append(d.box)
                embs.append(e)
    if not pos:
        return []
    track = link_tracks(pos, boxes)
    members: dict[int, list[int]] = {}
    for i, t in enumerate(track):
        members.setdefault(t, []).append(i)
    tracks = {t: m for t, m in members.items() if len(m) >= 3}  # as a kept cluster would be
    cents = {t: np.mean([embs[i] for i in spread(m)], 0) for t, m in tracks.items()}
    frames_of = {t: {pos[i] for i in m} for t, m in tracks.items()}
    ids = sorted(tracks)
    return [float(np.linalg.norm(cents[a] - cents[b])) for j, a in enumerate(ids) for b in ids[j + 1:]
            if frames_of[a] & frames_of[b]]


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
    vids = sorted((dev / "videos").glob("*.mp4")) + sorted((SHARED / "media" / "unlabeled").glob("*.mp4"))
    vimp = {"fit": [], "test": []}
    for k, v in enumerate(vids):
        d = video_impostors(det, emb, v)
        vimp["fit" if k % 2 == 0 else "test"] += d
        print(f"{v.name}: {len(d)} co-occurring track pairs, closest {min(d):.3f}" if d else f"{v.name}: none")
    photos = [largest(det, emb, np.asarray(Image.open(f).convert("RGB")))
              for f in sorted((SHARED / "media" / "unlabeled").glob("obama*.jpg"))]
    photos = [e for e in photos if e is not None]
    photo_d = pair_distances(np.stack(photos)).tolist() if len(photos) > 1 else []
    gen["test"] += photo_d  # the only different-photo pairs: kept for the report, never for the choice

    d_imp = {h: pair_distances(np.stack(v).astype(np.float64)) for h, v in imp.items()}
    d_gen = {h: np.array(v) for h, v in gen.items()}
    d_vid = {h: np.array(v) for h, v in vimp.items()}
    for h in ("fit", "test"):
        print(f"{h}: {len(d_imp[h])} impostor pairs ({len(imp[h])} LFW faces), {len(d_vid[h])} video impostor "
              f"pairs, {len(d_gen[h])} genuine pairs")
    print(f"different photos of one person (obama*.jpg): {', '.join(f'{d:.3f}' for d in photo_d)}")
    grid = np.round(np.arange(0.30, 0.601, 0.025), 3)
    def rate(d, t):
        return 100 * (d <= t).mean() if len(d) else float("nan")

    print(f"{'threshold':>9} | fit: {'LFW false %':>11} {'video false %':>13} {'same join %':>11} | "
          f"test: {'LFW false %':>11} {'video false %':>13} {'same join %':>11}")
    for t in grid:
        print(f"{t:>9.3f} |      {rate(d_imp['fit'], t):>11.4f} {rate(d_vid['fit'], t):>13.1f} "
              f"{rate(d_gen['fit'], t):>11.1f} |       {rate(d_imp['test'], t):>11.4f} {rate(d_vid['test'], t):>13.1f} "
              f"{rate(d_gen['test'], t):>11.1f}")
    ok = [t for t in grid if (d_imp["fit"] <= t).mean() <= args.max_false_merge
          and (not len(d_vid["fit"]) or (d_vid["fit"] <= t).mean() <= args.max_false_merge)]
    if not ok:
        print("no threshold meets --max-false-merge on the fit half")
        return
    t = max(ok)
    print(f"chosen on fit (false merge <= {100 * args.max_false_merge:.2f}%): {t:.3f}; on test: LFW false merge "
          f"{rate(d_imp['test'], t):.4f}%, video false merge {rate(d_vid['test'], t):.1f}% "
          f"({int((d_vid['test'] <= t).sum())}/{len(d_vid['test'])}), same person joined "
          f"{rate(d_gen['test'], t):.1f}% ({int((d_gen['test'] <= t).sum())}/{len(d_gen['test'])})")


if __name__ == "__main__":
    main()
