"""Decoding a video once, in display order, without decoding what nobody looks at.

Most H.264/HEVC video has B-frames that no other frame is predicted from ("non-reference"
frames: 148 of the 300 frames of a DFDC clip). FFmpeg can leave such a frame out
(``skip_frame``), and the decoder reads that setting anew for every packet, so the caller
decides frame by frame, before the packet is sent, whether it wants the frame's pixels
(:class:`VideoDecoder`'s ``wanted``). Reference frames are always decoded, so every frame
that is decoded is bit for bit what a full decode gives.

Each packet's display index (the frame number a sequential decode, e.g. OpenCV's, gives
it) is its rank among the packets' timestamps: packets are read a little ahead (decoding
order differs from display order by at most a few frames) and ranked through a heap, so
it holds whatever the frame rate does.

A frame left out can be asked for later (:meth:`VideoDecoder.fill`): a second decoder
goes through the packets kept since the last keyframe before it, decoding the reference
frames and the wanted ones (the video is not read or seeked again). The scan asks for
this where a cut may lie in a gap, or where a cut changed its mind about which frames it
keeps (:mod:`detector.scan`).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Packets read ahead of the one being sent, to know its display index. H.264 reorders by
# at most 16 frames (its DPB); encoders use 2-4.
LOOKAHEAD = 32
# Codecs whose decoders honour skip_frame=NONREF per packet (FFmpeg's h264 and hevc), in
# containers that store each frame's display time (AVI stores decoding order only; raw
# streams no time at all): elsewhere every frame is decoded and numbered by count.
SKIPPING_CODECS = frozenset({"h264", "hevc"})
TIMED_CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm", "mpegts"})
# Packets kept for fill(), at most (a longer GOP turns leaving frames out off: a fill
# would have to decode too much, and memory is bounded).
MAX_KEPT_BYTES = 96 * 1024 * 1024


def decode_threads() -> int:
    """FFmpeg's frame threads: two per usable core (at most 16, FFmpeg's own cap). Measured on
    the 2-core machine, the reference frames of the 1080p DFDC clips (median of 6): 0.43 /
    0.48 s with 4 threads, 0.45 / 0.49 s with 2, 0.52 / 0.57 s with FFmpeg's choice (3: one
    of them always waits for a core)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(16, 2 * cores)


