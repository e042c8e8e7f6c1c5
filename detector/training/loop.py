"""The training loop: steps over balanced batches, checkpoints that resume bit for bit,
validation, the best weights kept, the held-out sides measured, the training record."""

from __future__ import annotations

import json
import logging
import platform
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..calibration import Platt, fit_platt, sigmoid
from ..hashing import sha256_file
from ..metrics import balanced_accuracy, roc_auc
from ..precision import autocast, resolve_precision
from ..settings import DetectorSettings
from ..splits import balanced_subset, split_by_group
from .artefacts import manifest_entry
from .config import RESUMABLE_CHANGES, TrainConfig, lr_at, resolve_crop
from .data import BatchMaker, Crops, FaceStage, load_crops
from .model import build_model, predict_logits, save_weights, to_input

log = logging.getLogger(__name__)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


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

    from ..pipeline import resolve_device

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
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
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
