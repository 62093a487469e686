"""asr.hardware against /proc/cpuinfo read here line by line, and without importing torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr import hardware

CPUINFO = Path("/proc/cpuinfo")


def first_value(key: str) -> str:
    for line in CPUINFO.read_text().splitlines():
        if line.split(":", 1)[0].strip() == key:
            return line.split(":", 1)[1].strip()
    return ""


@pytest.mark.skipif(not CPUINFO.exists(), reason="no /proc/cpuinfo on this system")
def test_flags_and_model_are_the_first_processors():
    flags = set(first_value("flags").split())
    assert hardware.cpu_flags() == flags
    assert hardware.cpu_model() == (first_value("model name") or hardware.cpu_model())
    shown = hardware.shown_flags()
    assert set(shown) <= flags and shown == [f for f in hardware.SHOWN_FLAGS if f in flags]
    line = hardware.describe_cpu()
    assert line.startswith(hardware.cpu_model()) and f"{os.cpu_count()} cores" in line


def test_native_bf16_needs_the_flags_or_amx():
    import torch

    native, why = hardware.native_bf16()
    flags = hardware.cpu_flags()
    expected = bool({"avx512_bf16", "amx_bf16"} & flags) or "AMX" in torch.backends.cpu.get_cpu_capability().upper()
    assert native == expected and why


def test_importing_it_leaves_torch_unimported():
    code = "import sys, asr.hardware as h; h.describe_cpu(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
