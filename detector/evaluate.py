"""``deepfake-eval LABELS.csv [--json] [--faces] [--out DIR]``: measured accuracy.

The CSV has at least ``path,label`` (paths relative to the CSV, labels ``real``/``fake``);
a ``manipulation`` column gives the per-manipulation table. Each medium goes through the
whole pipeline (video-level: the report's score; face-level: every scored face with its
medium's label); ``--faces`` scores each listed image as one already-cropped face. Prints
AUC and balanced accuracy (the paper's metrics) for the ensemble and each member, and
writes a ROC curve and a reliability diagram as PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DetectorError
from .metrics import THRESHOLD, balanced_accuracy, reliability, roc_auc, roc_curve

FACE_BATCH = 64  # --faces: crops scored per ensemble call


# -- evaluation ----------------------------------------------------------------------------

@dataclass
class Scores:
    labels: list[bool] = field(default_factory=list)
    ensemble: list[float] = field(default_factory=list)
    members: dict[str, list[float]] = field(default_factory=dict)
    manipulation: list[str] = field(default_factory=list)

    def add(self, fake: bool, score: float, members: dict[str, float | None], manipulation: str = "") -> None:
        self.labels.append(fake)
        self.ensemble.append(score)
        for k, v in members.items():
            self.members.setdefault(k, []).append(np.nan if v is None else v)
        self.manipulation.append(manipulation)

    def metrics(self) -> dict:
        def one(scores):
            s = np.asarray(scores, dtype=float)
            ok = ~np.isnan(s)
            y = np.asarray(self.labels)[ok]
            return {"n": int(ok.sum()), "auc": roc_auc(y, s[ok]), "balanced_accuracy": balanced_accuracy(y, s[ok])}

        return {"ensemble": one(self.ensemble), "members": {k: one(v) for k, v in self.members.items()}}


def read_labels(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise SystemExit(f"{csv_path}: needs the columns path,label")
    for r in rows:
        if r["label"] not in ("real", "fake"):
            raise SystemExit(f"{csv_path}: label must be real or fake, not {r['label']!r}")
    return rows


def evaluate(csv_path: Path, analyzer, faces_only: bool = False, progress=None,
             split_by: str | None = None, limit: int | None = None, side: str = "test") -> dict:
    """``split_by``: evaluate only one side (``side``: test by default) of the split by
    that column (:mod:`detector.splits`, as ``deepfake-train`` splits); ``limit``: a
    balanced subset of at most that many rows."""
    from PIL import Image

    from .fetch import fetch
    from .splits import balanced_subset, split_by_group

    rows = read_labels(csv_path)
    idx = np.arange(len(rows))
    if split_by:
        if split_by not in rows[0]:
            raise SystemExit(f"{csv_path}: no column {split_by!r}")
        idx = split_by_group([r[split_by] for r in rows])[side]
    idx = balanced_subset([int(r["label"] == "fake") for r in rows], idx, limit)
    rows = [rows[i] for i in idx]
    media, face_level = Scores(), Scores()
    skipped = []
    items: list[dict] = []  # media: each one's score and verdict as a user would see it
    pending: list[tuple[np.ndarray, bool, str]] = []  # face crops, scored a batch at a time

    def score_pending():
        if pending:
            mean, per = analyzer.ensemble.predict([rgb for rgb, _, _ in pending])
            for k, (_, fake, manip) in enumerate(pending):
                face_level.add(fake, float(mean[k]), {n: float(v[k]) for n, v in per.items()}, manip)
            pending.clear()

    for i, row in enumerate(rows):
        path = csv_path.parent / row["path"]
        fake = row["label"] == "fake"
        manip = (row.get("manipulation") or "unknown") if fake else "real"  # reals form one group
        if progress:
            progress(i, len(rows), row["path"])
        if faces_only:
            pending.append((np.asarray(Image.open(path).convert("RGB")), fake, manip))
            if len(pending) == FACE_BATCH:
                score_pending()
            continue
        try:
            a = analyzer.analyze(fetch(str(path), path.parent, analyzer.settings), gallery=False)
        except DetectorError as e:
            skipped.append({"path": row["path"], "reason": e.detail})
            continue
        if a.report.score is None:
            skipped.append({"path": row["path"], "reason": "no face scored"})
            items.append({"path": row["path"], "label": row["label"], "score": None,
                          "verdict": a.report.verdict.value})
            continue
        media.add(fake, a.report.score, a.member_scores, manip)
        items.append({"path": row["path"], "label": row["label"], "score": a.report.score,
                      "verdict": a.report.verdict.value})
        for score, per in a.face_scores:
            face_level.add(fake, score, per, manip)
    score_pending()
    result = {"rows": len(rows), "skipped": skipped, "face_level": face_level.metrics()}
    if not faces_only:
        result["video_level"] = media.metrics()
        result["items"] = items
        result["verdicts"] = {lab: {v: sum(1 for it in items if it["label"] == lab and it["verdict"] == v)
                                    for v in sorted({it["verdict"] for it in items})} for lab in ("real", "fake")}
    main = media if not faces_only else face_level
    top = result["face_level" if faces_only else "video_level"]["ensemble"]
    result.update(auc=top["auc"], balanced_accuracy=top["balanced_accuracy"])
    result["per_manipulation"] = per_manipulation(main)
    result["_scores"] = main
    return result


def per_manipulation(sc: Scores) -> dict[str, dict]:
    out = {}
    y = np.asarray(sc.labels)
    s = np.asarray(sc.ensemble)
    for m in sorted(set(sc.manipulation)):
        idx = np.asarray(sc.manipulation) == m
        correct = (s[idx] >= THRESHOLD) == y[idx]
        out[m] = {"n": int(idx.sum()), "mean_score": float(s[idx].mean()), "accuracy": float(correct.mean())}
    return out


def plots(sc: Scores, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    curves = {"ensemble": sc.ensemble, **sc.members}
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    for name, scores in curves.items():
        s = np.asarray(scores, dtype=float)
        ok = ~np.isnan(s)
        y = np.asarray(sc.labels)[ok]
        auc = roc_auc(y, s[ok])
        if auc is None:
            continue
        fpr, tpr = roc_curve(y, s[ok])
        ax.plot(fpr, tpr, lw=3 if name == "ensemble" else 1.5, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fake caught)")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=8)
    roc = out_dir / "roc.png"
    fig.savefig(roc, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    for name, scores in curves.items():
        s = np.asarray(scores, dtype=float)
        ok = ~np.isnan(s)
        pts = reliability(np.asarray(sc.labels)[ok], s[ok])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", lw=3 if name == "ensemble" else 1.2,
                    label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("mean predicted probability of manipulation")
    ax.set_ylabel("fraction that is fake")
    ax.set_title("Reliability")
    ax.legend(fontsize=8)
    rel = out_dir / "reliability.png"
    fig.savefig(rel, bbox_inches="tight")
    plt.close(fig)
    return [roc, rel]


def _fmt(v) -> str:
    return "   -  " if v is None else f"{v:6.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deepfake-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("labels", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--faces", action="store_true", help="each listed image is one cropped face")
    p.add_argument("--out", type=Path, default=Path("eval-out"), help="folder for roc.png and reliability.png")
    p.add_argument("--split-by", metavar="COL", help="only one side of the split by COL (as deepfake-train splits)")
    p.add_argument("--side", default="test", choices=["train", "val", "calibration", "test"],
                   help="with --split-by: which side (default: test, which nothing was fitted on)")
    p.add_argument("--limit", type=int, help="a balanced subset of at most this many rows")
    p.add_argument("--save", type=Path, help="write the JSON result to this file too")
    p.add_argument("--device")
    p.add_argument("--frames-per-shot", type=int)
    a = p.parse_args(argv)
    from .pipeline import Analyzer
    from .settings import DetectorSettings

    over = {}
    if a.frames_per_shot:
        over = {"frames_per_shot_cpu": a.frames_per_shot, "frames_per_shot_gpu": a.frames_per_shot}
    try:
        analyzer = Analyzer(DetectorSettings(**over), device=a.device).load()
    except DetectorError as e:
        print(f"deepfake-eval: {e.detail}", file=sys.stderr)
        return 1
    res = evaluate(a.labels, analyzer, a.faces,
                   progress=lambda i, n, path: print(f"  [{i + 1}/{n}] {path}", file=sys.stderr),
                   split_by=a.split_by, limit=a.limit, side=a.side)
    sc = res.pop("_scores")
    files = plots(sc, a.out)
    res["plots"] = [str(f) for f in files]
    res["data"] = {"labels": str(a.labels), "split": f"{a.side} by {a.split_by}" if a.split_by else "all",
                   "faces_only": a.faces, "members": [m.member.name for m in analyzer.ensemble.members]}
    if a.save:
        a.save.parent.mkdir(parents=True, exist_ok=True)
        a.save.write_text(json.dumps(res, indent=2))
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    levels = [("face-level", res["face_level"])] if a.faces else [("video-level", res["video_level"]),
                                                                   ("face-level", res["face_level"])]
    for title, m in levels:
        print(f"\n{title}: {'model':<22} {'n':>4} {'AUC':>6} {'BA':>6}")
        print(f"{'':13}{'ensemble':<22} {m['ensemble']['n']:>4} {_fmt(m['ensemble']['auc'])} "
              f"{_fmt(m['ensemble']['balanced_accuracy'])}")
        for name, mm in m["members"].items():
            print(f"{'':13}{name:<22} {mm['n']:>4} {_fmt(mm['auc'])} {_fmt(mm['balanced_accuracy'])}")
    print(f"\nper manipulation (ensemble, threshold {THRESHOLD}): {'n':>4} {'mean':>6} {'acc':>6}")
    for k, v in res["per_manipulation"].items():
        print(f"  {k:<44} {v['n']:>4} {v['mean_score']:6.3f} {v['accuracy']:6.3f}")
    for lab, counts in res.get("verdicts", {}).items():
        if sum(counts.values()):
            print(f"verdicts on the {lab} media: " + ", ".join(f"{v} {n}" for v, n in counts.items() if n))
    for s in res["skipped"]:
        print(f"skipped {s['path']}: {s['reason']}")
    print(f"\nplots: {', '.join(res['plots'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
