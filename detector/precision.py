"""Reduced precision where the hardware has it: bfloat16 autocast on CPUs with AVX-512
BF16 (or AMX) and on GPUs that support it, channels_last memory format.

Measured on the 2-core AMD EPYC (AVX-512 BF16) these machines have, EfficientNet-Lite0
at 224 px, batch 32: training 8 img/s in fp32, 15 with channels_last, 18 with
channels_last + bf16 autocast; inference 49 -> 128 img/s (``bench/precision.py``
prints the numbers for the machine it runs on). Where the instructions are missing,
bf16 autocast is emulated and slower than fp32, so ``auto`` picks fp32 there.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

Precision = Literal["auto", "fp32", "bf16"]


def cpu_has_bf16() -> bool:
    import torch

    cpu = torch.cpu
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def resolve_precision(device: str, requested: Precision | str = "auto") -> str:
    """``fp32`` or ``bf16`` for this device: ``auto`` takes bf16 only where it is native."""
    import torch

    if requested not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {requested!r}")
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: str, precision: str):
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def channels_last(model, device: str):
    """The model in channels_last layout (faster convolutions on CPU oneDNN and on GPUs)."""
    import torch

    return model.to(device=device, memory_format=torch.channels_last)
