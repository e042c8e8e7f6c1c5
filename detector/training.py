"""``deepfake-train``: train a manifest architecture on face crops; write a manifest entry.

  deepfake-train CONFIG.toml [--set key=value ...] [--manifest PATH]

The config (TOML, see ``training/*.toml``) names the architecture, its initialisation
(``imagenet``: the offline ImageNet weights of its backbone, see
:mod:`detector.models.checkpoints`; ``none``; or a checkpoint file), the data and the
schedule. Data are label files (``path,label[,group]`` as ``deepfake-eval`` reads):

* ``faces = true``: every listed image is already a face crop (as ``../shared/faces``);
* ``faces = false``: videos and images go through the pipeline's own face stage (MTCNN,
  square crops at the pipeline's margin), a few frames per video, the largest face each.

Crops are decoded once and cached as arrays. The split is by a group column
(``original_video`` for DFDC: a fake and its source video stay on the same side), never
by row, into four sides (:mod:`detector.splits`): train, validation (picks the
checkpoint), calibration (fits Platt scaling; the ensemble rule reads it too) and test
(only reported). The crop a member is trained on (margin, shape: :class:`CropSpec`) is
recorded in its manifest entry and the pipeline cuts that crop for it. Batches are half real, half fake; a share of the fakes are
Self-Blended Images made on the fly from real training faces (``sbi_sources`` add
real-only sets, e.g. LFW, for that), so a model can be trained from real faces alone.
Every image then goes through the augmentations of the MeVer paper (Albumentations:
Rotate, HorizontalFlip, ColorJitter, ToGray, MotionBlur, GaussianBlur, ISONoise,
CoarseDropout, RandomSunFlare, RandomRain) and JPEG re-compression. Adam with a
linear warm-up and a cosine decay; channels_last and bfloat16 autocast where the
hardware has it (:mod:`detector.precision`).

A run survives interruption: every ``checkpoint_every_s`` (and on SIGTERM/Ctrl-C) it
writes a checkpoint (weights, optimiser, step, every random generator, curves), and
``--resume`` continues from it bit for bit. ``patience`` stops the run once the
validation AUC has not improved for that many validations (the curve has flattened).

The best validation AUC's weights are written as fp16 safetensors with their sha256,
a training record (config, data hashes, loss and learning-rate curves, validation
history, calibration and test metrics, images seen, hours, versions), and a manifest
entry (``--manifest`` upserts it) whose metrics are the measured ones and whose
calibration is fitted on the calibration split.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import tomllib
from pydantic import BaseModel, Field

from . import splits
from .calibration import Platt, fit_platt, sigmoid
from .evaluate import balanced_accuracy, roc_auc
from .faces import CropSpec, resize_square
from .hashing import sha256_file
from .manifest import Manifest, Member, WeightsRef, load_manifest
from .precision import autocast, resolve_precision
from .sbi import self_blend
from .settings import DetectorSettings
from .splits import balanced_subset, split_by_group

log = logging.getLogger(__name__)


class DataSource(BaseModel):
    labels: Path  # CSV with path,label (paths relative to the CSV)
    faces: bool = True  # rows are face crops already; else the face stage crops them
    group: str | None = None  # column that keeps related rows on one side of the split
    limit: int | None = None  # at most this many rows (a reproducible random subset)
    frames_per_video: int = 4  # face stage: frames sampled per video
    # faces = true: the crop convention these crops were made with (must be the run's crop)
    crop: CropSpec | None = None
    # Rows whose face was narrower than this in its original frame (column ``width_column``)
    # are not trained on; they stay on their validation, calibration and test sides. In
    # ../shared/faces/dfdc every face under 100 px is real: trained on, "blurry" would mean
    # "real" to the model.
    train_min_width: float | None = None
    width_column: str = "orig_crop_w"


class TrainConfig(BaseModel):
    name: str  # the manifest member this run produces
    version: str = "1.0.0"
    architecture: str
    description: str = ""
    init: str = "imagenet"  # "imagenet", "none", or a checkpoint (safetensors) of the same architecture
    data: list[DataSource]
    sbi_sources: list[DataSource] = Field(default_factory=list)  # real faces for pseudo-fakes only
    sbi_share: float = 0.5  # share of a batch's fakes that are Self-Blended Images
    # The real-only sets also fill the real half of each batch, in the share they have of the
    # SBI sources. False (how 2.0.0 was trained): they are seen only blended, so a face that
    # merely looks like them (LFW: press photos) is a "fake" to the model.
    sbi_sources_as_real: bool = True
    # The crop the member is trained and served on (None: the face-crop sources' own,
    # else the pipeline's square x1.3).
    crop: CropSpec | None = None
    split: dict[str, float] = Field(default_factory=lambda: dict(splits.FRACTIONS))  # val/calibration/test shares
    seed: int = 0
    input_size: int | None = None  # default: the architecture's data config
    batch_size: int = 32
    steps: int = 1000  # the schedule's length (patience may stop earlier)
    lr: float = 1e-4
    lr_min: float = 0.0  # the cosine decays to this
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = 0.0
    val_every: int = 200
    val_max: int | None = None  # validate on at most this many crops (balanced subset)
    patience: int | None = None  # stop after this many validations without a better AUC
    augment: bool = True
    jpeg_quality: tuple[int, int] = (40, 95)
    # Low-resolution faces: shrink by a factor drawn from downscale_range, then back up, with
    # this probability (both classes), so that a small face in a group photo is not "fake"
    # for being blurry. 0 leaves the pipeline as the 1.x / 2.0 members were trained.
    downscale_p: float = 0.0
    downscale_range: tuple[float, float] = (0.25, 0.7)
    device: str | None = None  # default: cuda when present
    threads: int | None = None  # CPU threads for torch
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where the hardware has it
    channels_last: bool = True
    checkpoint_every_s: float = 300.0
    out_dir: Path = Path("runs")
    licence: str = "research use only (see training_data)"
    training_data: str = ""
    url_base: str = "package://trained/"  # where the shipped file will live (see weights.py)


# --------------------------------------------------------------------------- data
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
        from .faces import FaceDetector

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


# --------------------------------------------------------------------------- model
def build_model(cfg: TrainConfig):
    import torch

    from .models import create_model
    from .models.checkpoints import init_from_imagenet, read_checkpoint

    model = create_model(cfg.architecture)
    if cfg.init == "imagenet":
        fresh = init_from_imagenet(model)
        own = dict(model.named_parameters())
        for k in fresh:  # a zero classifier starts at p = 0.5, not at a random confident guess
            if k.startswith("backbone.classifier.") and k in own:
                torch.nn.init.zeros_(own[k])
        log.info("ImageNet backbone loaded; %d tensors start fresh (head)", len(fresh))
    elif cfg.init != "none":
        model.load_state_dict(read_checkpoint(cfg.init), strict=True)
    return model


def to_input(batch: np.ndarray, mean, std, device: str, channels_last: bool = False):
    import torch

    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def predict_logits(model, images: np.ndarray, mean, std, device: str, batch_size: int = 64,
                   precision: str = "fp32") -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode(), autocast(device, precision):
        for i in range(0, len(images), batch_size):
            out.append(model(to_input(images[i:i + batch_size], mean, std, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_weights(model, path: Path) -> str:
    """fp16 safetensors (integer buffers kept as they are); returns the sha256."""
    from safetensors.torch import save_file

    sd = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return sha256_file(path)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (1-based): linear warm-up, then cosine."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))


def resolve_crop(cfg: TrainConfig) -> CropSpec:
    """The run's crop: the config's, else the face-crop sources' (which must agree with it)."""
    sources = cfg.data + cfg.sbi_sources
    declared = {s.crop for s in sources if s.faces and s.crop is not None}
    if cfg.crop is None and any(s.faces and s.crop is None for s in sources):
        raise ValueError("say which crop the face-crop sources follow (crop = { margin = ..., shape = ... } "
                         "on the source or the run): it is the crop the member will be served with")
    crop = cfg.crop or (declared.pop() if len(declared) == 1 else None) or CropSpec()
    for s in sources:
        if s.faces and s.crop is not None and s.crop != crop:
            raise ValueError(f"{s.labels}: its crops are {s.crop.label()}, but the run trains on {crop.label()}; "
                             "training and serving would disagree")
    return crop


