"""How fast a check runs, stage by stage, before and after the fast path, and whether the
fast path still gives the same answers.

    python bench/speed.py [--members default|trained|a,b,...] [--device cpu|cuda] [--repeat N] [--devset]
                          [--precision-check] [FILES...]

For the devset videos and the crowd clip (or FILES), each setting runs in a process of
its own, as a worker would (models loaded once and warmed up on the first file, outside
the timings), and prints:
  * every stage's seconds, the total and the real-time factor (analysis time / clip length),
    and the share of the largest stage;
  * the peak memory (max RSS) of that process;
  * the ensemble's faces/s over the job's scored faces.
``before`` is the 1.x path (PySceneDetect pass + sampler pass, MTCNN on 1280 px frames,
every face embedded, fp32); ``after`` is the default settings. Then, per medium, how far
the score moved and how many faces scored before are scored after (same frame, IoU >= 0.5).
``--precision-check`` also scores every face of the fast path in fp32 and in bf16 and
prints the largest change of the ensemble's and of each member's probability.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "media"
STAGES = ["fetch", "probe", "shots", "decode", "faces", "embeddings", "crops", "clusters", "people", "scoring",
          "explain", "gallery"]
TRAINED = ["meso4-df", "meso4-f2f", "mesoinception4-df", "mesoinception4-f2f", "meve-lite0",
           "meve-lite0-detr-sine", "meve-lite0-detr-learned", "meve-lite0-multihead", "meve-mobilenetv2"]
CONFIGS = {
    "before": dict(decode="two-pass", detect_max_side=1280, detect_full_res_refine=False,
                   cluster_embeddings="all", precision="fp32", face_confirm_prob=None),
    "after": {},
}


def _members(arg: str) -> list[str] | None:
    if arg == "default":
        return None
    return TRAINED if arg == "trained" else arg.split(",")


def _settings(config: str, members, device: str, **extra):
    from detector.settings import DetectorSettings

    return DetectorSettings(members=members, device=device, **{**CONFIGS[config], **extra})


def measure(config: str, members, device: str, files: list[Path], repeat: int = 1) -> dict:
    """One setting over every file, in this process; with ``repeat``, the run of median total."""
    from detector.pipeline import Analyzer, run

    analyzer = Analyzer(_settings(config, members, device)).load()
    run(str(files[0]), analyzer)  # warm up (kernel selection, caches, matplotlib), as a worker that has run once
    rows = []
    for f in files:
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            a = run(str(f), analyzer)
            runs.append((time.perf_counter() - t, a))
        total, a = sorted(runs, key=lambda ta: ta[0])[len(runs) // 2]
        r = a.report
        rows.append(dict(file=f.name, duration=r.media.duration_s or 0.0, total=total, timings=r.timings_s,
                         score=r.score, shots=len(r.shots), scored=len(a.face_scores),
                         frames=(a.frames_decoded, a.frames_left_out, a.frames_redecoded),
                         scored_boxes=[(f.frame_index, f.box) for f in a.scored_faces]))
    return dict(rows=rows, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                members=[m.member.name for m in analyzer.ensemble.members],
                precision=", ".join(sorted({analyzer.ensemble.member_precision(m) for m in analyzer.ensemble.members})),
                device=analyzer.device)


def precision_check(members, device: str, files: list[Path]) -> None:
    """fp32 against the default ("auto": bf16 for the members measured to allow it) and
    against bf16 for every member (what decides each member's ``bf16_inference``)."""
    import numpy as np

    from detector.pipeline import Analyzer, run

    runs = {p: Analyzer(_settings("after", members, device, precision=p)).load() for p in ("fp32", "auto", "bf16")}
    shown = runs["auto"].ensemble
    print("auto precision: " + ", ".join(f"{m.member.name} {shown.member_precision(m)}" for m in shown.members))
    for other in ("auto", "bf16"):
        worst, worst_member, n = 0.0, {}, 0
        for f in files:
            fp32, low = (run(str(f), runs[p], gallery=False).face_scores for p in ("fp32", other))
            if len(fp32) != len(low):
                print(f"  {f.name}: {len(fp32)} faces in fp32, {len(low)} in {other} (detection differed)")
                continue
            n += len(fp32)
            for (s32, m32), (s16, m16) in zip(fp32, low):
                worst = max(worst, abs(s32 - s16))
                for k in m32:
                    worst_member[k] = max(worst_member.get(k, 0.0), abs(m32[k] - m16[k]))
            d = [abs(a[0] - b[0]) for a, b in zip(fp32, low)]
            print(f"  {other:>4} {f.name:<28} {len(d):>4} faces, ensemble |{other} - fp32| max "
                  f"{max(d, default=0):.4f} mean {float(np.mean(d)) if d else 0:.4f}")
        print(f"{other} vs fp32 on {n} faces: ensemble probability moved at most {worst:.4f}; per member: "
              + ", ".join(f"{k} {v:.4f}" for k, v in sorted(worst_member.items())))


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def table(name: str, result: dict) -> None:
    print(f"\n== {name}: {result['device']}, {result['precision']}, members: {', '.join(result['members'])}; "
          f"peak memory {result['peak_rss_mb']:.0f} MB")
    print(f"{'file':<26} {'dur s':>5} {'faces':>5} " + " ".join(f"{s[:9]:>9}" for s in STAGES)
          + f" {'total':>6} {'RTF':>5} {'top %':>5} {'faces/s':>7} {'score':>6}  (largest; frames decoded/left out/again)")
    for r in result["rows"]:
        t = r["timings"]
        top = max(STAGES, key=lambda s: t.get(s, 0.0))
        rate = r["scored"] / t["scoring"] if t.get("scoring") else 0.0
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        print(f"{r['file'][:26]:<26} {r['duration']:>5.1f} {r['scored']:>5} "
              + " ".join(f"{t.get(s, 0.0):>9.2f}" for s in STAGES)
              + f" {r['total']:>6.2f} " + (f"{r['total'] / r['duration']:>5.2f} " if r["duration"] else f"{'-':>5} ")
              + f"{100 * t.get(top, 0.0) / r['total']:>4.0f}% {rate:>7.1f} {score:>6}  ({top}; "
              + ("-" if r["frames"][0] is None else "/".join(map(str, r["frames"]))) + ")")


def compare(before: dict, after: dict) -> None:
    print(f"\n{'file':<26} {'before':>7} {'after':>7} {'|diff|':>7} {'scored before':>13} {'kept after':>10} {'after':>6}")
    worst = 0.0
    for b, a in zip(before["rows"], after["rows"]):
        kept = sum(1 for fb, bb in b["scored_boxes"]
                   if any(fa == fb and _iou(bb, ba) >= 0.5 for fa, ba in a["scored_boxes"]))
        if b["score"] is None or a["score"] is None:
            diff = "-" if b["score"] == a["score"] else "one unscored"
        else:
            d = abs(a["score"] - b["score"])
            worst = max(worst, d)
            diff = f"{d:.4f}"
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"{b['file'][:26]:<26} {fmt(b['score']):>7} {fmt(a['score']):>7} {diff:>7} "
              f"{len(b['scored_boxes']):>13} {kept:>10} {len(a['scored_boxes']):>6}")
    print(f"largest score change: {worst:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--members", default="default", help="default (the manifest's), trained (all nine), or names")
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", default="before,after")
    p.add_argument("--precision-check", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for 'after' (e.g. detect_min_face_px=16), to measure one change")
    p.add_argument("--repeat", type=int, default=1, help="runs per file; the one of median total is shown")
    p.add_argument("--devset", action="store_true", help="every medium of devset/labels.csv (and the crowd clip)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting, print JSON
    a = p.parse_args()
    if a.devset:
        with open(SHARED / "devset" / "labels.csv") as fh:
            media = [SHARED / "devset" / row["path"] for row in csv.DictReader(fh)]
    else:
        media = sorted((SHARED / "devset" / "videos").glob("*.mp4"))
    files = a.files or [*media, SHARED / "unlabeled" / "crowd_single_shot.mp4"]
    for kv in a.set:
        key, _, value = kv.partition("=")
        CONFIGS["after"][key] = value
    if a.one:
        print(json.dumps(measure(a.one, _members(a.members), a.device, files, a.repeat)))
        return
    results = {}
    sets = [x for kv in a.set for x in ("--set", kv)]
    for config in a.configs.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", config, "--members", a.members, "--device",
                              a.device, "--repeat", str(a.repeat), *sets, *map(str, files)], capture_output=True, text=True,
                             cwd=ROOT)
        if out.returncode:
            sys.exit(f"{config} failed:\n{out.stderr[-3000:]}")
        results[config] = json.loads(out.stdout.strip().splitlines()[-1])
        table(config, results[config])
    if "before" in results and "after" in results:
        compare(results["before"], results["after"])
    if a.precision_check:
        print()
        precision_check(_members(a.members), a.device, files)


if __name__ == "__main__":
    main()
