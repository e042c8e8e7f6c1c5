"""A training run's configuration: the data it reads, the model, the schedule; a TOML file with
``--set`` overrides (:func:`load_config`), and the crop it trains on (:func:`resolve_crop`)."""

from __future__ import annotations

import logging
import math
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from .. import splits
from ..faces import CropSpec

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
