"""Face embeddings for clustering: dlib's ResNet face descriptor (128-d).

Weights come from the ``face-recognition-models`` package (CC0) and load with
``dlib-bin``. Faces of one person lie within about 0.6 (Euclidean) of each other;
the clustering threshold is calibrated in ``bench/calibrate_clustering.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .lazy import LazyModel


def _model_dir() -> Path:
    # Located without importing the package: its __init__ needs pkg_resources,
    # which recent setuptools no longer ship.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed (pip install face-recognition-models)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


CONTEXT_MARGIN = 2.0  # dlib's aligned chip (face + 25% padding) lies inside this square
CONTEXT_MAX_SIDE = 400  # the chip is 150 px: a face at 200 px loses nothing


def face_context(frame: np.ndarray, box, margin: float = CONTEXT_MARGIN,
                 max_side: int = CONTEXT_MAX_SIDE) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The square around a face that its descriptor is computed from, and the box in it,
    so a face can be embedded later without keeping its frame (at most ``max_side`` px)."""
    import cv2

    from .faces import crop_square, square_box

    left, top, right, _ = square_box(box, margin)
    crop = crop_square(frame, box, margin)
    s = min(1.0, max_side / (right - left))
    if s < 1.0:
        side = max(1, int(round((right - left) * s)))
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    x1, y1, x2, y2 = box
    return crop, ((x1 - left) * s, (y1 - top) * s, (x2 - left) * s, (y2 - top) * s)


class FaceEmbedder(LazyModel):
    name = "dlib_face_recognition_resnet_model_v1"

    def __init__(self):
        self.shape_predictor = None
        self.encoder = None

    def _load(self) -> None:
        import dlib

        d = _model_dir()
        self.shape_predictor = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, frame: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
        """One 128-d descriptor per box of an RGB frame."""
        import dlib

        self.load()
        if not boxes:
            return np.zeros((0, 128), dtype=np.float32)
        img = np.ascontiguousarray(frame)
        shapes = dlib.full_object_detections()
        for x1, y1, x2, y2 in boxes:
            rect = dlib.rectangle(int(x1), int(y1), int(x2), int(y2))
            shapes.append(self.shape_predictor(img, rect))
        desc = self.encoder.compute_face_descriptor(img, shapes)
        return np.asarray([np.asarray(d) for d in desc], dtype=np.float32)

    def embed_crops(self, crops: list[np.ndarray], boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
        """One descriptor per (RGB crop, box in that crop's pixels), computed in one batch."""
        import dlib

        self.load()
        if not crops:
            return np.zeros((0, 128), dtype=np.float32)
        imgs = [np.ascontiguousarray(c) for c in crops]
        shapes = []
        for img, (x1, y1, x2, y2) in zip(imgs, boxes):
            one = dlib.full_object_detections()
            one.append(self.shape_predictor(img, dlib.rectangle(int(x1), int(y1), int(x2), int(y2))))
            shapes.append(one)
        desc = self.encoder.compute_face_descriptor(imgs, shapes)
        return np.asarray([np.asarray(d[0]) for d in desc], dtype=np.float32)

