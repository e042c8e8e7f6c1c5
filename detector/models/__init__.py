"""Detector architectures, registered by name (timm style): ``create_model(name)``."""

from . import mesonet, meve
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "mesonet", "meve"]
