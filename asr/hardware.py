"""What this CPU is and what it computes natively, read from /proc/cpuinfo.

The CPU changes between machines and CI runs (one had native bf16, another emulated it ~100x
slower), so precision and kernels are chosen by probing at run time, never assumed, and every
benchmark writes these facts beside its figures. Importing this module does not import torch.
"""
from __future__ import annotations

import functools
import os
import platform

# bf16 is computed natively only with these (AVX512-BF16 or AMX); elsewhere torch emulates it
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# the flags worth writing beside a speed figure
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> dict[str, str]:
    """The first value of every /proc/cpuinfo key (empty where there is no such file)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where they cannot be read)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name, e.g. "AMD EPYC" (the platform's name where /proc/cpuinfo has none)."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def shown_flags() -> list[str]:
    """The SHOWN_FLAGS this CPU has, in that order."""
    flags = cpu_flags()
    return [flag for flag in SHOWN_FLAGS if flag in flags]


def describe_cpu() -> str:
    """One line for a results table, e.g. "AMD EPYC, 2 cores, flags avx2"."""
    return f"{cpu_model()}, {os.cpu_count()} cores, flags {' '.join(shown_flags()) or 'none'}"


def native_bf16() -> tuple[bool, str]:
    """(whether this CPU computes bf16 natively, the reason in words)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "AMX" ... (no bf16 detail)
    found = [flag for flag in NATIVE_BF16_FLAGS if flag in cpu_flags()]
    if found:
        return True, f"CPU has {', '.join(found)} (torch capability {capability})"
    if "AMX" in capability.upper():
        return True, f"torch reports CPU capability {capability}"
    return False, f"CPU has no avx512_bf16/amx_bf16 (torch capability {capability}): bf16 would be emulated"
