"""The model manifest: every ensemble member, its weights (URL + sha256) and provenance.

The packaged ``manifest.json`` is the default; ``DEEPFAKE_MANIFEST`` names another
(the training issue writes entries for the members it trains). A member is scored
only when its weights file is in the cache and matches the manifest's sha256.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

PACKAGED = Path(__file__).with_name("manifest.json")


class WeightsRef(BaseModel):
    url: str
    sha256: str
    filename: str
    format: Literal["safetensors", "keras-h5-mesonet"]
    size_bytes: int | None = None


class Member(BaseModel):
    name: str
    version: str
    architecture: str
    description: str = ""
    # Data config overrides; the architecture's own data_config is used when absent.
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    weights: WeightsRef | None = None
    licence: str = "unknown"
    training_data: str = "untrained"
    metrics: dict[str, float] = Field(default_factory=dict)
    default: bool = True  # part of the default ensemble when its weights are present


class Manifest(BaseModel):
    manifest_version: int = 1
    members: list[Member]

    def get(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"no member {name!r} in the manifest")


def load_manifest(path: Path | str | None = None) -> Manifest:
    path = Path(path or os.environ.get("DEEPFAKE_MANIFEST") or PACKAGED)
    return Manifest.model_validate(json.loads(path.read_text()))
