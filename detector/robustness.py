"""``deepfake-robustness``: the MeVer paper's adversarial evaluation (its Table 3).

Projected Gradient Descent (IBM Adversarial Robustness Toolbox) on the whole ensemble,
white-box: the attacker sees every member, its calibration and the averaging, and pushes
*fake* faces towards "real" (a targeted attack on the real class) within an L1, L2 or
L-infinity ball around each face. Real faces are left alone, as an attacker who wants
a fake to pass would. Balanced accuracy is reported before and after, per norm.

  deepfake-robustness LABELS.csv [--faces] [--group COL --split val] [--limit N] [--json]

The faces are the label file's crops (``--faces``, e.g. ``../shared/faces/dfdc``) or
those the pipeline's face stage takes from its videos and images. Budgets are for
pixels in [0, 1] on the ensemble's common 224 px input: L-inf 8/255 (a common
"imperceptible" budget), L2 1.0, L1 100 (about 0.07% of the L1 mass of a 224 px face);
10 iterations with step eps/4, as ART's examples. The paper's exact budgets are not
restated here; the CLI takes others with ``--eps``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .metrics import balanced_accuracy, roc_auc

ATTACK_SIZE = 224
DEFAULT_BUDGETS = {"inf": 8 / 255, "2": 1.0, "1": 100.0}
DEFAULT_ITERATIONS = 10


def ensemble_module(ensemble, size: int = ATTACK_SIZE):
    """The ensemble as one differentiable module: (N, 3, size, size) in [0, 1] -> two
    logits (real, fake) whose softmax is (1 - p, p), p the ensemble's combined probability."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    members = ensemble.load().members

    class EnsembleModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.nets = nn.ModuleList(m.model for m in members)  # registered, so .to()/.eval() reach them

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = []
            for m in members:
                xi = x if m.input_size == x.shape[-1] else F.interpolate(
                    x, size=(m.input_size, m.input_size), mode="bilinear", align_corners=False)
                logits.append(m.logits(xi))
            p = ensemble.combine(torch.stack(logits)).clamp(1e-6, 1 - 1e-6)
            return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)

    return EnsembleModule().eval()


