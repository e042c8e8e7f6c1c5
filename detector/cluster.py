"""Stage 5, clusters: a graph joining faces closer than a threshold, its connected
components, and the removal of clusters smaller than a fraction of the sampled frames.
"""

from __future__ import annotations

import math

import numpy as np


def components(n: int, pairs) -> np.ndarray:
    """A component label per node 0..n-1 of the graph with edges ``pairs`` (union-find),
    numbered in order of each component's first node."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = [find(i) for i in range(n)]
    relabel = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([relabel[r] for r in roots], dtype=np.int64)


def connected_components(embeddings: np.ndarray, max_distance: float) -> np.ndarray:
    """A component label per row: faces are joined when their distance <= max_distance."""
    n = len(embeddings)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    e = embeddings.astype(np.float64)
    sq = (e * e).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * e @ e.T
    return components(n, zip(*np.nonzero(np.triu(d2 <= max_distance ** 2, k=1))))


def min_cluster_size(sampled_frames: int, fraction: float) -> int:
    return max(1, math.ceil(fraction * sampled_frames))


def cluster_faces(embeddings: np.ndarray, max_distance: float, sampled_frames: int,
                  fraction: float = 0.2) -> tuple[list[list[int]], int]:
    """Kept clusters (lists of face indices, largest first) and how many were dropped."""
    return clusters_from_labels(connected_components(embeddings, max_distance), sampled_frames, fraction)


def clusters_from_labels(labels, sampled_frames: int, fraction: float = 0.2) -> tuple[list[list[int]], int]:
    """Kept clusters (face indices, largest first) and how many were dropped."""
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(i)
    need = min_cluster_size(sampled_frames, fraction)
    kept = [g for g in groups.values() if len(g) >= need]
    kept.sort(key=len, reverse=True)
    return kept, len(groups) - len(kept)
