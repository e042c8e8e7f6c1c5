"""What a finished run leaves for serving: its manifest entry (metrics as measured, calibration
fitted on the calibration split), the upsert into a manifest, and refitting members' calibration."""

from __future__ import annotations

import logging
from pathlib import Path

from ..calibration import fit_platt, sigmoid
from ..faces import CropSpec
from ..manifest import Manifest, Member, WeightsRef, load_manifest
from ..metrics import balanced_accuracy, roc_auc
from ..settings import DetectorSettings
from ..splits import balanced_subset, split_by_group
from .config import DataSource, TrainConfig
from .data import load_crops
from .model import predict_logits

log = logging.getLogger(__name__)


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


def calibrate_members(manifest: Manifest, store, labels: Path, group: str | None, names: list[str] | None,
                      seed: int = 0, limit: int | None = None, device: str = "cpu") -> dict[str, dict]:
    """Fit each member's Platt calibration on the calibration split of a face-crop set
    (the side ``deepfake-train`` keeps for it: by ``group``, :mod:`detector.splits`)."""
    from ..ensemble import MemberModel

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
