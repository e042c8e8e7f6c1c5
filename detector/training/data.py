"""Face crops for training: read once (through the pipeline's face stage for videos), cached as
arrays; the augmentations; balanced batches with Self-Blended Images made on the fly."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..faces import CropSpec, resize_square
from ..hashing import sha256_file
from ..sbi import self_blend
from ..settings import DetectorSettings
from .config import DataSource, TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Crops:
    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    labels: np.ndarray  # (N,) 1 = fake
    groups: np.ndarray  # (N,) str
    trainable: np.ndarray | None = None  # (N,) bool: False = never in a training batch (None: all)


def _read_rows(src: DataSource, seed: int) -> list[dict]:
    with open(src.labels, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ValueError(f"{src.labels}: needs the columns path,label")
    if src.group and src.group not in rows[0]:
        raise ValueError(f"{src.labels}: no column {src.group!r} to split by")
    if src.limit and src.limit < len(rows):
        idx = np.random.default_rng(seed).choice(len(rows), src.limit, replace=False)
        rows = [rows[i] for i in sorted(idx)]
    return rows


class FaceStage:
    """The pipeline's face stage for training data: MTCNN, the largest face per frame,
    cut by the run's crop spec (the one the member will be served with)."""

    def __init__(self, settings: DetectorSettings, device: str, crop: CropSpec):
        from ..faces import FaceDetector

        self.settings = settings
        self.crop = crop
        self.detector = FaceDetector(device, settings.face_min_prob, settings.face_min_size,
                                     settings.detect_max_side,
                                     full_res_refine=settings.detect_full_res_refine,
                                     min_face_px=settings.detect_min_face_px)

    def frames(self, path: Path, n: int) -> list[np.ndarray]:
        import cv2
        from PIL import Image

        cap = cv2.VideoCapture(str(path))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count <= 1:
            cap.release()
            return [np.asarray(Image.open(path).convert("RGB"))]
        out = []
        for idx in np.linspace(0, count - 1, min(n, count)).round().astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx))
            ok, bgr = cap.read()
            if ok:
                out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        cap.release()
        return out

    def crops(self, path: Path, n: int) -> list[np.ndarray]:
        out = []
        for rgb in self.frames(path, n):
            dets = self.detector.detect([rgb])[0]
            if dets:
                d = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
                out.append(self.crop.cut(rgb, d.box))
        return out


def load_crops(src: DataSource, size: int, seed: int, cache_dir: Path,
               face_stage: FaceStage | None = None) -> Crops:
    """The face crops of one source at ``size`` px, cached by the label file's content."""
    from PIL import Image

    crop = None if src.faces else face_stage.crop.model_dump()
    digest = hashlib.sha256(json.dumps([sha256_file(src.labels), src.faces, src.limit, src.frames_per_video,
                                        size, seed, crop]).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"crops-{Path(src.labels).parent.name}-{digest}.npz"
    rows = _read_rows(src, seed)
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if "rows" in z.files:  # (caches written before train_min_width lack it: made again)
            return Crops(z["images"], z["labels"], z["groups"], _trainable(src, rows, z["rows"]))
    images, labels, groups, row_of = [], [], [], []
    for i, row in enumerate(rows):
        path = Path(src.labels).parent / row["path"]
        if src.faces:
            crops = [np.asarray(Image.open(path).convert("RGB"))]
        else:
            crops = face_stage.crops(path, src.frames_per_video)
        for c in crops:
            images.append(resize_square(c, size))
            labels.append(1 if row["label"] == "fake" else 0)
            groups.append(row.get(src.group) if src.group else row["path"])
            row_of.append(i)
        if (i + 1) % 1000 == 0:
            log.info("%s: %d/%d rows read", src.labels, i + 1, len(rows))
    row_of = np.asarray(row_of, np.int64)
    out = Crops(np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
                np.asarray(labels, np.int64), np.asarray(groups, dtype=str), _trainable(src, rows, row_of))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache.with_suffix(".part.npz"), images=out.images, labels=out.labels, groups=out.groups,
             rows=row_of)
    cache.with_suffix(".part.npz").replace(cache)
    return out


def _trainable(src: DataSource, rows: list[dict], row_of: np.ndarray) -> np.ndarray | None:
    """Which crops may be trained on (``train_min_width``), by the label row each came from."""
    if src.train_min_width is None:
        return None
    if rows and src.width_column not in rows[0]:
        raise ValueError(f"{src.labels}: no column {src.width_column!r} for train_min_width")
    wide = np.asarray([float(r[src.width_column]) >= src.train_min_width for r in rows], bool)
    return wide[row_of] if len(row_of) else np.zeros(0, bool)


