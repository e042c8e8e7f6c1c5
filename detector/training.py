"""``deepfake-train``: train a manifest architecture on face crops; write a manifest entry.

  deepfake-train CONFIG.toml [--set key=value ...] [--manifest PATH]

The config (TOML, see ``training/*.toml``) names the architecture, its initialisation
(``imagenet``: the offline ImageNet weights of its backbone, see
:mod:`detector.models.checkpoints`; ``none``; or a checkpoint file), the data and the
schedule. Data are label files (``path,label[,group]`` as ``deepfake-eval`` reads):

* ``faces = true``: every listed image is already a face crop (as ``../shared/faces``);
* ``faces = false``: videos and images go through the pipeline's own face stage (MTCNN,
  square crops at the pipeline's margin), a few frames per video, the largest face each.

Crops are decoded once and cached as arrays. The split into training and validation is
by a group column (``original_video`` for DFDC: a fake and its source video stay on the
same side), never by row. Batches are half real, half fake; a share of the fakes are
Self-Blended Images made on the fly from real training faces (``sbi_sources`` add
real-only sets, e.g. LFW, for that), so a model can be trained from real faces alone.
Every image then goes through the augmentations of the MeVer paper (Albumentations:
Rotate, HorizontalFlip, ColorJitter, ToGray, MotionBlur, GaussianBlur, ISONoise,
CoarseDropout, RandomSunFlare, RandomRain) and JPEG re-compression. Adam, lr 1e-4.

The best validation AUC's weights are written as fp16 safetensors with their sha256,
a training record (config, data hashes, loss curve, validation metrics, versions), and
a manifest entry (``--manifest`` upserts it into a manifest file) whose metrics are the
measured ones and whose calibration is fitted on the validation split.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import platform
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from .calibration import fit_platt
from .evaluate import balanced_accuracy, roc_auc
from .faces import resize_square
from .hashing import sha256_file
from .manifest import Manifest, Member, WeightsRef, load_manifest
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


class TrainConfig(BaseModel):
    name: str  # the manifest member this run produces
    version: str = "1.0.0"
    architecture: str
    description: str = ""
    init: str = "imagenet"  # "imagenet", "none", or a checkpoint (safetensors) of the same architecture
    data: list[DataSource]
    sbi_sources: list[DataSource] = Field(default_factory=list)  # real faces for pseudo-fakes only
    sbi_share: float = 0.5  # share of a batch's fakes that are Self-Blended Images
    val_fraction: float = 0.15
    seed: int = 0
    input_size: int | None = None  # default: the architecture's data config
    batch_size: int = 32
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 0.0
    val_every: int = 200
    val_max: int | None = None  # validate on at most this many crops (balanced subset)
    augment: bool = True
    jpeg_quality: tuple[int, int] = (40, 95)
    device: str | None = None  # default: cuda when present
    threads: int | None = None  # CPU threads for torch
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
    a square crop at the pipeline's margin."""

    def __init__(self, settings: DetectorSettings, device: str):
        from .faces import FaceDetector

        self.settings = settings
        self.detector = FaceDetector(device, settings.face_min_prob, settings.face_min_size,
                                     settings.detect_max_side)

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
        from .faces import crop_square

        out = []
        for rgb in self.frames(path, n):
            dets = self.detector.detect([rgb])[0]
            if dets:
                d = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
                out.append(crop_square(rgb, d.box, self.settings.face_margin))
        return out


def load_crops(src: DataSource, size: int, seed: int, cache_dir: Path,
               face_stage: FaceStage | None = None) -> Crops:
    """The face crops of one source at ``size`` px, cached by the label file's content."""
    from PIL import Image

    digest = hashlib.sha256(json.dumps([sha256_file(src.labels), src.faces, src.limit, src.frames_per_video,
                                        size, seed]).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"crops-{Path(src.labels).parent.name}-{digest}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return Crops(z["images"], z["labels"], z["groups"])
    rows = _read_rows(src, seed)
    images, labels, groups = [], [], []
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
        if (i + 1) % 1000 == 0:
            log.info("%s: %d/%d rows read", src.labels, i + 1, len(rows))
    out = Crops(np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
                np.asarray(labels, np.int64), np.asarray(groups, dtype=str))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache.with_suffix(".part.npz"), images=out.images, labels=out.labels, groups=out.groups)
    cache.with_suffix(".part.npz").replace(cache)
    return out


# --------------------------------------------------------------------------- augmentation
def augmentations(size: int, jpeg_quality: tuple[int, int]):
    """The MeVer paper's augmentations, then JPEG re-compression."""
    import albumentations as A
    import cv2

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
        A.ImageCompression(quality_range=jpeg_quality, p=0.7),
    ])


