"""Reduced precision on this machine: training and inference speed of the small members in
fp32, channels_last and bfloat16 autocast, and how far bf16 moves the ensemble's scores.

  python bench/precision.py [--members meve_lite0,meve_mobilenetv2] [--faces DIR]

Prints measured numbers (img/s, best of a few batches of 32 at 224 px) and, with
``--faces`` (a folder of face crops, e.g. ../shared/media/devset/face_images/ffpp), the
largest change of the default ensemble's probability from fp32 to bf16 on them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from detector.models import create_model
from detector.precision import cpu_has_bf16


def _best(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts[1:]) if n > 1 else ts[0]


def train_speed(arch: str, channels_last: bool, bf16: bool, batch: int = 32, n: int = 4) -> float:
    torch.manual_seed(0)
    model = create_model(arch).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=fmt)
    y = (torch.rand(batch) > 0.5).float()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return batch / _best(step, n)


def infer_speed(arch: str, bf16: bool, batch: int = 32, n: int = 5) -> float:
    model = create_model(arch).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return batch / _best(run, n)


def score_shift(faces_dir: Path) -> tuple[int, float, float]:
    from PIL import Image

    from detector.pipeline import Analyzer
    from detector.settings import DetectorSettings

    crops = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(faces_dir.rglob("*"))
             if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    out = {}
    for precision in ("fp32", "bf16"):
        an = Analyzer(DetectorSettings(precision=precision), device="cpu").load()
        out[precision] = an.ensemble.predict(crops)[0]
    d = np.abs(out["fp32"] - out["bf16"])
    return len(crops), float(d.max()), float(d.mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", default="meve_lite0,meve_mobilenetv2")
    p.add_argument("--faces", type=Path)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_bf16()}, "
          f"{a.threads} threads")
    for arch in a.members.split(","):
        tr = {f"{'cl' if cl else 'nchw'}+{'bf16' if bf else 'fp32'}": train_speed(arch, cl, bf)
              for cl, bf in ((False, False), (True, False), (True, True))}
        inf = {prec: infer_speed(arch, prec == "bf16") for prec in ("fp32", "bf16")}
        print(f"{arch}: training img/s " + ", ".join(f"{k} {v:.1f}" for k, v in tr.items())
              + "; inference img/s (channels_last) " + ", ".join(f"{k} {v:.1f}" for k, v in inf.items()))
    if a.faces:
        n, worst, mean = score_shift(a.faces)
        print(f"default ensemble on {n} faces: bf16 vs fp32 probability, largest change {worst:.4f}, mean {mean:.4f}")


if __name__ == "__main__":
    main()
