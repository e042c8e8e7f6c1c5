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
                 threshold: float = 27.0, expected_frames: int | None = None):
        self.path = Path(path)
        # With the frame count the header gives, frames the sampler will take if no further cut
        # comes are handed on as they stream by (``events``), so faces can be looked for while
        # the rest decodes; a cut that changes the plan costs only those frames' detection.
        self.expected_frames = expected_frames
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

    def _shots(self, run: list[_Stretch], end: int) -> list[ShotSpan]:
        start = run[0].start
        cuts = [st.start for st in run[1:]]
        strengths = [self._strength[c] for c in cuts]
        return [ShotSpan(sp.start_frame + start, sp.end_frame + start)
                for sp in merge_short([c - start for c in cuts], strengths, end - start, self.min_len)]

    def _plan(self, run: list[_Stretch], now: int, end: int | None) -> set[int]:
        """The frames from ``now`` on that the sampler takes if the video ends at ``end``
        with no further cut."""
        if not end or end <= now:
            return set()
        return {i for sp in self._shots(run, end) if sp.end_frame > now
                for i in sample_indices(sp, self.budget) if i >= now}

    def _settle(self, run: list[_Stretch], end: int) -> Iterator[tuple]:
        """Merge the run's stretches into shots (ending at ``end``) and yield their frames:
        ``("frame", shot, index, RGB)``, with RGB None for a frame already handed on early."""
        import cv2

        shots = self._shots(run, end)
        kept: dict[int, np.ndarray] = {}
        for st in run:
            kept.update(st.frames)
        for span in shots:
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
                sig = self._early.pop(idx, None)
                rgb = None if sig is not None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if sig is None:
                    sig = _signature(rgb)
                if last_sig is not None and float(np.abs(sig - last_sig).max()) <= DUPLICATE_MAX_DIFF:
                    continue
                last_sig = sig
                yield "frame", shot, idx, rgb
        self._early = {i: g for i, g in self._early.items() if i >= end}  # planned, not taken

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(shot, index, RGB)`` for every sampled frame, each once a shot settles."""
        for _, shot, idx, rgb in self.events(early=False):
            yield shot, idx, rgb

    def events(self, early: bool = True) -> Iterator[tuple]:
        """``("early", index, RGB)`` for a frame the sampler will take if no further cut
        comes, as it streams by, and ``("frame", shot, index, RGB or None)`` for every frame
        it does take, once its shot settles (None: the frame was handed on early)."""
        import cv2

        self._strength: dict[int, float] = {}
        self._early: dict[int, np.ndarray] = {}  # handed on early -> its signature
        cap = cv2.VideoCapture(str(self.path))
        run = [_Stretch(0)]
        planned_end = self.expected_frames if early else None
        plan = self._plan(run, 0, planned_end)
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
                        plan = self._plan(run, idx, planned_end)
                prev_hsv = hsv
                self._keep(run[-1], idx, bgr)
                if idx in plan:
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    self._early[idx] = _signature(rgb)
                    yield "early", idx, rgb
                idx += 1
        finally:
            cap.release()
        self.frames_decoded = idx
        if idx:
            run[-1].end = idx
            yield from self._settle(run, idx)
        else:  # nothing decodes: one empty shot, as the two-pass split gives (no face, no score)
            self.spans.append(ShotSpan(0, 1))

    def _maybe_settle(self, run: list[_Stretch]) -> Iterator[tuple]:
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


class Prefetch:
    """Iterate ``events`` produced by a thread of its own, at most ``depth`` ahead of the
    consumer (OpenCV decodes without the GIL, so decoding goes on while the caller looks
    for faces). ``backlog`` is how many are waiting. An exception in the producer is raised
    in the consumer; a consumer that stops early stops the producer."""

    def __init__(self, events: Iterator, depth: int = 8):
        import queue
        import threading

        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._events = events
        self._thread = threading.Thread(target=self._produce, name="video-scan", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for ev in self._events:
                if not self._put(("ev", ev)):
                    return
            self._put(("end", None))
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(("err", e))

    @property
    def backlog(self) -> int:
        return self._q.qsize()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __iter__(self) -> Iterator:
        try:
            while True:
                kind, item = self._q.get()
                if kind == "end":
                    return
                if kind == "err":
                    raise item
                yield item
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
