"""``deepfake-ensemble``: which members make the default ensemble, and with what weights.

  deepfake-ensemble collect --calibration FACES.csv --group COL --devset MEDIA.csv --out SCORES.json
  deepfake-ensemble fit SCORES.json [--out RULE.json] [--manifest detector/manifest.json]

``collect`` scores every candidate member (every manifest member with verified weights
that was not trained on the calibration or test side) on two sets, and stores their
calibrated logits:

* the **calibration** side of a face-crop set (:mod:`detector.splits`; DFDC faces by
  ``original_video``), never used for training or checkpoint choice;
* the **devset** media through the whole pipeline (each member its own crop), with the
  shot and face cluster of every scored face, so any combination's video score can be
  recomputed from the file.

``fit`` applies the written rule to that file, and nothing else:

1. A set of members S is combined by logistic stacking: ``P(fake) = sigmoid(b + sum
   w_i z_i)`` over the members' calibrated logits ``z_i``, fitted on the calibration
   side with both classes weighted equally (so 0.5 is the balanced decision point)
   and an L2 penalty of ``L2``.
2. S is judged by ``J(S) = (AUC on the calibration faces + AUC on the devset videos) / 2``,
   a video's score being the pipeline's aggregation of the stacked face scores
   (cluster mean, max over clusters and shots).
3. Greedy forward selection: start from the member with the best J, add the member
   that raises J most, stop when no member raises it by ``MIN_GAIN`` or more.
4. The chosen S, its weights and every step's J are written to ``--out`` and, to apply
   them, into the manifest's ``ensemble`` entry. The test side is not read. A choice
   that loses to the current default where users' media are (the devset, real photos)
   is recorded and not applied (``detector/measurements/ensemble-rule.json`` says why).

Because ``fit`` reads only the stored scores, anyone can check that the shipped weights
follow from them (a test does).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from .calibration import fit_logistic, sigmoid
from .manifest import EnsembleRule, Manifest, load_manifest
from .metrics import roc_auc

log = logging.getLogger(__name__)

L2 = 1e-2
MIN_GAIN = 0.005
CLIP = 30.0  # logits are clipped to +-CLIP before stacking (a saturated member stays finite)


def fit_stack(z: np.ndarray, y: np.ndarray, l2: float = L2) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression on member logits ``z`` (N, M): (weights, bias)."""
    y = np.asarray(y, np.float64)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("stacking needs real and fake examples")
    sw = np.where(y == 1, len(y) / (2 * n_pos), len(y) / (2 * n_neg))
    w = fit_logistic(np.clip(z, -CLIP, CLIP), y, sw, l2=l2)
    return w[:-1], float(w[-1])


