"""Convert the public MesoNet Keras ``.h5`` weights to a PyTorch state dict.

Keras numbers layers in creation order (``conv2d_7``, ``batch_normalization_2``...),
and :mod:`detector.models.mesonet` creates its layers in the same order, so the
n-th Keras conv is the n-th PyTorch conv. Kernels go from (h, w, in, out) to
(out, in, h, w); dense kernels are transposed (the flatten is channels-last, as in
Keras). Only h5py is needed, no TensorFlow.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn


def _numbered(group_names: list[str], prefix: str) -> list[str]:
    names = [n for n in group_names if re.fullmatch(rf"{prefix}_\d+", n)]
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))


def read_keras_h5(path: Path | str) -> dict[str, dict[str, np.ndarray]]:
    import h5py

    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in root:
            weights = {}

            def visit(name, obj, weights=weights):
                if isinstance(obj, h5py.Dataset):
                    weights[name.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(obj)

            root[layer].visititems(visit)
            if weights:
                out[layer] = weights
    return out


def keras_to_state_dict(keras: dict[str, dict[str, np.ndarray]], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map Keras layers onto ``model`` (Meso4 or MesoInception4) by creation order."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    conv_names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    bn_names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    fc_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    k_convs = _numbered(list(keras), "conv2d")
    k_bns = _numbered(list(keras), "batch_normalization")
    k_dense = _numbered(list(keras), "dense")
    if (len(k_convs), len(k_bns), len(k_dense)) != (len(convs), len(bn_names), len(fc_names)):
        raise ValueError(
            f"layer counts differ: keras conv/bn/dense {len(k_convs)}/{len(k_bns)}/{len(k_dense)}, "
            f"model {len(convs)}/{len(bn_names)}/{len(fc_names)}")
    sd: dict[str, torch.Tensor] = {}
    for kn, tn in zip(k_convs, conv_names):
        w = keras[kn]
        sd[f"{tn}.weight"] = torch.from_numpy(w["kernel"].transpose(3, 2, 0, 1).copy())
        sd[f"{tn}.bias"] = torch.from_numpy(w["bias"].copy())
    for kn, tn in zip(k_bns, bn_names):
        w = keras[kn]
        sd[f"{tn}.weight"] = torch.from_numpy(w["gamma"].copy())
        sd[f"{tn}.bias"] = torch.from_numpy(w["beta"].copy())
        sd[f"{tn}.running_mean"] = torch.from_numpy(w["moving_mean"].copy())
        sd[f"{tn}.running_var"] = torch.from_numpy(w["moving_variance"].copy())
        sd[f"{tn}.num_batches_tracked"] = torch.tensor(0)
    for kn, tn in zip(k_dense, fc_names):
        w = keras[kn]
        sd[f"{tn}.weight"] = torch.from_numpy(w["kernel"].T.copy())
        sd[f"{tn}.bias"] = torch.from_numpy(w["bias"].copy())
    expected = model.state_dict()
    for k, v in sd.items():
        if expected[k].shape != v.shape:
            raise ValueError(f"{k}: keras shape {tuple(v.shape)} != model {tuple(expected[k].shape)}")
    return sd


def convert(h5_path: Path | str, architecture: str) -> dict[str, torch.Tensor]:
    from .models import create_model

    model = create_model(architecture)
    return keras_to_state_dict(read_keras_h5(h5_path), model)
