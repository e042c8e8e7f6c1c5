"""Detector architectures, registered by name (timm style): ``create_model(name)``."""

from .registry import create_model, list_models, register_model  # noqa: F401
from . import mesonet, meve  # noqa: E402  (importing registers the architectures)

__all__ = ["create_model", "list_models", "register_model", "mesonet", "meve"]
