"""The model card as data: what the ensemble is, what it was trained on, its limits.

Built from the manifest (no torch needed), served by the API and summarised by the bots.
"""

from __future__ import annotations

from .manifest import Manifest, load_manifest
from .report import AUTHENTIC_BELOW, MANIPULATED_FROM, REPORT_VERSION

INTENDED_USE = (
    "A first-pass signal for journalists and fact-checkers: it estimates how likely it is that the faces "
    "in a video or image were synthesised or swapped. It is one input to a verification, never a verdict "
    "on its own.")

CAVEATS = [
    "It judges faces only: a medium without a detectable face gets no score, and manipulations that do "
    "not touch faces (cheap edits, misleading context, synthetic voices) are not detected.",
    f"Bands: below {AUTHENTIC_BELOW:.0%} likely authentic, from {MANIPULATED_FROM:.0%} likely manipulated, "
    "uncertain between. The scores are not calibrated probabilities yet.",
    "The detectors in use today are the public MesoNet models (2018), trained on older face-swap and "
    "Face2Face data; they miss many recent deepfakes and can flag heavily compressed real videos.",
    "Small, dark, blurred or heavily compressed faces make the scores less reliable.",
    "A video's score is that of its most suspicious shot and person: one manipulated face is enough.",
]


def model_card(manifest: Manifest | None = None) -> dict:
    manifest = manifest or load_manifest()
    return {
        "report_version": REPORT_VERSION,
        "intended_use": INTENDED_USE,
        "caveats": CAVEATS,
        "bands": {"likely_authentic_below": AUTHENTIC_BELOW, "likely_manipulated_from": MANIPULATED_FROM},
        "members": [{
            "name": m.name, "version": m.version, "architecture": m.architecture,
            "trained": m.weights is not None, "licence": m.licence, "training_data": m.training_data,
            "description": m.description, "metrics": m.metrics,
        } for m in manifest.members],
    }