def stacked(z: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return sigmoid(np.clip(z, -CLIP, CLIP) @ w + b)


def video_score(faces: list[dict], names: list[str], w: np.ndarray, b: float) -> float | None:
    """The pipeline's aggregation of stacked face scores: cluster mean, max over clusters and shots."""
    if not faces:
        return None
    z = np.array([[f["logits"][n] for n in names] for f in faces], np.float64)
    p = stacked(z, w, b)
    groups: dict[tuple[int, int], list[float]] = {}
    for f, pi in zip(faces, p):
        groups.setdefault((f["shot"], f["cluster"]), []).append(float(pi))
    return max(float(np.mean(v)) for v in groups.values())


def judge(scores: dict, names: list[str]) -> dict:
    """Fit the stack of ``names`` on the calibration side and measure J."""
    cal = scores["calibration"]
    y = np.asarray(cal["labels"])
    z = np.stack([np.asarray(cal["logits"][n], np.float64) for n in names], 1)
    w, b = fit_stack(z, y)
    cal_auc = roc_auc(y, stacked(z, w, b))
    vids = [(it["label"], video_score(it["faces"], names, w, b)) for it in scores["devset"]["items"]]
    vids = [(lab, s) for lab, s in vids if s is not None]
    dev_auc = roc_auc([lab for lab, _ in vids], [s for _, s in vids])
    j = (cal_auc + (dev_auc if dev_auc is not None else cal_auc)) / 2
    return {"members": list(names), "weights": [round(float(v), 6) for v in w], "bias": round(b, 6),
            "calibration_auc": round(cal_auc, 4), "devset_video_auc": None if dev_auc is None else round(dev_auc, 4),
            "devset_videos": len(vids), "J": round(j, 4)}


def choose(scores: dict, min_gain: float = MIN_GAIN) -> EnsembleRule:
    """The written rule (module docstring): greedy forward selection on J."""
    candidates = list(scores["members"])
    if not candidates:
        raise ValueError("no candidate members in the scores file")
    steps = []
    best = max((judge(scores, [n]) for n in candidates), key=lambda r: r["J"])
    steps.append(best)
    while True:
        rest = [n for n in candidates if n not in best["members"]]
        if not rest:
            break
        trial = max((judge(scores, best["members"] + [n]) for n in rest), key=lambda r: r["J"])
        if trial["J"] - best["J"] < min_gain:
            break
        best = trial
        steps.append(best)
    cal = scores["calibration"]
    return EnsembleRule(
        method="logistic", members=best["members"],
        weights={n: w for n, w in zip(best["members"], best["weights"])}, bias=best["bias"],
        fitted_on=f"calibration side of {cal['source']} (n={len(cal['labels'])}); members chosen with "
                  f"{scores['devset']['source']} ({best['devset_videos']} media)",
        selection={"rule": "greedy forward selection on J = (calibration AUC + devset video AUC) / 2, "
                           f"stop when the gain is under {min_gain}; class-balanced logistic stacking, L2 {L2}",
                   "candidates": candidates, "steps": steps})


# --------------------------------------------------------------------------- collect
def eligible(manifest: Manifest, store) -> tuple[list[str], dict[str, str]]:
    """Members with verified weights that never saw the calibration or test side."""
    ok, why = [], {}
    for m in manifest.members:
        if m.weights is None or store.status(m) != "verified":
            continue
        trained_here = m.training_record is not None
        if trained_here and not m.metrics.get("test_auc"):
            why[m.name] = "trained before the four-way split: its training rows include calibration/test faces"
            continue
        ok.append(m.name)
    return ok, why


def collect(manifest: Manifest, analyzer_factory, calibration_csv: Path, group: str, devset_csv: Path,
            names: list[str], progress=None) -> dict:
    """Every candidate's calibrated logits on the calibration faces and on the devset media."""
    from PIL import Image

    from .errors import DetectorError
    from .evaluate import read_labels
    from .fetch import fetch
    from .splits import split_by_group

    analyzer = analyzer_factory(names)
    rows = read_labels(calibration_csv)
    idx = split_by_group([r[group] for r in rows])["calibration"]
    labels, logits = [], {n: [] for n in names}
    for start in range(0, len(idx), 64):
        chunk = [rows[i] for i in idx[start:start + 64]]
        crops = [np.asarray(Image.open(calibration_csv.parent / r["path"]).convert("RGB")) for r in chunk]
        sc = analyzer.ensemble.score(crops)
        labels += [int(r["label"] == "fake") for r in chunk]
        for n in names:
            logits[n] += [round(float(v), 5) for v in sc.logits[n]]
        if progress:
            progress("calibration", start + len(chunk), len(idx))
    items = []
    dev_rows = read_labels(devset_csv)
    for k, r in enumerate(dev_rows):
        path = devset_csv.parent / r["path"]
        try:
            a = analyzer.analyze(fetch(str(path), path.parent, analyzer.settings), gallery=False)
        except DetectorError as e:
            log.warning("%s: %s", r["path"], e.detail)
            continue
        items.append({"path": r["path"], "label": int(r["label"] == "fake"),
                      "faces": [{"shot": f.shot, "cluster": f.cluster,
                                 "logits": {n: round(v, 5) for n, v in f.logits.items()}} for f in a.scored_faces]})
        if progress:
            progress("devset", k + 1, len(dev_rows))
    return {"members": names,
            "calibration": {"source": f"{calibration_csv.name} ({calibration_csv.parent.name}) by {group}",
                            "labels": labels, "logits": logits},
            "devset": {"source": f"{devset_csv.parent.name}/{devset_csv.name}", "items": items}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deepfake-ensemble", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="score every candidate member on the calibration faces and the devset")
    c.add_argument("--calibration", type=Path, required=True, help="face-crop label file (its calibration side)")
    c.add_argument("--group", default="original_video")
    c.add_argument("--devset", type=Path, required=True, help="media label file, scored through the pipeline")
    c.add_argument("--members", help="comma-separated candidates (default: every eligible member)")
    c.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("fit", help="apply the rule to a scores file; print it, or write it into a manifest")
    f.add_argument("scores", type=Path)
    f.add_argument("--manifest", type=Path, help="write the chosen ensemble into this manifest file (apply it)")
    f.add_argument("--out", type=Path, help="write the rule's result here (ensemble-rule.json)")
    f.add_argument("--decision", default="", help="with --out: why it is or is not applied")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.cmd == "collect":
        from .pipeline import Analyzer
        from .settings import DetectorSettings
        from .weights import WeightStore

        settings = DetectorSettings()
        manifest = load_manifest()
        names, why = eligible(manifest, WeightStore(settings.resolved_weights_dir()))
        if args.members:
            names = [n.strip() for n in args.members.split(",") if n.strip()]
        for n, reason in why.items():
            print(f"not a candidate: {n}: {reason}", file=sys.stderr)
        scores = collect(manifest, lambda ns: Analyzer(DetectorSettings(members=ns)).load(),
                         args.calibration.resolve(), args.group, args.devset.resolve(), names,
                         progress=lambda what, i, n: print(f"  {what} {i}/{n}", file=sys.stderr))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(scores) + "\n")
        print(f"scores of {', '.join(names)} written to {args.out}")
        return 0
    scores = json.loads(args.scores.read_text())
    rule = choose(scores)
    for st in rule.selection["steps"]:
        print(f"  {' + '.join(st['members']):<60} J {st['J']:.4f}  (calibration AUC {st['calibration_auc']:.4f}, "
              f"devset video AUC {st['devset_video_auc']})")
    print(json.dumps(rule.model_dump(exclude={"selection"}), indent=2))
    if args.out:
        applied = load_manifest().ensemble
        args.out.write_text(json.dumps({"rule": rule.model_dump(), "applied": applied is not None and
                                        applied.members == rule.members, "decision": args.decision}, indent=2) + "\n")
    if args.manifest:
        manifest = load_manifest(args.manifest)
        manifest.ensemble = rule
        for m in manifest.members:  # the flags say the same as the rule (optional members join once installed)
            m.default = m.name in rule.members
        args.manifest.write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n")
        print(f"written into {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
