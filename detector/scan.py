"""One decode for shots and frames: cut scores on small frames as the video streams by,
the frames the sampler may want kept at full resolution, shots handed on as they settle.

Each decoded frame is shrunk to about 256 px wide, the width PySceneDetect's
ContentDetector scores at, and scored the same way: the mean absolute change of hue,
saturation and value from the previous frame; a score >= the threshold is a cut. Shots
shorter than the minimum are merged as :func:`detector.shots.merge_short` merges them
(the weaker of the two cuts of the shortest shot goes, repeatedly).

The sampler (:func:`detector.frames.sample_indices`) picks a shot's frames from a
power-of-two grid aligned to frame 0, so while a stretch between two cuts streams by,
only its grid frames need keeping: at most ``2 x budget + 1`` full frames, the grid
thinned by half each time it outgrows that. Merged stretches keep what their merged shot
needs (a coarser grid of the same alignment). A cut both of whose neighbouring stretches
already last the minimum is never merged away, so everything before it is final: its
shots are sampled and handed on, and their frames freed. Memory is two stretches' grid
frames, whatever the video's length (a cap applies to pathological runs of short cuts).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .frames import DUPLICATE_MAX_DIFF, _signature, grid_count, sample_indices
from .shots import ShotSpan, merge_short

SCORE_WIDTH = 256  # PySceneDetect's DEFAULT_MIN_WIDTH
# A run of short stretches holding more than this in full frames is settled at its last cut,
# merged or not (a strobe, or a slideshow of flashes: some 130 1080p frames; ordinary footage,
# whose cuts are mostly over the minimum apart, never gets here).
MAX_PENDING_BYTES = 768 * 1024 * 1024


def content_score(prev_hsv: np.ndarray, hsv: np.ndarray) -> float:
    """ContentDetector's default score: mean |change| of H, S and V, averaged."""
    import cv2

    return float(sum(cv2.mean(cv2.absdiff(prev_hsv, hsv))[:3]) / 3.0)


@dataclass
class _Stretch:
    start: int
    stride: int = 1
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # index -> BGR, on the grid
    end: int | None = None


class VideoScan:
    """Iterate to get ``(shot, frame index, RGB)`` for every sampled unique frame, shot by
    shot; ``spans``, ``cuts`` and ``frames_decoded`` are complete once it is exhausted."""

    def __init__(self, path: Path | str, fps: float, budget: int, min_shot_s: float = 1.5,
                 threshold: float = 27.0):
        self.path = Path(path)
        self.budget = budget
        self.min_len = max(1, math.ceil(min_shot_s * (fps or 1.0)))
        self.threshold = threshold
        self.spans: list[ShotSpan] = []
        self.cuts: list[int] = []
        self.strengths: list[float] = []
        self.frames_decoded = 0

    # -- keeping grid frames -----------------------------------------------------------------

    def _keep(self, st: _Stretch, idx: int, bgr: np.ndarray) -> None:
        if idx % st.stride == 0:
            st.frames[idx] = bgr
        limit = 2 * self.budget
        while grid_count(st.start, idx + 1, st.stride) > limit:
            st.stride *= 2
            st.frames = {i: f for i, f in st.frames.items() if i % st.stride == 0}

    # -- settling shots ------------------------------------------------------------------------

    def _settle(self, run: list[_Stretch], end: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Merge the run's stretches into shots (ending at ``end``) and yield their frames."""
        import cv2

        start = run[0].start
        cuts = [st.start for st in run[1:]]
        strengths = [self._strength[c] for c in cuts]
        shots = merge_short([c - start for c in cuts], strengths, end - start, self.min_len)
        kept: dict[int, np.ndarray] = {}
        for st in run:
            kept.update(st.frames)
        for span in shots:
            span = ShotSpan(span.start_frame + start, span.end_frame + start)
            shot = len(self.spans)
            self.spans.append(span)
            last_sig = None
            for idx in sample_indices(span, self.budget):
                bgr = kept.get(idx)
                if bgr is None:  # only after a capped run: the nearest kept frame of the shot
                    near = [i for i in kept if span.start_frame <= i < span.end_frame]
                    if not near:
                        continue
                    idx = min(near, key=lambda i: abs(i - idx))
                    bgr = kept[idx]
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                sig = _signature(rgb)
                if last_sig is not None and float(np.abs(sig - last_sig).max()) <= DUPLICATE_MAX_DIFF:
                    continue
                last_sig = sig
                yield shot, idx, rgb

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        import cv2

        self._strength: dict[int, float] = {}
        cap = cv2.VideoCapture(str(self.path))
        run = [_Stretch(0)]
        prev_hsv = None
        idx = 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                h, w = bgr.shape[:2]
                f = w / SCORE_WIDTH if w > SCORE_WIDTH else 1.0
                small = cv2.resize(bgr, (max(1, round(w / f)), max(1, round(h / f))),
                                   interpolation=cv2.INTER_LINEAR) if f > 1.0 else bgr
                hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
                if prev_hsv is not None:
                    score = content_score(prev_hsv, hsv)
                    if score >= self.threshold:
                        self.cuts.append(idx)
                        self.strengths.append(score)
                        self._strength[idx] = score
                        run[-1].end = idx
                        run.append(_Stretch(idx))
                        yield from self._maybe_settle(run)
                prev_hsv = hsv
                self._keep(run[-1], idx, bgr)
                idx += 1
        finally:
            cap.release()
        self.frames_decoded = idx
        if idx:
            run[-1].end = idx
            yield from self._settle(run, idx)
        else:  # nothing decodes: one empty shot, as the two-pass split gives (no face, no score)
            self.spans.append(ShotSpan(0, 1))

    def _maybe_settle(self, run: list[_Stretch]) -> Iterator[tuple[int, int, np.ndarray]]:
        """Called when a new stretch starts: settle up to a cut that can no longer move."""
        if len(run) < 3:
            return
        a, b = run[-3], run[-2]  # the cut at b.start is final if a and b both last the minimum
        if a.end - a.start >= self.min_len and b.end - b.start >= self.min_len:
            settled = run[:-2]
            del run[:-2]
            yield from self._settle(settled, b.start)
        elif sum(f.nbytes for st in run for f in st.frames.values()) > MAX_PENDING_BYTES:
            settled = run[:-1]
            del run[:-1]
            yield from self._settle(settled, run[0].start)
