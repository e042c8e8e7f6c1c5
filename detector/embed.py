"""Face embeddings for clustering: dlib's ResNet face descriptor (128-d).

Weights come from the ``face-recognition-models`` package (CC0) and load with
``dlib-bin``. Faces of one person lie within about 0.6 (Euclidean) of each other;
the clustering threshold is calibrated in ``bench/calibrate_clustering.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def _model_dir() -> Path:
    # Located without importing the package: its __init__ needs pkg_resources,
    # which recent setuptools no longer ship.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed (pip install face-recognition-models)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class FaceEmbedder:
    name = "dlib_face_recognition_resnet_model_v1"

    def __init__(self):
        self.shape_predictor = None
        self.encoder = None

    def load(self) -> "FaceEmbedder":
        if self.encoder is None:
            import dlib

            d = _model_dir()
            self.shape_predictor = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
            self.encoder = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))
        return self

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