class BatchMaker:
    """Balanced batches: half real, half fake (dataset fakes and Self-Blended Images)."""

    def __init__(self, crops: Crops, train_idx: np.ndarray, sbi_real: np.ndarray, cfg: TrainConfig, size: int):
        self.crops = crops
        self.real = train_idx[crops.labels[train_idx] == 0]
        self.fake = train_idx[crops.labels[train_idx] == 1]
        self.sbi_real = sbi_real  # extra real-only images for SBI (N, S, S, 3)
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.aug = augmentations(size, cfg.jpeg_quality) if cfg.augment else None
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
        if len(self.real):
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


def to_input(batch: np.ndarray, mean, std, device: str):
    import torch

    x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def predict_logits(model, images: np.ndarray, mean, std, device: str, batch_size: int = 64) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out.append(model(to_input(images[i:i + batch_size], mean, std, device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_weights(model, path: Path) -> str:
    """fp16 safetensors (integer buffers kept as they are); returns the sha256."""
    import torch
    from safetensors.torch import save_file

    sd = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"format": "pt"})
    del torch
    return sha256_file(path)


def train(cfg: TrainConfig, settings: DetectorSettings | None = None, log_every: int = 20) -> dict:
    """Run one training; returns the training record (also written beside the weights)."""
    import torch

    from .pipeline import resolve_device

    settings = settings or DetectorSettings()
    device = resolve_device(cfg.device or settings.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    dc = model.data_config
    size = cfg.input_size or dc.input_size
    cache_dir = settings.cache_dir / "train-crops"

    face_stage = None
    if any(not s.faces for s in cfg.data + cfg.sbi_sources):
        face_stage = FaceStage(settings, device)
    t0 = time.perf_counter()
    parts = [load_crops(s, size, cfg.seed, cache_dir, face_stage) for s in cfg.data]
    crops = Crops(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                  np.concatenate([np.char.add(f"{k}:", p.groups) for k, p in enumerate(parts)]))
    sbi_parts = [load_crops(s, size, cfg.seed, cache_dir, face_stage) for s in cfg.sbi_sources]
    sbi_real = np.concatenate([p.images[p.labels == 0] for p in sbi_parts]) if sbi_parts \
        else np.zeros((0, size, size, 3), np.uint8)
    load_s = time.perf_counter() - t0
    train_idx, val_idx = split_by_group(crops.groups, cfg.val_fraction, cfg.seed)
    val_idx = balanced_subset(crops.labels, val_idx, cfg.val_max, cfg.seed)
    log.info("%d training crops (%d fake), %d validation, %d SBI-only reals; data read in %.0f s",
             len(train_idx), int(crops.labels[train_idx].sum()), len(val_idx), len(sbi_real), load_s)
    batches = BatchMaker(crops, train_idx, sbi_real, cfg, size)

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    out_dir = Path(cfg.out_dir) / cfg.name
    out_dir.mkdir(parents=True, exist_ok=True)
    losses: list[float] = []
    history: list[dict] = []
    best: dict | None = None
    best_path = out_dir / "best.safetensors"
    t_train = time.perf_counter()
    data_s = 0.0

    def validate(step: int) -> dict:
        nonlocal best
        if len(val_idx) == 0:
            return {}
        logits = predict_logits(model, crops.images[val_idx], dc.mean, dc.std, device)
        y = crops.labels[val_idx]
        rec = {"step": step, "auc": roc_auc(y, _sigmoid(logits)),
               "balanced_accuracy": balanced_accuracy(y, _sigmoid(logits)),
               "loss": float(loss_fn(torch.from_numpy(logits), torch.from_numpy(y.astype(np.float32))))}
        history.append(rec)
        log.info("step %d: validation AUC %.4f, BA %.4f, loss %.4f", step, rec["auc"] or 0,
                 rec["balanced_accuracy"] or 0, rec["loss"])
        if best is None or (rec["auc"] or 0) > (best["auc"] or 0):
            best = dict(rec, logits=logits)
            save_weights(model, best_path)
        model.train()
        return rec

    model.train()
    for step in range(1, cfg.steps + 1):
        td = time.perf_counter()
        xb, yb = batches()
        data_s += time.perf_counter() - td
        x = to_input(xb, dc.mean, dc.std, device)
        y = torch.from_numpy(yb).to(device)
        loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % log_every == 0 or step == 1:
            log.info("step %d/%d loss %.4f (mean of last %d: %.4f)", step, cfg.steps, losses[-1],
                     min(log_every, len(losses)), float(np.mean(losses[-log_every:])))
        if cfg.val_every and step % cfg.val_every == 0 and step != cfg.steps:
            validate(step)
    validate(cfg.steps)
    train_s = time.perf_counter() - t_train
    if best is None:  # no validation split: the last weights
        save_weights(model, best_path)
        best = {"step": cfg.steps, "auc": None, "balanced_accuracy": None, "logits": None}

    import timm

    filename = f"{cfg.name}-{cfg.version}.safetensors"
    final = out_dir / filename
    best_path.replace(final)
    sha = sha256_file(final)
    calibration = None
    if best.get("logits") is not None:
        calibration = fit_platt(best["logits"], crops.labels[val_idx]).model_dump()
        calibration["fitted_on"] = f"validation split of {', '.join(str(s.labels) for s in cfg.data)} (n={len(val_idx)})"
    record = {
        "member": cfg.name, "version": cfg.version, "architecture": cfg.architecture,
        "weights": {"file": filename, "sha256": sha, "size_bytes": final.stat().st_size, "dtype": "float16"},
        "config": json.loads(cfg.model_dump_json()),
        "data": [{"labels": str(s.labels), "sha256": sha256_file(s.labels)} for s in cfg.data + cfg.sbi_sources],
        "counts": {"train": int(len(train_idx)), "train_fake": int(crops.labels[train_idx].sum()),
                   "val": int(len(val_idx)), "val_fake": int(crops.labels[val_idx].sum()),
                   "sbi_only_reals": int(len(sbi_real))},
        "best": {k: v for k, v in best.items() if k != "logits"},
        "validation_history": history,
        "loss_curve": [round(float(np.mean(losses[i:i + log_every])), 4) for i in range(0, len(losses), log_every)],
        "calibration": calibration,
        "timing_s": {"data": round(load_s, 1), "train": round(train_s, 1), "batches": round(data_s, 1)},
        "device": device, "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__},
        "git_commit": _git_commit(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out_dir / "training-record.json").write_text(json.dumps(record, indent=2))
    entry = manifest_entry(cfg, record, size, dc)
    (out_dir / "manifest-entry.json").write_text(entry.model_dump_json(indent=2, exclude_none=True))
    record["manifest_entry"] = json.loads(entry.model_dump_json(exclude_none=True))
    return record


def manifest_entry(cfg: TrainConfig, record: dict, size: int, dc) -> Member:
    best = record["best"]
    metrics = {}
    if best.get("auc") is not None:
        metrics = {"val_auc": round(best["auc"], 4), "val_balanced_accuracy": round(best["balanced_accuracy"], 4)}
    return Member(
        name=cfg.name, version=cfg.version, architecture=cfg.architecture,
        description=cfg.description or f"{cfg.architecture} trained by deepfake-train ({record['counts']['train']} "
                                       f"crops, {cfg.steps} steps).",
        input_size=size if size != dc.input_size else None,
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
    return TrainConfig.model_validate(raw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deepfake-train", description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a top-level config value (TOML syntax), e.g. --set steps=50")
    p.add_argument("--manifest", type=Path, help="upsert the new entry into this manifest file")
    p.add_argument("--ship", type=Path, help="also copy weights and training record into this folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(args.config, args.overrides)
    record = train(cfg)
    out = Path(cfg.out_dir) / cfg.name
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


if __name__ == "__main__":
    sys.exit(main())


def calibrate_members(manifest: Manifest, store, labels: Path, group: str | None, names: list[str] | None,
                      val_fraction: float = 0.15, seed: int = 0, limit: int | None = None,
                      device: str = "cpu") -> dict[str, dict]:
    """Fit each member's Platt calibration on the validation split of a face-crop set
    (the same split ``deepfake-train`` holds out: by ``group``, same seed and fraction)."""
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
        _, val_idx = split_by_group(crops.groups, val_fraction, seed)
        val_idx = balanced_subset(crops.labels, val_idx, limit, seed)
        logits = predict_logits(mm.model, crops.images[val_idx], mm.mean, mm.std, device)
        y = crops.labels[val_idx]
        platt = fit_platt(logits, y)
        platt.fitted_on = f"validation split of {labels} by {group} (n={len(val_idx)})"
        out[member.name] = {"calibration": platt.model_dump(),
                            "raw_auc": roc_auc(y, _sigmoid(logits)),
                            "raw_balanced_accuracy": balanced_accuracy(y, _sigmoid(logits)),
                            "calibrated_balanced_accuracy": balanced_accuracy(y, platt.apply(logits))}
    return out