# The config keys a resumed run may change; any other difference is a different run.
RESUMABLE_CHANGES = {"steps", "patience", "checkpoint_every_s", "threads", "val_every", "out_dir", "device"}


class _Stop(Exception):
    pass


@dataclass
class _RunState:
    step: int = 0
    losses: list = field(default_factory=list)
    lrs: list = field(default_factory=list)
    history: list = field(default_factory=list)
    best: dict | None = None
    seconds: float = 0.0  # training time over all the run's sessions
    sessions: int = 0


def _save_checkpoint(path: Path, model, opt, batches: BatchMaker, state: _RunState, cfg: TrainConfig) -> None:
    import torch

    ck = {"format": 1, "config": json.loads(cfg.model_dump_json()), "model": model.state_dict(),
          "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(), "batches": batches.state(),
          "run": {"step": state.step, "losses": state.losses, "lrs": state.lrs, "history": state.history,
                  "best": state.best, "seconds": state.seconds, "sessions": state.sessions}}
    tmp = path.with_suffix(".part")
    torch.save(ck, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path, model, opt, batches: BatchMaker, cfg: TrainConfig) -> _RunState:
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=True)
    was, now = ck["config"], json.loads(cfg.model_dump_json())
    changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"{path} was written by a run with other settings ({', '.join(changed)}); "
                         "start a new run (another out_dir or name) instead of resuming")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    torch.set_rng_state(ck["torch_rng"])
    batches.set_state(ck["batches"])
    return _RunState(**ck["run"])


