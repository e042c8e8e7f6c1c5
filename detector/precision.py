"""Reduced precision where the hardware has it: bfloat16 autocast on CPUs with AVX-512
BF16 (or AMX) and on GPUs that support it, channels_last memory format.

``bench/precision.py`` measures it. On the 2-core AMD EPYC (AVX-512 BF16) these machines
have, batch 32 at 224 px, a training step ran at (img/s; nchw fp32 / channels_last fp32 /
channels_last + bf16): EfficientNet-Lite0 7.6 / 12.5 / 10.5, MobileNetV2 9.9 / 15.4 /
16.8. So channels_last always helps, and bf16 autocast helps one backbone and not the
other: a training config says which it uses (``precision``). Where the instructions are
missing, bf16 is emulated and slower than fp32, so ``auto`` picks fp32 there.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

Precision = Literal["auto", "fp32", "bf16"]


# oneDNN ISA levels (ONEDNN_MAX_CPU_ISA) that lack native bf16 convolutions.
_ONEDNN_NO_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_bf16() -> bool:
    """Whether bf16 runs natively here: the CPU has AVX-512 BF16 or AMX, and neither torch's
    kernels (``ATEN_CPU_CAPABILITY``) nor oneDNN's (``ONEDNN_MAX_CPU_ISA``) were capped below it."""
    import os

    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return False
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if isa in _ONEDNN_NO_BF16:
        return False
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
