"""Stage 3, shots: split a video into shots of at least ``min_shot_s`` seconds.

Cut candidates come from PySceneDetect's ContentDetector (HSV content distance
between consecutive frames, with its flash filter). The MeVer paper used ResNet50
R-MAC features at 1 fps and peaks of their distance; no ImageNet ResNet50 weights are
obtainable offline here, and the content distance finds the hard cuts of news and
social clips at full frame resolution in time (a 1 fps sampler can only place a cut
within a second). Shots shorter than the minimum are merged by removing the weaker of
their two cuts, repeatedly, shortest shot first.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ShotSpan:
    start_frame: int
    end_frame: int  # exclusive


@dataclass(frozen=True)
class ShotSplit:
    cuts: list[int]  # every cut the detector found (first frame of a new shot)
    strengths: list[float]
    shots: list[ShotSpan]  # after merging shots shorter than the minimum


def detect_cuts(path: Path | str, threshold: float = 27.0) -> tuple[list[int], list[float]]:
    from scenedetect import ContentDetector, SceneManager, StatsManager, open_video

    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)  # it logs each run at INFO

    video = open_video(str(path), backend="opencv")
    manager = SceneManager(stats_manager=StatsManager())
    manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=1))
    manager.detect_scenes(video)
    cuts = [s[0].frame_num for s in manager.get_scene_list()][1:]
    strengths = []
    for c in cuts:
        (val,) = manager.stats_manager.get_metrics(c, ["content_val"])
        strengths.append(float(val or 0.0))
    return cuts, strengths


def merge_short(cuts: list[int], strengths: list[float], frame_count: int, min_len: int) -> list[ShotSpan]:
    """Remove cuts until every shot lasts at least ``min_len`` frames (or one shot remains)."""
    cuts, strengths = list(cuts), list(strengths)
    while cuts:
        bounds = [0, *cuts, frame_count]
        lengths = [b - a for a, b in zip(bounds, bounds[1:])]
        shortest = min(range(len(lengths)), key=lengths.__getitem__)
        if lengths[shortest] >= min_len:
            break
        # shot i lies between cut i-1 (its start) and cut i (its end)
        candidates = [j for j in (shortest - 1, shortest) if 0 <= j < len(cuts)]
        weakest = min(candidates, key=strengths.__getitem__)
        del cuts[weakest], strengths[weakest]
    bounds = [0, *cuts, frame_count]
    return [ShotSpan(a, b) for a, b in zip(bounds, bounds[1:])]


def split_shots(path: Path | str, fps: float, frame_count: int, min_shot_s: float = 1.5,
                threshold: float = 27.0) -> ShotSplit:
    cuts, strengths = detect_cuts(path, threshold)
    cuts_in = [(c, s) for c, s in zip(cuts, strengths) if 0 < c < frame_count]
    min_len = max(1, math.ceil(min_shot_s * fps))
    shots = merge_short([c for c, _ in cuts_in], [s for _, s in cuts_in], frame_count, min_len)
    return ShotSplit([c for c, _ in cuts_in], [s for _, s in cuts_in], shots)