def pgd_attack(ensemble, faces: np.ndarray, norm: str, eps: float, iterations: int = DEFAULT_ITERATIONS,
               batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """Adversarial copies of ``faces`` ((N, S, S, 3) uint8 or float in [0, 1]) pushed
    towards the *real* class; returns float32 (N, 3, S, S) in [0, 1]."""
    import torch
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    x = faces.astype(np.float32) / (255.0 if faces.dtype == np.uint8 else 1.0)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    clf = PyTorchClassifier(model=ensemble_module(ensemble, x.shape[-1]), loss=torch.nn.CrossEntropyLoss(),
                            input_shape=x.shape[1:], nb_classes=2, clip_values=(0.0, 1.0),
                            device_type="cpu" if device == "cpu" else "gpu")
    attack = ProjectedGradientDescent(clf, norm=np.inf if norm == "inf" else int(norm), eps=eps,
                                      eps_step=eps / 4, max_iter=iterations, targeted=True,
                                      batch_size=batch_size, verbose=False)
    target = np.zeros((len(x), 2), np.float32)
    target[:, 0] = 1.0  # "real"
    return attack.generate(x=x, y=target).astype(np.float32)


def scores_of(ensemble, x_chw: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Ensemble fake probability for float (N, 3, S, S) in [0, 1] (the attack's own path)."""
    import torch

    module = ensemble_module(ensemble, x_chw.shape[-1])
    out = []
    with torch.inference_mode():
        for i in range(0, len(x_chw), batch_size):
            out.append(torch.softmax(module(torch.from_numpy(x_chw[i:i + batch_size])), 1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate_robustness(ensemble, faces: np.ndarray, labels: np.ndarray,
                        budgets: dict[str, float] | None = None, iterations: int = DEFAULT_ITERATIONS,
                        progress=None) -> dict:
    """Balanced accuracy (and AUC) before, and after PGD on the fakes, per norm."""
    budgets = budgets or DEFAULT_BUDGETS
    x = np.ascontiguousarray(faces.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
    clean = scores_of(ensemble, x)
    fake = labels == 1
    rows = [{"attack": "none", "norm": None, "eps": 0.0, "iterations": 0,
             "balanced_accuracy": balanced_accuracy(labels, clean), "auc": roc_auc(labels, clean),
             "fakes_detected": float((clean[fake] >= 0.5).mean()) if fake.any() else None}]
    for norm, eps in budgets.items():
        t0 = time.perf_counter()
        adv = pgd_attack(ensemble, faces[fake], norm, eps, iterations)
        s = clean.copy()
        s[fake] = scores_of(ensemble, adv)
        delta = adv - x[fake]
        rows.append({"attack": "PGD", "norm": f"L{norm}" if norm != "inf" else "Linf", "eps": eps,
                     "iterations": iterations, "balanced_accuracy": balanced_accuracy(labels, s),
                     "auc": roc_auc(labels, s), "fakes_detected": float((s[fake] >= 0.5).mean()),
                     "mean_linf": float(np.abs(delta).reshape(len(delta), -1).max(1).mean()),
                     "seconds": round(time.perf_counter() - t0, 1)})
        if progress:
            progress(rows[-1])
    return {"n": int(len(labels)), "n_fake": int(fake.sum()), "rows": rows,
            "members": [m.member.name for m in ensemble.members]}


def main(argv: list[str] | None = None) -> int:
    from .faces import CropSpec
    from .pipeline import Analyzer
    from .settings import DetectorSettings
    from .splits import balanced_subset, split_by_group
    from .training import DataSource, FaceStage, load_crops

    p = argparse.ArgumentParser(prog="deepfake-robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("labels", type=Path)
    p.add_argument("--faces", action="store_true", help="rows are face crops already")
    p.add_argument("--group", help="split column (as deepfake-train); with --split SIDE, only that side")
    p.add_argument("--split", choices=["all", "val", "calibration", "test"], default="all")
    p.add_argument("--limit", type=int, default=128, help="balanced subset of at most this many faces")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    p.add_argument("--eps", action="append", default=[], metavar="NORM=EPS",
                   help="budgets, e.g. --eps inf=0.03 --eps 2=0.5 (default: Linf 8/255, L2 1.0, L1 100)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, help="write the JSON result here too")
    args = p.parse_args(argv)

    settings = DetectorSettings()
    analyzer = Analyzer(settings)
    ensemble = analyzer.ensemble.load()
    src = DataSource(labels=args.labels.resolve(), faces=args.faces, group=args.group)
    stage = None if args.faces else FaceStage(settings, analyzer.device, CropSpec(margin=settings.face_margin))
    crops = load_crops(src, ATTACK_SIZE, 0, settings.cache_dir / "train-crops", stage)
    idx = np.arange(len(crops.labels))
    if args.split != "all":
        idx = split_by_group(crops.groups)[args.split]
    idx = balanced_subset(crops.labels, idx, args.limit, 0)
    budgets = dict(DEFAULT_BUDGETS)
    if args.eps:
        budgets = {k: float(v) for k, v in (e.split("=", 1) for e in args.eps)}
    log = (lambda r: None) if args.json else (lambda r: print(f"  {r['norm']}: BA {r['balanced_accuracy']:.3f} "
                                                                 f"({r['seconds']} s)", file=sys.stderr))
    res = evaluate_robustness(ensemble, crops.images[idx], crops.labels[idx], budgets, args.iterations, log)
    res["data"] = f"{args.labels} ({args.split}, {res['n']} faces, {res['n_fake']} fake)"
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"PGD on the ensemble ({', '.join(res['members'])}), {res['data']}")
    print(f"{'attack':<8} {'norm':<5} {'eps':>8} {'iters':>5} {'BA':>6} {'AUC':>6} {'fakes caught':>12}")
    for r in res["rows"]:
        print(f"{r['attack']:<8} {r['norm'] or '-':<5} {r['eps']:>8.4g} {r['iterations']:>5} "
              f"{r['balanced_accuracy']:>6.3f} {r['auc']:>6.3f} {r['fakes_detected']:>12.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
