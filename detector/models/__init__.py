"""Detector architectures, registered by name (timm style): ``create_model(name)``."""

from .registry import create_model, list_models, register_model  # noqa: F401
from . import mesonet, meve  # noqa: F401,E402  (registers the architectures)
