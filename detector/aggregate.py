"""Stage 7, aggregation (MeVer): cluster = mean of its faces, shot = max of its
clusters, video = max of its shots. ``None`` (nothing to score) propagates; it is
never replaced by a neutral number.
"""

from __future__ import annotations

from collections.abc import Iterable


def cluster_score(face_scores: Iterable[float]) -> float:
    scores = list(face_scores)
    if not scores:
        raise ValueError("a cluster has at least one face")
    return sum(scores) / len(scores)


def max_or_none(scores: Iterable[float | None]) -> float | None:
    present = [s for s in scores if s is not None]
    return max(present) if present else None