def train(cfg: TrainConfig, settings: DetectorSettings | None = None, log_every: int = 20,
          resume: bool = False, stop_after: int | None = None) -> dict:
    """Run one training (or continue it with ``resume``); returns the training record
    (also written beside the weights). ``stop_after``: leave after that many steps of
    this session with a checkpoint written, as an interruption would (the record is
    then a progress record with ``"finished": False``)."""
    import torch

    from .pipeline import resolve_device

    settings = settings or DetectorSettings()
    device = resolve_device(cfg.device or settings.device)
    precision = resolve_precision(device, cfg.precision)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    crop = resolve_crop(cfg)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dc = model.data_config
    size = cfg.input_size or dc.input_size
    cache_dir = settings.cache_dir / "train-crops"

    face_stage = None
    if any(not s.faces for s in cfg.data + cfg.sbi_sources):
        face_stage = FaceStage(settings, device, crop)
    t0 = time.perf_counter()
    parts = [load_crops(s, size, cfg.seed, cache_dir, face_stage) for s in cfg.data]
    raw_groups = np.concatenate([p.groups for p in parts])
    crops = Crops(parts[0].images if len(parts) == 1 else np.concatenate([p.images for p in parts]),
                  np.concatenate([p.labels for p in parts]),
                  np.concatenate([np.char.add(f"{k}:", p.groups) for k, p in enumerate(parts)]),
                  None if all(p.trainable is None for p in parts) else
                  np.concatenate([np.ones(len(p.labels), bool) if p.trainable is None else p.trainable
                                  for p in parts]))
    del parts  # (several sources: the concatenated copy is the only one kept)
    sbi_parts = [load_crops(s, size, cfg.seed, cache_dir, face_stage) for s in cfg.sbi_sources]
    sbi_real = np.concatenate([p.images[p.labels == 0] for p in sbi_parts]) if sbi_parts \
        else np.zeros((0, size, size, 3), np.uint8)
    load_s = time.perf_counter() - t0
    # The side of a row is decided by its own group name (not the "k:" source prefix),
    # so the same original video is on the same side in every tool that splits it.
    sides = split_by_group(raw_groups, cfg.split, cfg.seed)
    train_idx = sides["train"]
    narrow = 0
    if crops.trainable is not None:  # train_min_width: these stay out of the batches only
        narrow = int((~crops.trainable[train_idx]).sum())
        train_idx = train_idx[crops.trainable[train_idx]]
    val_idx = balanced_subset(crops.labels, sides["val"], cfg.val_max, cfg.seed)
    log.info("%d training crops (%d fake; %d narrow faces left out), %d validation, %d calibration, %d test, %d SBI-only reals; "
             "crop %s, %s, data read in %.0f s", len(train_idx), int(crops.labels[train_idx].sum()), narrow,
             len(val_idx), len(sides["calibration"]), len(sides["test"]), len(sbi_real), crop.label(),
             precision, load_s)
    batches = BatchMaker(crops, train_idx, sbi_real, cfg, size)

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    out_dir = Path(cfg.out_dir) / cfg.name
    out_dir.mkdir(parents=True, exist_ok=True)
    ck_path = out_dir / "checkpoint.pt"
    best_path = out_dir / "best.safetensors"
    if resume and ck_path.is_file():
        st = _load_checkpoint(ck_path, model, opt, batches, cfg)
        log.info("resumed %s at step %d (%.2f h trained so far)", ck_path, st.step, st.seconds / 3600)
    elif resume:
        raise FileNotFoundError(f"nothing to resume: {ck_path} does not exist")
    else:
        st = _RunState()
    st.sessions += 1

    def validate(step: int) -> dict:
        if len(val_idx) == 0:
            return {}
        logits = predict_logits(model, crops.images[val_idx], dc.mean, dc.std, device, precision=precision)
        y = crops.labels[val_idx]
        rec = {"step": step, "images_seen": step * cfg.batch_size, "hours": round(st.seconds / 3600, 3),
               "auc": roc_auc(y, sigmoid(logits)), "balanced_accuracy": balanced_accuracy(y, sigmoid(logits)),
               "loss": float(loss_fn(torch.from_numpy(logits), torch.from_numpy(y.astype(np.float32))))}
        st.history.append(rec)
        log.info("step %d: validation AUC %.4f, BA %.4f, loss %.4f", step, rec["auc"] or 0,
                 rec["balanced_accuracy"] or 0, rec["loss"])
        if st.best is None or (rec["auc"] or 0) > (st.best["auc"] or 0):
            st.best = dict(rec)
            save_weights(model, best_path)
        model.train()
        return rec

    def flattened() -> bool:
        if not cfg.patience or st.best is None:
            return False
        return sum(1 for h in st.history if h["step"] > st.best["step"]) >= cfg.patience

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old_handler = signal.signal(signal.SIGTERM, on_signal) if _main_thread() else None
    model.train()
    t_last_ck = t_session = time.perf_counter()
    seconds_before = st.seconds
    data_s = 0.0
    session_steps = 0
    finished = False
    try:
        while st.step < cfg.steps and not flattened():
            step = st.step + 1
            td = time.perf_counter()
            xb, yb = batches()
            data_s += time.perf_counter() - td
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            x = to_input(xb, dc.mean, dc.std, device, cfg.channels_last)
            y = torch.from_numpy(yb).to(device)
            with autocast(device, precision):
                out = model(x)
            loss = loss_fn(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            st.step = step
            st.losses.append(loss.item())
            st.lrs.append(lr)
            session_steps += 1
            st.seconds = seconds_before + time.perf_counter() - t_session
            if step % log_every == 0 or step == 1:
                log.info("step %d/%d lr %.2e loss %.4f (mean of last %d: %.4f), %.1f img/s", step, cfg.steps, lr,
                         st.losses[-1], min(log_every, len(st.losses)), float(np.mean(st.losses[-log_every:])),
                         session_steps * cfg.batch_size / max(1e-9, st.seconds - seconds_before))
            if cfg.val_every and step % cfg.val_every == 0 and step != cfg.steps:
                validate(step)
            interrupted = stop["signal"] is not None or (stop_after is not None and session_steps >= stop_after)
            if interrupted or time.perf_counter() - t_last_ck >= cfg.checkpoint_every_s:
                _save_checkpoint(ck_path, model, opt, batches, st, cfg)
                t_last_ck = time.perf_counter()
            if interrupted:
                raise _Stop
        if not st.history or st.history[-1]["step"] != st.step:
            validate(st.step)
        finished = True
    except (_Stop, KeyboardInterrupt):
        _save_checkpoint(ck_path, model, opt, batches, st, cfg)
        log.info("stopped at step %d; checkpoint %s (continue with --resume)", st.step, ck_path)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    progress = {"member": cfg.name, "finished": finished, "step": st.step, "steps": cfg.steps,
                "images_seen": st.step * cfg.batch_size, "hours": round(st.seconds / 3600, 3),
                "best": st.best, "validation_history": st.history, "checkpoint": str(ck_path)}
    if not finished:
        (out_dir / "progress.json").write_text(json.dumps(progress, indent=2))
        return progress
    _save_checkpoint(ck_path, model, opt, batches, st, cfg)  # the finished state, for a longer schedule later
    if st.best is None:  # no validation split: the last weights
        save_weights(model, best_path)
        st.best = {"step": st.step, "auc": None, "balanced_accuracy": None}

    import timm

    filename = f"{cfg.name}-{cfg.version}.safetensors"
    final = out_dir / filename
    best_path.replace(final)
    sha = sha256_file(final)
    # The chosen weights, measured on the sides that did not choose them.
    from safetensors.torch import load_file

    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                           for k, v in load_file(str(final)).items()})
    held_out = {}
    calibration = None
    for side in ("calibration", "test"):
        idx = sides[side]
        if len(idx) == 0 or len(np.unique(crops.labels[idx])) < 2:
            continue
        logits = predict_logits(model, crops.images[idx], dc.mean, dc.std, device, precision=precision)
        y = crops.labels[idx]
        if side == "calibration":
            platt = fit_platt(logits, y)
            calibration = platt.model_dump()
            calibration["fitted_on"] = (f"calibration split of {', '.join(str(s.labels) for s in cfg.data)} "
                                        f"(n={len(idx)})")
            p = platt.apply(logits)
        else:
            p = Platt.model_validate(calibration).apply(logits) if calibration else sigmoid(logits)
        held_out[side] = {"n": int(len(idx)), "fake": int(y.sum()), "auc": roc_auc(y, p),
                          "balanced_accuracy": balanced_accuracy(y, p)}
    log_every_curve = max(1, log_every)
    record = {
        "member": cfg.name, "version": cfg.version, "architecture": cfg.architecture,
        "weights": {"file": filename, "sha256": sha, "size_bytes": final.stat().st_size, "dtype": "float16"},
        "crop": crop.model_dump(), "input_size": size, "precision": precision,
        "config": json.loads(cfg.model_dump_json()),
        "data": [{"labels": str(s.labels), "sha256": sha256_file(s.labels)} for s in cfg.data + cfg.sbi_sources],
        "counts": {"train": int(len(train_idx)), "train_fake": int(crops.labels[train_idx].sum()),
                   "val": int(len(val_idx)), "val_fake": int(crops.labels[val_idx].sum()),
                   "calibration": int(len(sides["calibration"])), "test": int(len(sides["test"])),
                   "sbi_only_reals": int(len(sbi_real)), "train_narrow_left_out": narrow},
        "steps": st.step, "images_seen": st.step * cfg.batch_size, "hours": round(st.seconds / 3600, 3),
        "sessions": st.sessions, "stopped_by": "patience" if st.step < cfg.steps else "schedule",
        "best": st.best,
        "held_out": held_out,
        "validation_history": st.history,
        "loss_curve": [round(float(np.mean(st.losses[i:i + log_every_curve])), 4)
                       for i in range(0, len(st.losses), log_every_curve)],
        "lr_curve": [float(st.lrs[i]) for i in range(0, len(st.lrs), log_every_curve)],
        "curve_every": log_every_curve,
        "calibration": calibration,
        "timing_s": {"data": round(load_s, 1), "train": round(st.seconds, 1), "batches_this_session": round(data_s, 1)},
        "device": device, "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
        "git_commit": _git_commit(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out_dir / "training-record.json").write_text(json.dumps(record, indent=2))
    entry = manifest_entry(cfg, record, size, dc, crop)
    (out_dir / "manifest-entry.json").write_text(entry.model_dump_json(indent=2, exclude_none=True))
    record["manifest_entry"] = json.loads(entry.model_dump_json(exclude_none=True))
    record["finished"] = True
    return record


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def manifest_entry(cfg: TrainConfig, record: dict, size: int, dc, crop: CropSpec) -> Member:
    best = record["best"]
    metrics = {}
    if best.get("auc") is not None:
        metrics = {"val_auc": round(best["auc"], 4), "val_balanced_accuracy": round(best["balanced_accuracy"], 4)}
    for side, m in record.get("held_out", {}).items():
        if m.get("auc") is not None:
            metrics[f"{side}_auc"] = round(m["auc"], 4)
            metrics[f"{side}_balanced_accuracy"] = round(m["balanced_accuracy"], 4)
    return Member(
        name=cfg.name, version=cfg.version, architecture=cfg.architecture,
        description=cfg.description or f"{cfg.architecture} trained by deepfake-train ({record['counts']['train']} "
                                       f"crops, {record['steps']} steps).",
        input_size=size if size != dc.input_size else None, crop=crop,
        weights=WeightsRef(url=cfg.url_base + record["weights"]["file"], sha256=record["weights"]["sha256"],
                           filename=record["weights"]["file"], format="safetensors",
                           size_bytes=record["weights"]["size_bytes"]),
        licence=cfg.licence, training_data=cfg.training_data or ", ".join(d["labels"] for d in record["data"]),
        metrics=metrics, calibration=record.get("calibration"),
        training_record=record["weights"]["file"].replace(".safetensors", ".json"))


def upsert(manifest_path: Path, entry: Member) -> None:
    manifest = load_manifest(manifest_path) if manifest_path.is_file() else Manifest(members=[])
    members = [m for m in manifest.members if m.name != entry.name] + [entry]
    manifest.members = members
    manifest_path.write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n")


def load_config(path: Path, overrides: list[str]) -> TrainConfig:
    raw = tomllib.loads(Path(path).read_text())
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            raw[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raw[key] = value
    base = Path(path).parent
    for group in ("data", "sbi_sources"):
        for d in raw.get(group, []):
            if not Path(d["labels"]).is_absolute():
                d["labels"] = str((base / d["labels"]).resolve())
    init = raw.get("init", "imagenet")
    if init not in ("imagenet", "none") and not Path(init).is_absolute():
        raw["init"] = str((base / init).resolve())  # a checkpoint beside the config, like the data
    return TrainConfig.model_validate(raw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deepfake-train", description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a top-level config value (TOML syntax), e.g. --set steps=50")
    p.add_argument("--manifest", type=Path, help="upsert the new entry into this manifest file")
    p.add_argument("--ship", type=Path, help="also copy weights and training record into this folder")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="leave after N steps with a checkpoint written (continue later with --resume)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(args.config, args.overrides)
    record = train(cfg, resume=args.resume, stop_after=args.stop_after)
    out = Path(cfg.out_dir) / cfg.name
    if not record["finished"]:
        print(f"{cfg.name}: stopped at step {record['step']}/{record['steps']} ({record['hours']:.2f} h); "
              f"continue with: deepfake-train {args.config} --resume")
        return 0
    entry = Member.model_validate(record["manifest_entry"])
    if args.ship:
        import shutil

        args.ship.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / entry.weights.filename, args.ship / entry.weights.filename)
        shutil.copyfile(out / "training-record.json", args.ship / entry.training_record)
    if args.manifest:
        upsert(args.manifest, entry)
    b = record["best"]
    print(f"{cfg.name}: best step {b['step']}, validation AUC {b['auc']}, BA {b['balanced_accuracy']}; "
          f"weights {out / entry.weights.filename} (sha256 {entry.weights.sha256[:12]}...)")
    return 0


def calibrate_members(manifest: Manifest, store, labels: Path, group: str | None, names: list[str] | None,
                      seed: int = 0, limit: int | None = None, device: str = "cpu") -> dict[str, dict]:
    """Fit each member's Platt calibration on the calibration split of a face-crop set
    (the side ``deepfake-train`` keeps for it: by ``group``, :mod:`detector.splits`)."""
    from .ensemble import MemberModel

    settings = DetectorSettings()
    out = {}
    for member in manifest.members:
        if (names and member.name not in names) or member.weights is None:
            continue
        mm = MemberModel.load(member, store, device)
        mm.calibration = None  # fit on the raw logit
        src = DataSource(labels=labels, faces=True, group=group)
        crops = load_crops(src, mm.input_size, seed, settings.cache_dir / "train-crops")
        val_idx = balanced_subset(crops.labels, split_by_group(crops.groups, seed=seed)["calibration"], limit, seed)
        logits = predict_logits(mm.model, crops.images[val_idx], mm.mean, mm.std, device)
        y = crops.labels[val_idx]
        platt = fit_platt(logits, y)
        platt.fitted_on = f"calibration split of {labels} by {group} (n={len(val_idx)})"
        out[member.name] = {"calibration": platt.model_dump(),
                            "raw_auc": roc_auc(y, sigmoid(logits)),
                            "raw_balanced_accuracy": balanced_accuracy(y, sigmoid(logits)),
                            "calibrated_balanced_accuracy": balanced_accuracy(y, platt.apply(logits))}
    return out


if __name__ == "__main__":
    sys.exit(main())
