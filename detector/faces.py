"""Stage 4, faces: facenet-pytorch MTCNN on sampled frames; square crops with a margin.

A detected box (x1, y1, x2, y2) becomes a square of side ``max(w, h) * margin``
around the box centre (margin 1.3: 30% larger than the face), cropped from the
original frame; the parts outside the frame are black. Frames larger than
``max_side`` (640 px) are downscaled to find faces; the last MTCNN stage judges and
places each box on the full-resolution frame (:mod:`detector.mtcnn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from .lazy import LazyModel
from .mtcnn import detect_two_scale


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
    prob: float


def square_box(box, margin: float) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(1, int(round(max(x2 - x1, y2 - y1) * margin)))
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return (left, top, left + side, top + side)


def _cut_padded(frame: np.ndarray, left: int, top: int, w: int, h: int) -> np.ndarray:
    """``frame[top:top+h, left:left+w]``, black where that leaves the frame."""
    fh, fw = frame.shape[:2]
    out = np.zeros((h, w, 3), dtype=frame.dtype)
    cx1, cy1, cx2, cy2 = max(left, 0), max(top, 0), min(left + w, fw), min(top + h, fh)
    if cx2 > cx1 and cy2 > cy1:
        out[cy1 - top:cy2 - top, cx1 - left:cx2 - left] = frame[cy1:cy2, cx1:cx2]
    return out


def crop_square(frame: np.ndarray, box, margin: float) -> np.ndarray:
    """The square crop around ``box``, padded with black where it leaves the frame."""
    sx1, sy1, sx2, _ = square_box(box, margin)
    return _cut_padded(frame, sx1, sy1, sx2 - sx1, sx2 - sx1)


class CropSpec(BaseModel):
    """How a member's face crops are cut from a detection: the crop its training data had.

    ``square``: a square of side ``max(w, h) * margin`` around the box centre (black
    outside the frame). ``stretch``: the box itself, each side scaled by ``margin``,
    stretched to a square whatever its aspect (how crops resized straight from a box look).
    Training records the spec in the member's manifest entry; the pipeline cuts each
    member's own crop from the full-resolution frame, so the two cannot disagree.
    """

    model_config = {"frozen": True}

    margin: float = Field(1.3, gt=0.5, le=3.0)
    shape: Literal["square", "stretch"] = "square"

    def cut(self, frame: np.ndarray, box) -> np.ndarray:
        """A square crop (uint8 RGB) of ``box`` in ``frame`` by this spec."""
        if self.shape == "square":
            return crop_square(frame, box, self.margin)
        import cv2

        crop = crop_box(frame, box, self.margin)
        side = max(crop.shape[:2])
        return cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)

    def label(self) -> str:
        return f"{self.shape} x{self.margin:g}"


def crop_box(frame: np.ndarray, box, margin: float) -> np.ndarray:
    """The box scaled by ``margin`` about its centre (not squared), black outside the frame."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = max(1, int(round((x2 - x1) * margin))), max(1, int(round((y2 - y1) * margin)))
    return _cut_padded(frame, int(round(cx - w / 2)), int(round(cy - h / 2)), w, h)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """A face crop at ``size`` x ``size`` (centre square first if it is not square);
    area averaging to shrink, bicubic to enlarge. Shared by scoring and training."""
    import cv2

    h, w = img.shape[:2]
    if h != w:
        s = min(h, w)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


class FaceDetector(LazyModel):
    """MTCNN (facenet-pytorch, weights shipped in its wheel)."""

    def __init__(self, device: str = "cpu", min_prob: float = 0.95, min_size: int = 40,
                 max_side: int = 640, batch_size: int = 16, full_res_refine: bool = True,
                 min_face_px: int | None = None, small_min_prob: float | None = None):
        self.device = device
        # Frames searched downscaled (stages 1-2 small, O-Net on the full frame): faces down to
        # this probability are returned too, for the caller to confirm or drop (None: min_prob).
        self.small_min_prob = small_min_prob
        # MTCNN's smallest face, in the pixels it searches (default: half the kept minimum)
        self.min_face_px = min_face_px or max(12, min_size // 2)
        # Downscaled frames: the last stage on the full-resolution frame (detector/mtcnn.py),
        # else all three on the small one (facenet-pytorch's own detect, the 1.x pipeline).
        self.full_res_refine = full_res_refine
        self.min_prob = min_prob
        self.min_size = min_size
        self.max_side = max_side
        self.batch_size = batch_size
        self.mtcnn = None

    def _load(self) -> None:
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(keep_all=True, device=self.device, post_process=False,
                           select_largest=False, min_face_size=self.min_face_px)

    def detect(self, frames: list[np.ndarray], max_side: int | None = None) -> list[list[Detection]]:
        """Faces in each RGB frame (frames of one video share their size); ``max_side``
        overrides the detector's own. On frames searched downscaled, faces from
        ``small_min_prob`` up are returned as well."""
        import cv2
        import torch

        self.load()
        results: list[list[Detection]] = []
        for i in range(0, len(frames), self.batch_size):
            batch = frames[i:i + self.batch_size]
            h, w = batch[0].shape[:2]
            scale = min(1.0, (max_side or self.max_side) / max(h, w))
            small = batch
            if scale < 1.0:
                size = (int(round(w * scale)), int(round(h * scale)))
                small = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in batch]
            min_prob = self.min_prob
            with torch.inference_mode():
                if scale < 1.0 and self.full_res_refine:
                    boxes, probs = detect_two_scale(self.mtcnn, small, batch, scale)
                    scale = 1.0  # its boxes are in full-frame pixels already
                    min_prob = min(min_prob, self.small_min_prob or min_prob)
                else:
                    boxes, probs = self.mtcnn.detect(np.stack(small))
            for fb, fp in zip(boxes, probs):
                dets = []
                if fb is not None:
                    for b, p in zip(fb, fp):
                        b = tuple(float(v) / scale for v in b)
                        if p is None or p < min_prob:
                            continue
                        if min(b[2] - b[0], b[3] - b[1]) < self.min_size:
                            continue
                        dets.append(Detection(b, float(p)))
                results.append(dets)
        return results
