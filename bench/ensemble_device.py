"""The scoring stage alone on a device: faces/s of the default ensemble in fp32 and under
bf16 autocast, at several batch sizes, and how far bf16 moves each face's probability.

Needs only torch, timm and the shipped weights (no face detector, no embedder), so it runs
on a GPU machine that lacks them:

    python bench/ensemble_device.py --device cuda --faces DIR [DIR ...] [--weights detector/trained]

``--faces``: folders of face crops (the devset's face images, a sample of DFDC crops).
The ensemble is the manifest's default; each member reads its own crop size and
normalisation as in the service. Prints measured numbers only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def load_crops(folders: list[Path]) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for d in folders for p in sorted(d.rglob("*"))
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")]


def ensemble_on(device: str, precision: str, weights: Path, batch: int):
    from detector.ensemble import Ensemble
    from detector.manifest import load_manifest
    from detector.weights import WeightStore

    manifest = load_manifest()
    store = WeightStore(Path(tempfile.mkdtemp(prefix="weights-")))
    store.import_dir(weights, manifest.members)
    return Ensemble(manifest, store, device, batch_size=batch, precision=precision, all_bf16=precision == "bf16").load()


def timed(ens, crops, device: str, repeats: int = 3) -> float:
    import torch

    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        ens.score(crops)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return len(crops) / best


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--faces", type=Path, nargs="+", required=True)
    p.add_argument("--weights", type=Path, default=Path(__file__).resolve().parents[1] / "detector" / "trained")
    p.add_argument("--batches", default="32,128,512")
    p.add_argument("--explain", type=int, default=0, help="also time the heat map of this many faces")
    a = p.parse_args()
    crops = load_crops(a.faces)
    name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {a.device} ({name}), torch {torch.__version__}, {len(crops)} face crops")
    probs = {}
    for precision in ("fp32", "bf16"):
        for b in (int(x) for x in a.batches.split(",")):
            ens = ensemble_on(a.device, precision, a.weights, b)
            ens.score(crops[: 2 * b])  # warm-up: kernels chosen, memory allocated
            rate = timed(ens, crops, a.device)
            print(f"{precision} batch {b:>4}: {rate:8.1f} faces/s  ({', '.join(m.member.name for m in ens.members)})")
        probs[precision] = ens.score(crops).combined
    d = np.abs(probs["fp32"] - probs["bf16"])
    print(f"bf16 vs fp32 probability on {len(crops)} faces: largest change {d.max():.4f}, mean {d.mean():.4f}, "
          f"share over 0.01: {(d > 0.01).mean():.3f}")
    if a.explain:  # the heat map of one face (detector.explain) on this device, timed
        from detector.explain import grad_cam
        from detector.faces import CropSpec

        ens = ensemble_on(a.device, "fp32", a.weights, 32)
        times = []
        for c in crops[: a.explain]:
            h, w = c.shape[:2]
            box = (w * 0.12, h * 0.12, w * 0.88, h * 0.88)  # the crop's face, as a detection
            t = time.perf_counter()
            hm = grad_cam(ens, {m.crop: c for m in ens.members}, box, CropSpec(margin=1.3))
            times.append(time.perf_counter() - t)
        print(f"heat maps: {len(times)} faces, median {1000 * np.median(times[1:] or times):.1f} ms a face "
              f"({hm.towards if hm else 'none'}, members {hm.members if hm else []})")
    if a.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