class VideoDecoder:
    """``(index, av.VideoFrame)`` for the frames of the first video stream, in display order.

    ``wanted(index)``: whether the frame will be looked at; asked as its packet is sent. A
    non-reference frame it answers False for is not decoded (it is missing from the
    iteration), where the codec allows it; ``wanted=None`` decodes every frame (index =
    count, as OpenCV numbers frames). Counts: ``decoded`` (frames the pass decoded),
    ``left_out`` and ``redecoded`` (by :meth:`fill`).
    """

    def __init__(self, path: Path | str, wanted: Callable[[int], bool] | None = None, threads: int | None = None):
        import av

        self._container = av.open(str(path))
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._stream.thread_count = threads or decode_threads()
        self._ctx = self._stream.codec_context
        self.skipping = (wanted is not None and self._ctx.name in SKIPPING_CODECS
                         and bool(TIMED_CONTAINERS & set(self._container.format.name.split(","))))
        self._wanted = wanted
        self._rank: dict[int, int] = {}
        self._kept: list = []  # packets (decoding order) since the keyframe before the last shown frame
        self._kept_bytes = 0
        self._last_shown = -1
        self.decoded = 0
        self.left_out = 0
        self.redecoded = 0
        self._by_count = False  # timestamps could not be ranked: frames numbered as they come
        self._max_sent = -1  # the highest display index sent to the decoder
        self._spare: dict[int, object] = {}  # decoded by a fill beyond what it was asked for

    def stop_skipping(self) -> None:
        """Decode every frame from here on (frames already left out stay fillable)."""
        self.skipping = False

    # -- the pass --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[int, object]]:
        import av

        try:
            yield from (self._ranked() if self.skipping else self._counted())
        except av.error.FFmpegError as e:  # as OpenCV does: the video ends where it stops decoding
            log.warning("decoding stopped at frame %d: %s", self._last_shown + 1, e)
        finally:
            self._container.close()

    def _ranked(self) -> Iterator[tuple[int, object]]:
        heap: list[int] = []
        waiting: list = []  # packets read, not yet sent (decoding order)
        n = 0
        for packet in self._container.demux(self._stream):
            if packet.size == 0 and packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            if not self._by_count and (packet.pts is None or packet.pts in self._rank or packet.pts in heap):
                self._number_by_count("a packet without a timestamp of its own")
            if not self._by_count and not packet.is_discard:  # an edit list's cut-off samples: never shown
                heapq.heappush(heap, packet.pts)
            waiting.append(packet)
            while len(heap) > LOOKAHEAD:
                self._rank[heapq.heappop(heap)] = n
                n += 1
            while waiting and (self._by_count or waiting[0].is_discard or waiting[0].pts in self._rank):
                yield from self._send(waiting.pop(0))
        while heap:
            self._rank[heapq.heappop(heap)] = n
            n += 1
        while waiting:
            yield from self._send(waiting.pop(0))
        yield from self._shown(self._ctx.decode(None))

    def _number_by_count(self, why: str) -> None:
        """Timestamps that cannot be ranked (a broken mux): every frame decoded from here on,
        numbered by count as OpenCV numbers them."""
        if not self._by_count:
            log.warning("%s: %s; decoding every frame", self._container.name, why)
        self._by_count = True
        self.stop_skipping()

    def _counted(self) -> Iterator[tuple[int, object]]:
        for frame in self._container.decode(self._stream):
            self.decoded += 1
            self._last_shown += 1
            yield self._last_shown, frame

    def _send(self, packet) -> Iterator[tuple[int, object]]:
        idx = self._rank.get(packet.pts)
        if idx is not None:
            self._max_sent = max(self._max_sent, idx)
        want = not self.skipping or idx is None or self._wanted(idx)
        self._ctx.skip_frame = "DEFAULT" if want else "NONREF"
        if self.skipping:  # kept while frames may be left out (a fill needs them)
            if packet.is_keyframe:
                self._trim()
            self._kept.append(packet)
            self._kept_bytes += packet.size
            if self._kept_bytes > MAX_KEPT_BYTES:
                self.stop_skipping()
        yield from self._shown(self._ctx.decode(packet))

    def _shown(self, frames) -> Iterator[tuple[int, object]]:
        for frame in frames:
            idx = None if self._by_count else self._rank.get(frame.pts)
            if idx is None and not self._by_count:  # a frame of a discarded sample
                continue
            if idx is not None and idx <= self._last_shown:
                self._number_by_count("frame timestamps out of display order")
            if self._by_count:
                idx = self._last_shown + 1
            self.left_out += idx - self._last_shown - 1
            self._last_shown = idx
            self.decoded += 1
            yield idx, frame

    def _rank_of(self, packet_or_frame) -> int:
        """Its display index, or -1 (a discarded sample, or none ranked yet)."""
        return self._rank.get(packet_or_frame.pts, -1)

    def _trim(self) -> None:
        """Drop kept packets before the last keyframe shown at or before the last shown frame."""
        start = None
        for i, p in enumerate(self._kept):
            if p.is_keyframe and 0 <= self._rank_of(p) <= self._last_shown:
                start = i
        if start:
            self._kept_bytes -= sum(p.size for p in self._kept[:start])
            del self._kept[:start]

    # -- filling gaps ----------------------------------------------------------------------

    def fill(self, lo: int, hi: int) -> dict[int, object]:
        """The frames ``lo..hi`` (display indices, inclusive, all before the last shown frame)
        decoded again from the kept packets: the reference frames from the keyframe before
        ``lo`` on, and every frame from ``lo`` to the last one sent, so that the frames a cut
        found here makes wanted after all, already on their way, come with it (kept for the
        next call)."""
        import av

        if all(i in self._spare for i in range(lo, hi + 1)):
            return {i: self._spare.pop(i) for i in range(lo, hi + 1)}
        start = max((i for i, p in enumerate(self._kept) if p.is_keyframe and 0 <= self._rank_of(p) <= lo), default=None)
        if start is None:
            raise LookupError(f"frames {lo}-{hi} are no longer kept")
        ctx = av.CodecContext.create(self._ctx.name, "r")
        ctx.extradata = self._ctx.extradata
        ctx.thread_type = "AUTO"
        top = max(hi, self._max_sent)
        got: dict[int, object] = {}

        def take(frames) -> None:
            for frame in frames:
                self.redecoded += 1
                idx = self._rank_of(frame)
                if lo <= idx <= top:
                    got[idx] = frame

        for p in self._kept[start:]:
            idx = self._rank_of(p)
            ctx.skip_frame = "DEFAULT" if lo <= idx <= top else "NONREF"
            take(ctx.decode(p))
        take(ctx.decode(None))
        self._spare = {i: f for i, f in got.items() if i > self._last_shown}
        return {i: f for i, f in got.items() if i <= hi}
