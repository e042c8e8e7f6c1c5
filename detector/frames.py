"""Frame sampling: at most N unique frames per shot, decoded in one sequential pass.

Frames are read with ``grab()`` (demux + decode, no colour conversion) and only the
sampled ones ``retrieve()``d; the decoder never seeks, which is both faster and exact
for long-GOP codecs. A sampled frame identical to the previous kept frame of its shot
(a frozen or duplicated frame, up to encoder noise) is skipped, so the budget goes to unique frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .shots import ShotSpan


def grid_count(start: int, end: int, stride: int) -> int:
    """How many multiples of ``stride`` lie in [start, end)."""
    return max(0, (end - 1) // stride - (start - 1) // stride) if end > start else 0


def grid_stride(start: int, end: int, budget: int) -> int:
    """The finest power-of-two grid (aligned to frame 0) with at most 2 x budget frames in the shot."""
    stride = 1
    while grid_count(start, end, stride) > 2 * budget:
        stride *= 2
    return stride


def sample_indices(shot: ShotSpan, budget: int) -> list[int]:
    """``budget`` frames spread evenly over the shot (all of them if it is shorter).

    They are taken from a power-of-two grid of frames aligned to frame 0 (between budget
    and 2 x budget of its frames fall in the shot), so a single decoding pass can keep
    just the grid's frames while the shot's end is still unknown (:mod:`detector.scan`)."""
    n = shot.end_frame - shot.start_frame
    if n <= budget:
        return list(range(shot.start_frame, shot.end_frame))
    stride = grid_stride(shot.start_frame, shot.end_frame, budget)
    grid = list(range(-(-shot.start_frame // stride) * stride, shot.end_frame, stride))
    step = len(grid) / budget
    return [grid[int(step * (i + 0.5))] for i in range(budget)]


# Two frames are the same when no pixel of their 32x32 grey thumbnails differs by more
# than this. Measured: a frozen frame re-encoded differs by <= 2 grey levels; a static
# but live dark scene (DFDC) by 5-25 somewhere, so a mean-difference rule would drop it.
DUPLICATE_MAX_DIFF = 3.0


def _signature(rgb: np.ndarray) -> np.ndarray:
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def read_frames(path: Path | str, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, RGB frame) for the wanted indices, decoding sequentially."""
    import cv2

    wanted_set = set(wanted)
    last = max(wanted_set) if wanted_set else -1
    cap = cv2.VideoCapture(str(path))
    try:
        idx = 0
        while idx <= last and cap.grab():
            if idx in wanted_set:
                ok, bgr = cap.retrieve()
                if ok and bgr is not None:
                    yield idx, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            idx += 1
    finally:
        cap.release()


def iter_unique(path: Path | str, shots: list[ShotSpan], budget: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (shot index, frame index, RGB) for up to ``budget`` unique frames per shot."""
    owner = {}
    for s, shot in enumerate(shots):
        for i in sample_indices(shot, budget):
            owner[i] = s
    last_sig: dict[int, np.ndarray] = {}
    for idx, rgb in read_frames(path, sorted(owner)):
        s = owner[idx]
        sig = _signature(rgb)
        if s in last_sig and float(np.abs(sig - last_sig[s]).max()) <= DUPLICATE_MAX_DIFF:
            continue
        last_sig[s] = sig
        yield s, idx, rgb
