"""People across shots: each shot's face clusters linked into identities over the whole video.

A cluster is one person within one shot (:mod:`detector.cluster`, :mod:`detector.tracks`).
Across shots there is no box overlap to follow, only appearance: each cluster's centroid
(the mean of dlib descriptors of a few of its faces, spread over the shot) is compared with
the other shots' centroids, and the closest pairs within ``max_distance`` are joined first
(single linkage), never joining two clusters of the same shot: those are two people who
were on screen at the same time. The threshold is measured by ``bench/calibrate_people.py``.

A person's score is the max over their clusters (each a cluster mean, as MeVer aggregates),
so a video's score is also the max over its people.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

FACES_PER_CLUSTER = 3  # descriptors averaged into a cluster's centroid: first, middle, last face


def spread(members: Sequence[int], n: int = FACES_PER_CLUSTER) -> list[int]:
    """At most ``n`` of ``members``, evenly spaced, the first and last included."""
    members = list(members)
    if len(members) <= n:
        return members
    return [members[round(j * (len(members) - 1) / (n - 1))] for j in range(n)]


def link_people(shots: Sequence[int], centroids: np.ndarray, max_distance: float) -> list[list[int]]:
    """Clusters (one per row: its shot and its centroid) grouped into people: lists of cluster
    indices, each in the clusters' order, ordered by each person's first cluster."""
    n = len(shots)
    if n == 0:
        return []
    c = np.asarray(centroids, dtype=np.float64).reshape(n, -1)
    d = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    pairs = sorted((d[i, j], i, j) for i in range(n) for j in range(i + 1, n)
                   if shots[i] != shots[j] and d[i, j] <= max_distance)
    group = list(range(n))  # cluster -> its person's id (the smallest cluster index in it)
    seen = {i: {shots[i]} for i in range(n)}  # person id -> the shots they are in
    for _, i, j in pairs:
        a, b = group[i], group[j]
        if a == b or seen[a] & seen[b]:  # already one person, or both on screen in one shot
            continue
        keep, gone = min(a, b), max(a, b)
        seen[keep] |= seen.pop(gone)
        group = [keep if g == gone else g for g in group]
    people: dict[int, list[int]] = {}  # by person id, i.e. in order of each person's first cluster
    for i, g in enumerate(group):
        people.setdefault(g, []).append(i)
    return list(people.values())


def person_label(k: int) -> str:
    """A, B, ..., Z, then P27, P28, ... (a letter each while there are letters)."""
    return string.ascii_uppercase[k] if k < 26 else f"P{k + 1}"