# --------------------------------------------------------------------------- augmentation
def augmentations(size: int, jpeg_quality: tuple[int, int], seed: int = 0,
                  downscale_p: float = 0.0, downscale_range: tuple[float, float] = (0.25, 0.7)):
    """The MeVer paper's augmentations, optionally a low-resolution round trip, then JPEG
    re-compression."""
    import albumentations as A
    import cv2

    low_res = [A.Downscale(scale_range=downscale_range, p=downscale_p,
                           interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR})
               ] if downscale_p > 0 else []
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Rotate(limit=10, border_mode=cv2.BORDER_CONSTANT, p=0.3),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=0.3),
        A.ToGray(p=0.05),
        A.OneOf([A.MotionBlur(blur_limit=(3, 7)), A.GaussianBlur(sigma_limit=(0.3, 1.5))], p=0.15),
        A.ISONoise(p=0.1),
        A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.05, 0.2),
                        hole_width_range=(0.05, 0.2), p=0.2),
        A.RandomSunFlare(flare_roi=(0, 0, 1, 0.5), src_radius=size // 4, p=0.03),
        A.RandomRain(drop_width=1, blur_value=3, p=0.03),
        *low_res,
        A.ImageCompression(quality_range=jpeg_quality, p=0.7),
    ], seed=seed)


class BatchMaker:
    """Balanced batches: half real, half fake (dataset fakes and Self-Blended Images)."""

    def __init__(self, crops: Crops, train_idx: np.ndarray, sbi_real: np.ndarray, cfg: TrainConfig, size: int):
        self.crops = crops
        self.real = train_idx[crops.labels[train_idx] == 0]
        self.fake = train_idx[crops.labels[train_idx] == 1]
        self.sbi_real = sbi_real  # extra real-only images for SBI (N, S, S, 3)
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.aug = augmentations(size, cfg.jpeg_quality, cfg.seed, cfg.downscale_p,
                                 cfg.downscale_range) if cfg.augment else None
        if len(self.real) == 0 and len(sbi_real) == 0:
            raise ValueError("no real training faces: SBI and the real half of each batch need some")
        sbi = cfg.sbi_share if len(self.fake) else 1.0
        self.n_real = cfg.batch_size // 2
        self.n_sbi = int(round((cfg.batch_size - self.n_real) * sbi))
        self.n_fake = cfg.batch_size - self.n_real - self.n_sbi

    def _real_pool(self, n: int) -> list[np.ndarray]:
        k_extra = self.rng.binomial(n, len(self.sbi_real) / (len(self.sbi_real) + len(self.real))) \
            if len(self.sbi_real) else 0
        out = [self.crops.images[i] for i in self.rng.choice(self.real, n - k_extra)] if n - k_extra else []
        out += [self.sbi_real[i] for i in self.rng.integers(0, len(self.sbi_real), k_extra)] if k_extra else []
        return out

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        imgs, labels = [], []
        if len(self.real) and self.cfg.sbi_sources_as_real:
            imgs += self._real_pool(self.n_real)
        elif len(self.real):
            imgs += [self.crops.images[i] for i in self.rng.choice(self.real, self.n_real)]
        else:
            imgs += [self.sbi_real[i] for i in self.rng.integers(0, len(self.sbi_real), self.n_real)]
        labels += [0] * self.n_real
        if self.n_fake:
            imgs += [self.crops.images[i] for i in self.rng.choice(self.fake, self.n_fake)]
            labels += [1] * self.n_fake
        for src in self._real_pool(self.n_sbi):
            imgs.append(self_blend(src, self.rng)[0])
            labels.append(1)
        if self.aug is not None:
            imgs = [self.aug(image=im)["image"] for im in imgs]
        return np.stack(imgs), np.asarray(labels, np.float32)

    def _aug_parts(self) -> list:
        """The augmentation pipeline and every transform in it: each draws from its own generators."""
        from albumentations.core.composition import BaseCompose

        out, todo = [], [self.aug] if self.aug is not None else []
        while todo:
            t = todo.pop(0)
            out.append(t)
            if isinstance(t, BaseCompose):  # Compose, OneOf: transforms inside
                todo.extend(t.transforms)
        return out

    def state(self) -> dict:
        """Where the batch stream is: every generator it draws from."""
        return {"rng": self.rng.bit_generator.state,
                "aug": [{"np": t.random_generator.bit_generator.state, "py": t.py_random.getstate()}
                        for t in self._aug_parts()]}

    def set_state(self, st: dict) -> None:
        self.rng.bit_generator.state = st["rng"]
        parts = self._aug_parts()
        if len(parts) != len(st["aug"]):
            raise ValueError("the checkpoint's augmentations differ from this run's")
        for t, g in zip(parts, st["aug"]):
            t.random_generator.bit_generator.state = g["np"]
            py = g["py"]
            t.py_random.setstate((py[0], tuple(py[1]), py[2]))
