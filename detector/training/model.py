"""The model a run trains: built from the registry with its initialisation, its inputs
(normalised, channels_last where it pays), its logits over a set of crops, and its weights
written as fp16 safetensors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..hashing import sha256_file
from ..precision import autocast
from .config import TrainConfig

log = logging.getLogger(__name__)


def build_model(cfg: TrainConfig):
    import torch

    from ..models import create_model
    from ..models.checkpoints import init_from_imagenet, read_checkpoint

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


def save_weights(model, path: Path) -> str:
    """fp16 safetensors (integer buffers kept as they are); returns the sha256."""
    from safetensors.torch import save_file

    sd = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    return sha256_file(path)
