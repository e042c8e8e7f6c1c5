"""The model card as data, generated from the manifest and the stored measurements.

``detector/measurements/*.json`` hold what ``deepfake-eval --save``,
``deepfake-robustness --out`` and ``deepfake-weights calibrate`` measured (each file
says on what data and with which members); nothing in the card's numbers is typed by
hand. No torch is needed: the API and the bots build it from files. ``summary()`` is the
short text the bots send.
"""

from __future__ import annotations

import json
from pathlib import Path

from .manifest import Manifest, load_manifest
from .report import AUTHENTIC_BELOW, MANIPULATED_FROM, REPORT_VERSION

MEASUREMENTS = Path(__file__).with_name("measurements")

INTENDED_USE = (
    "A first-pass signal for journalists and fact-checkers: it estimates how likely it is that the faces "
    "in a video or image were synthesised or swapped. It is one input to a verification, never a verdict "
    "on its own.")

CAVEATS = [
    "It judges faces only: a medium without a detectable face gets no score, and manipulations that do "
    "not touch faces (cheap edits, misleading context, synthetic voices) are not detected.",
    f"Bands: below {AUTHENTIC_BELOW:.0%} likely authentic, from {MANIPULATED_FROM:.0%} likely manipulated, "
    "uncertain between. Each detector's output is calibrated on held-out DFDC faces; on other sources the "
    "probabilities are less exact.",
    "The result says 'inconclusive' instead of giving a verdict when the faces are too small, the file is "
    "heavily compressed, or too few frames show a face: the detectors' numbers are not evidence there.",
    "The default detector is one small network (MobileNetV2, trained here on DFDC faces and Self-Blended "
    "Images of LFW and DFDC faces). New generation methods, filters and re-encodings can fool it; a low "
    "score does not prove a medium authentic. Small faces in real videos (a crowd, a wide shot) score "
    "higher than real photos: on the measured real clips it said 'uncertain', not 'likely authentic'.",
    "A deliberate attacker who knows the models can make a fake face pass (see 'Robustness').",
    "A video's score is that of its most suspicious shot and person: one manipulated face is enough.",
    "People across shots are linked by face likeness (dlib descriptors): two look-alikes can be taken for one "
    "person and one person seen very differently for two. The threshold errs toward splitting: on held-out "
    "pairs no two different people were joined (0 of 38 people on screen together in a crowd video), and "
    "15 of 17 same-person pairs were.",
    "Heat maps ('why') are Grad-CAM maps: where, in the pixels the detectors saw, a change would most move "
    "the score, averaged over the detectors that allow it. They are coarse (a 7x7 grid for the default "
    "detector), show where the models looked rather than which pixels were manipulated, and look just as "
    "plausible on authentic faces; they are no evidence on their own.",
    "Readers' feedback ('looks right / looks wrong') counts disagreement, not accuracy: readers are not "
    "experts and cannot see what the detectors saw. The card's 'user_feedback' says how many verdicts "
    "readers disputed.",
]

