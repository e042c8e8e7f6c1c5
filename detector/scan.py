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

Frames that will be neither kept nor looked at need no pixels beyond their cut score,
and most of them are B-frames nothing is predicted from: those are not decoded at all
(:mod:`detector.decode`; 119-130 of the 300 frames of the DFDC clips). The scan then scores
the change across the gap they leave; where it is large enough that a cut could lie
inside, or where a cut since made one of them a kept frame, the gap is decoded after all
(from the packets already read), so the cuts and the frames kept are those a decode of
every frame gives.
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
# A gap of left-out frames is decoded after all when the change across it is at least this
# share of the cut threshold. Measured (every frame decoded): across each cut of the 4-shot
# clip and of an H.264 test clip, the change over 2 or 3 frames is 0.99-1.0 times the cut's
# own; inside the shots of the devset videos and the crowd clip, at most 12.5 over 2 frames.
GAP_FILL_FRACTION = 0.5
# Leaving frames out stops for the rest of the video once filling gaps has decoded more frames
# again than this share of the frames left out: a fill decodes the reference frames since the
# last keyframe, each dearer than a B-frame left out, so past that it no longer pays.
FILL_ALLOWANCE = 0.5


def _small_hsv(frame) -> np.ndarray:
    """The frame at PySceneDetect's scoring width, in HSV. 4:2:0 video (nearly all of it):
    each of its Y, U, V planes shrunk bilinearly, then converted, a tenth of the cost of
    converting the full frame first as PySceneDetect does; on the devset's 1080p clips the
    scores differ from its by at most 0.3 (of a 27 threshold), at the 4-shot clip's cuts by
    at most 4.3 (of 56), and the cuts are the same (tests/test_fast_path.py). Other formats:
    PySceneDetect's way (the frame as OpenCV's reader gives it, bit for bit, then shrunk)."""
    import cv2

    w, h = frame.width, frame.height
    f = w / SCORE_WIDTH if w > SCORE_WIDTH else 1.0
    sw, sh = max(1, round(w / f)), max(1, round(h / f))
    if frame.format.name == "yuv420p" and w >= 2 and h >= 2:
        sw, sh = sw + (sw & 1), sh + (sh & 1)  # I420 wants even sides
        planes = []
        for plane, pw, ph, ow, oh in zip(frame.planes, (w, (w + 1) // 2, (w + 1) // 2),
                                         (h, (h + 1) // 2, (h + 1) // 2), (sw, sw // 2, sw // 2), (sh, sh // 2, sh // 2)):
            full = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:ph, :pw]
            planes.append(cv2.resize(full, (ow, oh), interpolation=cv2.INTER_LINEAR).ravel())
        i420 = np.concatenate(planes).reshape(sh * 3 // 2, sw)
        return cv2.cvtColor(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420), cv2.COLOR_BGR2HSV)
    bgr = frame.to_ndarray(format="bgr24")
    small = cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_LINEAR) if f > 1.0 else bgr
    return cv2.cvtColor(small, cv2.COLOR_BGR2HSV)


def _rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _nbytes(frame) -> int:
    return sum(p.buffer_size for p in frame.planes)


def content_score(prev_hsv: np.ndarray, hsv: np.ndarray) -> float:
    """ContentDetector's default score: mean |change| of H, S and V, averaged."""
    import cv2

    return float(sum(cv2.mean(cv2.absdiff(prev_hsv, hsv))[:3]) / 3.0)


@dataclass
class _Stretch:
    start: int
    stride: int = 1
    frames: dict = field(default_factory=dict)  # index -> decoded frame (av.VideoFrame), on the grid
    end: int | None = None


class VideoScan:
    """Iterate to get ``(shot, frame index, RGB)`` for every sampled unique frame, shot by
    shot; ``spans``, ``cuts`` and ``frames_decoded`` are complete once it is exhausted."""

    def __init__(self, path: Path | str, fps: float, budget: int, min_shot_s: float = 1.5,
                 threshold: float = 27.0, expected_frames: int | None = None, leave_out: bool = True):
        self.path = Path(path)
        # Non-reference frames that will not be kept are not decoded (detector.decode); a gap
        # they leave where a cut may lie is decoded after all. False: every frame decoded.
        self.leave_out = leave_out
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
        # Frames the pass decoded, left out, and decoded again to fill a gap.
        self.frames_decoded = self.frames_left_out = self.frames_redecoded = 0

    # -- keeping grid frames -----------------------------------------------------------------

    def _keep(self, st: _Stretch, idx: int, frame) -> None:
        if idx % st.stride == 0:
            st.frames[idx] = frame
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

        shots = self._shots(run, end)
        kept: dict = {}
        for st in run:
            kept.update(st.frames)
        for span in shots:
            shot = len(self.spans)
            self.spans.append(span)
            last_sig = None
            for idx in sample_indices(span, self.budget):
                frame = kept.get(idx)
                if frame is None:  # only after a capped run: the nearest kept frame of the shot
                    near = [i for i in kept if span.start_frame <= i < span.end_frame]
                    if not near:
                        continue
                    idx = min(near, key=lambda i: abs(i - idx))
                    frame = kept[idx]
                sig = self._early.pop(idx, None)
                rgb = None if sig is not None else _rgb(frame)
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
        from .decode import VideoDecoder

        self._strength: dict[int, float] = {}
        self._early: dict[int, np.ndarray] = {}  # handed on early -> its signature
        self._run = [_Stretch(0)]
        self._planned_end = self.expected_frames if early else None
        self._planned = self._plan(self._run, 0, self._planned_end)
        self._prev: tuple[int, np.ndarray] | None = None  # the last frame scored: index, small HSV
        dec = VideoDecoder(self.path, wanted=self._wanted if self.leave_out else None)
        for idx, frame in dec:
            hsv = _small_hsv(frame)
            if self._prev is not None and idx > self._prev[0] + 1 and self._gap_matters(idx, hsv):
                filled = dec.fill(self._prev[0] + 1, idx - 1)
                for j in sorted(filled):
                    yield from self._step(j, filled[j], _small_hsv(filled[j]))
                if dec.redecoded > FILL_ALLOWANCE * dec.left_out:
                    dec.stop_skipping()  # fills cost more than leaving frames out saves
            yield from self._step(idx, frame, hsv)
        self.frames_decoded, self.frames_left_out, self.frames_redecoded = dec.decoded, dec.left_out, dec.redecoded
        n = self._prev[0] + 1 if self._prev else 0
        if n:
            self._run[-1].end = n
            yield from self._settle(self._run, n)
        else:  # nothing decodes: one empty shot, as the two-pass split gives (no face, no score)
            self.spans.append(ShotSpan(0, 1))

    def _wanted(self, idx: int) -> bool:
        """Asked as a frame's packet goes to the decoder (a few frames ahead of the scan): will
        the frame be kept? On the current stretch's grid, or planned to be handed on early."""
        return idx % self._run[-1].stride == 0 or idx in self._planned

    def _gap_matters(self, idx: int, hsv: np.ndarray) -> bool:
        """Frames between the last scored one and ``idx`` were left out: fetch them if a cut
        could lie among them (the change across the gap is large) or if one of them is kept
        after all (a cut since its packet was sent restarted the grid)."""
        a = self._prev[0]
        if content_score(self._prev[1], hsv) >= GAP_FILL_FRACTION * self.threshold:
            return True
        return any(self._wanted(j) for j in range(a + 1, idx))

    def _step(self, idx: int, frame, hsv: np.ndarray) -> Iterator[tuple]:
        """One decoded frame: a cut before it?, kept on the grid, handed on early if planned."""
        run = self._run
        if self._prev is not None and self._prev[0] == idx - 1:  # over a gap left unfilled: no cut
            score = content_score(self._prev[1], hsv)
            if score >= self.threshold:
                self.cuts.append(idx)
                self.strengths.append(score)
                self._strength[idx] = score
                run[-1].end = idx
                run.append(_Stretch(idx))
                yield from self._maybe_settle(run)
                self._planned = self._plan(run, idx, self._planned_end)
        self._prev = (idx, hsv)
        self._keep(run[-1], idx, frame)
        if idx in self._planned:
            rgb = _rgb(frame)
            self._early[idx] = _signature(rgb)
            yield "early", idx, rgb

    def _maybe_settle(self, run: list[_Stretch]) -> Iterator[tuple]:
        """Called when a new stretch starts: settle up to a cut that can no longer move."""
        if len(run) < 3:
            return
        a, b = run[-3], run[-2]  # the cut at b.start is final if a and b both last the minimum
        if a.end - a.start >= self.min_len and b.end - b.start >= self.min_len:
            settled = run[:-2]
            del run[:-2]
            yield from self._settle(settled, b.start)
        elif sum(_nbytes(f) for st in run for f in st.frames.values()) > MAX_PENDING_BYTES:
            settled = run[:-1]
            del run[:-1]
            yield from self._settle(settled, run[0].start)


class Prefetch:
    """Iterate ``events`` produced by a thread of its own, at most ``depth`` ahead of the
    consumer (FFmpeg decodes without the GIL, so decoding goes on while the caller looks
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
