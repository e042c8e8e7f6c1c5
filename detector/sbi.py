"""Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): pseudo-fakes from real faces alone.

A real face is blended with a slightly altered copy of itself (colour and frequency
changes, a small rescale and shift) inside a soft, deformed face-shaped mask. The result
carries the blending boundary and statistical inconsistencies that face swaps leave,
without any fake in the training data, which is why SBI generalises across manipulations.

The input is a face crop as the pipeline's face stage makes it: the face centred, the
crop ``margin`` times the face's size. The original uses 81 dlib landmarks for the mask;
here the mask is a deformed ellipse over the face region, which the crop geometry gives.
"""

from __future__ import annotations

import numpy as np

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # as in the paper: full blends are most common


def face_mask(size: int, rng: np.random.Generator, margin: float = 1.3, vertices: int = 24) -> np.ndarray:
    """A soft mask in [0, 1] over the central face region of a square crop of ``size``."""
    import cv2

    face = size / margin
    c = size / 2 + rng.uniform(-0.03, 0.03, 2) * face
    ax = np.array([0.40, 0.50]) * face * rng.uniform(0.85, 1.05, 2)  # half-width, half-height of the face
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    radius = 1 + rng.uniform(-0.08, 0.08, vertices)  # elastic-looking deformation of the outline
    pts = np.stack([c[0] + ax[0] * radius * np.cos(angles), c[1] + ax[1] * radius * np.sin(angles)], 1)
    hard = np.zeros((size, size), np.float32)
    cv2.fillPoly(hard, [np.round(pts).astype(np.int32)], 1.0)
    k = int(face * rng.uniform(0.04, 0.10)) | 1  # odd kernel: a soft boundary of varying width
    return cv2.GaussianBlur(hard, (k, k), 0)  # soft on both sides of the outline, as in the paper


def _source(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The altered copy: colour shift, contrast/brightness, then blur or sharpen, rescale, shift."""
    import cv2

    x = img.astype(np.float32)
    x = x * rng.uniform(0.85, 1.15) + rng.uniform(-20, 20)  # contrast, brightness
    x = x + rng.uniform(-20, 20, 3)  # RGB shift
    x = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    else:
        blur = cv2.GaussianBlur(x, (0, 0), 1.0)
        x = cv2.addWeighted(x, 1.6, blur, -0.6, 0)  # unsharp mask
    h, w = x.shape[:2]
    s = rng.uniform(0.95, 1.05)
    m = np.array([[s, 0, (1 - s) * w / 2 + rng.uniform(-0.02, 0.02) * w],
                  [0, s, (1 - s) * h / 2 + rng.uniform(-0.02, 0.02) * h]], np.float32)
    return cv2.warpAffine(x, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def self_blend(img: np.ndarray, rng: np.random.Generator, margin: float = 1.3) -> tuple[np.ndarray, np.ndarray]:
    """(pseudo-fake uint8 RGB, mask in [0, 1]) for a square RGB face crop."""
    h, w = img.shape[:2]
    if h != w:
        raise ValueError("self_blend expects a square face crop")
    mask = face_mask(h, rng, margin) * rng.choice(BLEND_RATIOS)
    src = _source(img, rng).astype(np.float32)
    out = src * mask[..., None] + img.astype(np.float32) * (1 - mask[..., None])
    out = np.where(mask[..., None] > 0, np.clip(np.round(out), 0, 255), img).astype(np.uint8)
    return out, mask