VERSION_HISTORY = [
    {"report_version": "1.0.0", "change": "MeVer pipeline with the public MesoNet detectors (2018); "
                                          "uncalibrated scores."},
    {"report_version": "1.1.0", "change": "Every member calibrated (Platt, held-out DFDC faces); reliability "
                                          "gate (inconclusive because ...); public DFDC-winner and SBI "
                                          "checkpoints can be installed. Five small MeVer-style members were "
                                          "trained here (DFDC faces + Self-Blended Images) and ship, but stay "
                                          "out of the default ensemble: better than MesoNet on held-out DFDC "
                                          "faces, worse on the devset."},
    {"report_version": "1.2.0", "change": "Each member scores the face crop it was trained on (the DFDC "
                                          "crops' square x0.85 for the members trained here); the report names "
                                          "each member's crop and how the scores are combined. A MobileNetV2 "
                                          "member trained on all 33,109 DFDC faces (four-way split by source "
                                          "video) reaches AUC 0.92 on the DFDC test faces; the written ensemble "
                                          "rule chose it alone, but it loses to the MesoNet default on the "
                                          "devset and calls real photos manipulated, so the default is unchanged."},
    {"report_version": "1.3.0", "change": "The default ensemble is meve-mobilenetv2 4.0.0 under the written "
                                          "rule (it replaces the MesoNet members): trained with press-photo "
                                          "faces as reals too, without DFDC's all-real narrow faces, and with "
                                          "low-resolution faces of both classes. DFDC test faces AUC 0.92 "
                                          "(MesoNet: 0.60), devset videos 0.90 (0.87) with balanced accuracy "
                                          "0.89 (0.78); no real photo of the check set called manipulated."},
    {"report_version": "1.4.0", "change": "Plain words for readers: what the bands mean, what a shot is and "
                                          "which is the most suspicious, inconclusive reasons with what to do next."},
    {"report_version": "1.5.0", "change": "People across shots: each shot's clusters linked into people over "
                                          "the whole video (score = max over their clusters); a Grad-CAM heat "
                                          "map of each person's most suspicious face, with one sentence."},
]


def _read(name: str, folder: Path) -> dict | None:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def _level(m: dict | None) -> dict | None:
    if not m:
        return None
    return {"ensemble": m["ensemble"], "members": m["members"]}


def measurements(folder: Path = MEASUREMENTS) -> dict:
    """Every stored evaluation, in the card's shape."""
    out: dict = {"evaluations": [], "robustness": None}
    for f in sorted(folder.glob("eval-*.json")) if folder.is_dir() else []:
        res = json.loads(f.read_text())
        out["evaluations"].append({
            "name": f.stem[len("eval-"):],
            "data": res.get("data", {}),
            "rows": res.get("rows"),
            "video_level": _level(res.get("video_level")),
            "face_level": _level(res.get("face_level")),
            "per_manipulation": res.get("per_manipulation", {}),
        })
    out["robustness"] = _read("robustness.json", folder)
    return out


def default_members(manifest: Manifest) -> set[str]:
    """The members a user's check is scored with: the ensemble rule's, else every default one with weights."""
    if manifest.ensemble is not None:
        return set(manifest.ensemble.members)
    return {m.name for m in manifest.members if m.default and m.weights is not None}


def model_card(manifest: Manifest | None = None, folder: Path = MEASUREMENTS) -> dict:
    from .settings import DetectorSettings

    manifest = manifest or load_manifest()
    s = DetectorSettings()
    meas = measurements(folder)
    default = default_members(manifest)
    for ev in meas["evaluations"]:  # which evaluations describe what users get
        ev["default_ensemble"] = set(ev["data"].get("members", [])) == default
    meas["evaluations"].sort(key=lambda ev: (not ev["default_ensemble"], ev["name"]))  # what users get first
    return {
        "report_version": REPORT_VERSION,
        "intended_use": INTENDED_USE,
        "caveats": CAVEATS,
        "bands": {"likely_authentic_below": AUTHENTIC_BELOW, "likely_manipulated_from": MANIPULATED_FROM},
        "reliability_gate": {"min_face_px": s.gate_min_face_px, "min_video_bits_per_pixel": s.gate_min_video_bpp,
                             "min_jpeg_quality": s.gate_min_jpeg_quality, "min_face_frames": s.gate_min_face_frames},
        "members": [{
            "name": m.name, "version": m.version, "architecture": m.architecture,
            "trained": m.weights is not None, "in_default_ensemble": m.name in default, "licence": m.licence,
            "training_data": m.training_data, "description": m.description, "metrics": m.metrics,
            "calibration": m.calibration, "crop": m.crop.label() if m.crop else None,
        } for m in manifest.members],
        "ensemble": manifest.ensemble.model_dump() if manifest.ensemble else None,
        "evaluations": meas["evaluations"],
        "robustness": meas["robustness"],
        "version_history": VERSION_HISTORY,
    }
