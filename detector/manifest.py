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

from .faces import CropSpec

PACKAGED = Path(__file__).with_name("manifest.json")


class WeightsRef(BaseModel):
    # https://... or package://<path inside the detector package> (shipped in the repository)
    url: str
    # None: the publisher gives no checksum; the file is scored only after the user
    # pins the sha256 of the copy they trust (``deepfake-weights import-public``).
    sha256: str | None = None
    filename: str
    # safetensors / keras-h5-mesonet: this project's layouts. dfdc-selimsef and
    # sbi-efficientnet-pytorch: public detectors' own files, key-mapped on load.
    format: Literal["safetensors", "keras-h5-mesonet", "dfdc-selimsef", "sbi-efficientnet-pytorch"]
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
    # The face crop the member was trained on; None: the pipeline's (DEEPFAKE_FACE_MARGIN, square).
    crop: CropSpec | None = None
    weights: WeightsRef | None = None
    licence: str = "unknown"
    training_data: str = "untrained"
    metrics: dict[str, float] = Field(default_factory=dict)
    # Platt scaling of the fake logit, fitted on a validation split (detector.calibration).
    calibration: dict | None = None
    training_record: str | None = None  # file beside the weights: how they were made
    # Whether "auto" precision may score it under bfloat16 autocast: measured to keep its
    # probabilities within 0.01 of fp32 on the devset faces (bench/speed.py --precision-check).
    bf16_inference: bool = False
    default: bool = True  # part of the default ensemble (reported as skipped when it has no weights)
    optional: bool = False  # not default, but used once its weights are installed (public checkpoints)


class EnsembleRule(BaseModel):
    """How the default ensemble combines its members (written by ``deepfake-ensemble``).

    ``mean``: the mean of the members' calibrated probabilities. ``logistic``: stacking,
    ``P(fake) = sigmoid(bias + sum_i weights[i] * calibrated_logit_i)``, fitted on the
    calibration split. ``members`` is the default ensemble, chosen by the written rule in
    :mod:`detector.ensemble_rule`; ``selection`` records what it measured.
    """

    method: Literal["mean", "logistic"] = "mean"
    members: list[str]
    weights: dict[str, float] = Field(default_factory=dict)
    bias: float = 0.0
    fitted_on: str = ""
    selection: dict = Field(default_factory=dict)


class Manifest(BaseModel):
    manifest_version: int = 1
    members: list[Member]
    ensemble: EnsembleRule | None = None  # None: every default member, averaged

    def get(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"no member {name!r} in the manifest")


def load_manifest(path: Path | str | None = None) -> Manifest:
    path = Path(path or os.environ.get("DEEPFAKE_MANIFEST") or PACKAGED)
    return Manifest.model_validate(json.loads(path.read_text()))
