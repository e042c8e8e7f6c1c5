"""A registry of architectures keyed by name, after timm's ``@register_model``.

Every registered model returns one *fake logit* per image (``sigmoid`` gives
P(fake)) and carries a ``data_config``: input size, mean and std, read by the
ensemble instead of being hard-coded there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


@dataclass(frozen=True)
class DataConfig:
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def create_model(name: str, **kwargs) -> nn.Module:
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    model = fn(**kwargs)
    model.architecture = name
    return model


def list_models() -> list[str]:
    return sorted(_REGISTRY)
