"""Synthetic multi-shot videos from still photos: the CLI's ``--demo`` and the tests.

The default demo uses the Grace Hopper portrait that ships inside matplotlib (US Navy
photo, public domain), so the first run needs nothing but the installed packages.
Each photo becomes one shot with a slow zoom (a "Ken Burns" move) so that frames differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def shipped_photo() -> np.ndarray:
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _fit(img: np.ndarray, w: int, h: int, zoom: float) -> np.ndarray:
    """The whole photo letterboxed into (w, h), zoomed about its centre by ``zoom`` (>= 1)."""
    import cv2

    ih, iw = img.shape[:2]
    scale = min(w / iw, h / ih) * zoom
    rw, rh = max(1, int(round(iw * scale))), max(1, int(round(ih * scale)))
    resized = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    # Paste centred; a zoom larger than the canvas crops the overflow symmetrically.
    sx, sy = max(0, (rw - w) // 2), max(0, (rh - h) // 2)
    dx, dy = max(0, (w - rw) // 2), max(0, (h - rh) // 2)
    cw, ch = min(w, rw), min(h, rh)
    canvas[dy:dy + ch, dx:dx + cw] = resized[sy:sy + ch, sx:sx + cw]
    return canvas


def make_multishot_video(images: list[np.ndarray], out: Path, seconds_per_shot: float = 2.0,
                         fps: float = 25.0, size: tuple[int, int] = (480, 360), codec: str = "mp4v") -> Path:
    """Write an MP4: one shot per RGB image, each zooming in slowly. Returns ``out``.

    ``codec="mp4v"``: OpenCV's MPEG-4 writer (no B-frames). ``codec="h264"``: libx264 (via
    PyAV) as a platform's fixed-GOP encode does it: 3 B-frames between references, none of
    them a reference, and no keyframe at the cuts (so cuts fall on B-frames too)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    n = max(2, int(round(seconds_per_shot * fps)))
    frames = (_fit(img, w, h, 1.0 + 0.15 * i / (n - 1)) for img in images for i in range(n))
    if codec == "h264":
        return _write_h264(frames, out, fps, size)
    import cv2

    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return out


def _write_h264(frames, out: Path, fps: float, size: tuple[int, int]) -> Path:
    from fractions import Fraction

    import av

    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "x264-params": "bframes=3:b-adapt=0:b-pyramid=none:scenecut=0:keyint=250"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode(None))
    return out


def demo_video(folder: Path) -> Path:
    """The built-in demo: three shots of one shipped photo (plain, mirrored and warm, grey)."""
    import cv2

    out = Path(folder) / "demo_3shots.mp4"
    if out.is_file():
        return out
    photo = shipped_photo()
    warm = np.clip(photo[:, ::-1].astype(np.int16) + np.array([40, 0, -40]), 0, 255).astype(np.uint8)
    grey = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return make_multishot_video([photo, warm, grey], out)
