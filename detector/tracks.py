"""Who is who in a shot without an embedding for every face: IoU tracks, then embeddings
only where two tracks could be one person.

Within a shot, a face whose box overlaps a face of the previous sampled frame (IoU >=
``MIN_IOU``, one to one, best overlap first; a track may skip one frame where the detector
missed) is the same person: a track. Two tracks that share a frame are two people. Only
tracks that could still be one person (never in the same frame) need their faces compared:
a few faces of each are embedded (:mod:`detector.embed`), and tracks are joined when two
of their faces lie within the calibrated distance, as the 1.x pipeline joined faces
(:func:`detector.cluster.connected_components`). A shot whose faces form one track, or
whose tracks all meet in some frame, runs no embedder at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .cluster import components
from .people import spread

MIN_IOU = 0.3
MAX_GAP = 1  # sampled frames a track may miss and still continue
FACES_EMBEDDED_PER_TRACK = 3  # first, middle and last
CONFIRM_MIN_IOU = 0.5  # a less sure face confirmed by a sure one of a neighbouring frame


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link_tracks(frames: Sequence[int], boxes: Sequence[tuple[float, float, float, float]],
                min_iou: float = MIN_IOU, max_gap: int = MAX_GAP) -> list[int]:
    """A track id per face; ``frames[i]`` is face i's position among the shot's sampled frames."""
    order = sorted(range(len(boxes)), key=lambda i: frames[i])
    track = [-1] * len(boxes)
    last: list[tuple[int, int]] = []  # per track: (frame position, face index) of its last face
    k = 0
    while k < len(order):
        pos = frames[order[k]]
        here = []
        while k < len(order) and frames[order[k]] == pos:
            here.append(order[k])
            k += 1
        pairs = sorted(((iou(boxes[i], boxes[last[t][1]]), i, t) for i in here for t in range(len(last))
                        if 0 < pos - last[t][0] <= max_gap + 1), reverse=True)
        taken_faces, taken_tracks = set(), set()
        for overlap, i, t in pairs:
            if overlap < min_iou:
                break
            if i in taken_faces or t in taken_tracks:
                continue
            track[i] = t
            taken_faces.add(i)
            taken_tracks.add(t)
        for i in here:
            if track[i] < 0:
                track[i] = len(last)
                last.append((pos, i))
            else:
                last[track[i]] = (pos, i)
    return track


def confirmed(frames: Sequence[int], boxes: Sequence[tuple[float, float, float, float]], probs: Sequence[float],
              min_prob: float, min_iou: float = CONFIRM_MIN_IOU) -> list[bool]:
    """Which faces to keep: every face MTCNN is sure of (``prob >= min_prob``), and a less
    sure one where a sure face of the previous or next sampled frame lies in the same place
    (IoU >= ``min_iou``): the same face, in a frame where the detector wavered. ``frames[i]``
    is face i's position among its shot's sampled frames."""
    sure = [i for i, p in enumerate(probs) if p >= min_prob]
    return [p >= min_prob or any(abs(frames[j] - frames[i]) == 1 and iou(boxes[j], boxes[i]) >= min_iou
                                 for j in sure) for i, p in enumerate(probs)]


def group_tracks(frames: Sequence[int], track: Sequence[int],
                 embed: Callable[[list[int]], np.ndarray], max_distance: float) -> tuple[list[int], int]:
    """A person label per face, and how many faces were embedded.

    ``embed(faces)`` returns one descriptor per face index; it is called once, with every
    face that decides something, or not at all."""
    n_tracks = max(track, default=-1) + 1
    members: list[list[int]] = [[] for _ in range(n_tracks)]
    for i in sorted(range(len(track)), key=lambda i: frames[i]):
        members[track[i]].append(i)
    seen = [{frames[i] for i in m} for m in members]
    open_pairs = [(a, b) for a in range(n_tracks) for b in range(a + 1, n_tracks) if not seen[a] & seen[b]]
    joined = []
    embedded = 0
    if open_pairs:
        need = sorted({t for pair in open_pairs for t in pair})
        picked = {t: spread(members[t], FACES_EMBEDDED_PER_TRACK) for t in need}
        faces = [i for t in need for i in picked[t]]
        emb = dict(zip(faces, embed(faces).astype(np.float64)))
        embedded = len(faces)
        for a, b in open_pairs:
            ea = np.stack([emb[i] for i in picked[a]])
            eb = np.stack([emb[i] for i in picked[b]])
            if ((ea[:, None, :] - eb[None, :, :]) ** 2).sum(-1).min() <= max_distance ** 2:
                joined.append((a, b))
    person = components(n_tracks, joined)
    return [int(person[t]) for t in track], embedded
