"""The reliability gate: when a score should not be read as a verdict.

The detectors were trained and measured on faces of a certain size, from frames of a
certain quality; outside that range their numbers are not evidence. The gate gives
the reasons ("inconclusive because ...") and the pipeline then reports the verdict
*inconclusive*, with the number kept in the report for experts but not shown as a
finding. Thresholds, and why:

* no face: the detector judges faces only.
* faces too small: median scored face under ``MIN_FACE_PX`` (64 px) on its shorter
  side. The crops are upscaled 3.5-4.7x to the members' 224-300 px; the blending
  artefacts they look for do not survive that.
* heavy compression: a video under ``MIN_VIDEO_BPP`` bits per pixel per frame
  (0.015: 0.9 Mbit/s at 1080p30, 0.1 Mbit/s at 360p30; the devset's and DFDC's
  videos lie at 0.036-0.13), or a JPEG whose quantisation tables estimate a quality
  under ``MIN_JPEG_QUALITY`` (50). Compression removes the high frequencies the
  members rely on; both the MeVer and the SBI papers report large drops there.
* too few frames: a video whose score rests on fewer than ``MIN_FACE_FRAMES`` (3)
  frames with a scored face: one odd frame can decide a max over shots.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_FACE_PX = 64
MIN_VIDEO_BPP = 0.015
MIN_JPEG_QUALITY = 50
MIN_FACE_FRAMES = 3

# The IJG standard luminance quantisation table (natural order), quality 50.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)


@dataclass(frozen=True)
class Reason:
    code: str
    message: str  # why, in plain words ("the faces are too small to judge ...")
    advice: str = ""  # what the asker can do about it


def jpeg_quality(path: Path) -> float | None:
    """The IJG quality (1-100) a JPEG's luminance table corresponds to; None if not a JPEG."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            tables = getattr(im, "quantization", None)
            if im.format != "JPEG" or not tables:
                return None
            table = np.asarray(tables[0], np.float64)
    except OSError:
        return None
    if table.size != 64:
        return None
    scale = float(np.mean(table * 100.0 / _IJG_LUMA))
    return (200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale


def video_bpp(size_bytes: int, width: int, height: int, fps: float | None, duration_s: float | None) -> float | None:
    if not (fps and duration_s and width and height):
        return None
    return size_bytes * 8.0 / (duration_s * fps * width * height)


@dataclass(frozen=True)
class Thresholds:
    min_face_px: float = MIN_FACE_PX
    min_video_bpp: float = MIN_VIDEO_BPP
    min_jpeg_quality: float = MIN_JPEG_QUALITY
    min_face_frames: int = MIN_FACE_FRAMES


def reasons(*, kind: str, path: Path | None, size_bytes: int, width: int, height: int,
            fps: float | None, duration_s: float | None, scored: bool,
            face_sides: list[float], face_frames: int, limits: Thresholds = Thresholds()) -> list[Reason]:
    """Every reason the score should not be taken as a finding (empty: it may)."""
    out: list[Reason] = []
    if not scored:
        out.append(Reason("no_face", "no face could be scored, and the detector judges faces only"))
        return out
    if face_sides:
        median = float(np.median(face_sides))
        if median < limits.min_face_px:
            out.append(Reason("faces_too_small", f"the faces are too small to judge (about {median:.0f} pixels "
                              f"across; the detectors need {limits.min_face_px:.0f})",
                              "A larger or sharper copy, in which the faces fill more of the picture, may work."))
    if kind == "video":
        bpp = video_bpp(size_bytes, width, height, fps, duration_s)
        if bpp is not None and bpp < limits.min_video_bpp:
            out.append(Reason("heavy_compression", "the video is heavily compressed, and compression wipes out "
                              "the fine traces the detectors look for",
                              "Try to find a less compressed copy of the video: the original upload, "
                              "or a download in a higher quality."))
        if face_frames < limits.min_face_frames:
            out.append(Reason("too_few_frames", f"a face is visible in too few frames to judge ({face_frames}; "
                              f"at least {limits.min_face_frames} are needed)",
                              "A longer clip, in which the face is visible for longer, may work."))
    elif path is not None:
        q = jpeg_quality(path)
        if q is not None and q < limits.min_jpeg_quality:
            out.append(Reason("heavy_compression", f"the image is heavily compressed (JPEG quality about "
                              f"{q:.0f} of 100), and compression wipes out the fine traces the detectors look for",
                              "Try to find the original image or a higher-quality copy."))
    return out


def sentence(rs: list[Reason]) -> str:
    """'Inconclusive because a and b. What to do about a. What to do about b.'"""
    parts = [r.message for r in rs]
    if not parts:
        return ""
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    advice = " ".join(dict.fromkeys(r.advice for r in rs if r.advice))
    return f"Inconclusive because {text}." + (f" {advice}" if advice else "")
