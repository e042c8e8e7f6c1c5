"""Stage 2, probe: image or video, its size, fps, frame count and duration.

Corrupt or unknown files raise :class:`CorruptMedia` with a sentence a person can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptMedia, TooLong, TooManyPixels, TooSmall


@dataclass(frozen=True)
class MediaInfo:
    kind: str  # "image" | "video"
    width: int
    height: int
    fps: float | None = None
    frame_count: int | None = None

    @property
    def duration_s(self) -> float | None:
        if self.kind != "video" or not self.fps:
            return None
        return self.frame_count / self.fps


MIN_SIDE = 40  # px: the face stage's smallest face (DetectorSettings.face_min_size)
MAX_IMAGE_PIXELS = 120_000_000  # phone panoramas
MAX_VIDEO_PIXELS = 7680 * 4320  # 8K


@dataclass(frozen=True)
class Limits:
    """Sizes checked before decoding: a face needs ``min_side`` pixels; a header may claim
    any size, so more than ``max_*_pixels`` is refused before a pixel is decoded."""

    min_side: int = MIN_SIDE
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_video_pixels: int = MAX_VIDEO_PIXELS

    def check(self, kind: str, width: int, height: int) -> None:
        limit = self.max_image_pixels if kind == "image" else self.max_video_pixels
        if width * height > limit:
            raise TooManyPixels(f"The {kind} is {width:,} x {height:,} pixels ({width * height / 1e6:,.0f} "
                                f"megapixels); the limit is {limit / 1e6:.0f} megapixels.")
        if min(width, height) < self.min_side:
            raise TooSmall(f"The {kind} is only {width} x {height} pixels; a face needs at least "
                           f"{self.min_side} pixels, so there is nothing to check.")


def _probe_image(path: Path, limits: Limits) -> MediaInfo | None:
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(path) as im:  # reads the header only
                limits.check("image", im.width, im.height)
                if getattr(im, "n_frames", 1) > 1:  # animated GIF/WebP: a video
                    return None
                im.load()
                return MediaInfo("image", im.width, im.height)
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as e:  # a size PIL itself refuses to open
        raise TooManyPixels(f"The image claims more pixels than can be decoded safely ({e}).") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise CorruptMedia(f"The image could not be decoded ({e}).") from e


IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def _looks_like_an_image(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _probe_video(path: Path, limits: Limits) -> MediaInfo:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise CorruptMedia("The file is neither a readable image nor a readable video.")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0)
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if w > 0 and h > 0:
            limits.check("video", w, h)  # before the first frame is decoded
        ok, frame = cap.read()
        if not ok or frame is None or w <= 0 or h <= 0:
            raise CorruptMedia("The video's first frame could not be decoded; the file is damaged.")
        if not (0 < fps < 1000):
            raise CorruptMedia("The video has no usable frame rate.")
        if n <= 0:  # some containers do not store a frame count: count by decoding
            n = 1
            while cap.grab():
                n += 1
        return MediaInfo("video", w, h, fps, n)
    finally:
        cap.release()


def probe(path: Path | str, max_duration_s: float | None = None, limits: Limits | None = None) -> MediaInfo:
    path = Path(path)
    limits = limits or Limits()
    if path.stat().st_size == 0:
        raise CorruptMedia("The file is empty.")
    info = _probe_image(path, limits)  # by content, not by file name
    if info is None:
        if _looks_like_an_image(path):  # an image's signature that no decoder could read
            raise CorruptMedia("The image could not be decoded; the file is damaged or incomplete.")
        info = _probe_video(path, limits)
    if max_duration_s and info.duration_s and info.duration_s > max_duration_s:
        raise TooLong(f"The video lasts {info.duration_s / 60:.1f} min; the limit is "
                      f"{max_duration_s / 60:.0f} min.")
    return info
