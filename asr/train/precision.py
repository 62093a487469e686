"""Which number format to train in, chosen where the hardware computes it natively.

bf16 autocast doubles to quadruples matmul speed where the device has bf16 units (CUDA GPUs
from Ampere on; CPUs with AVX512-BF16 or AMX: measured 2.7x float32 here) and is a ~100x
slowdown where a CPU only emulates it (AVX2: ~1 GFLOP/s). So ``auto`` probes, never assumes.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..hardware import native_bf16


def choose_precision(requested: str, device: torch.device) -> tuple[Optional[torch.dtype], str]:
    """(autocast dtype or None for float32, the reason in words)."""
    if requested == "float32":
        return None, "float32 as configured"
    if requested == "bfloat16":
        return torch.bfloat16, "bfloat16 autocast as configured"
    if requested == "float16":
        if device.type != "cuda":
            raise ValueError("precision float16 needs CUDA (its GradScaler); use bfloat16 or float32 on CPU")
        return torch.float16, "float16 autocast with a GradScaler as configured"
    # auto
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"auto: {torch.cuda.get_device_name(device)} computes bf16 natively"
        return None, f"auto: {torch.cuda.get_device_name(device)} has no bf16: float32"
    native, why = native_bf16()
    return (torch.bfloat16, f"auto: bfloat16, {why}") if native else (None, f"auto: float32, {why}")
