"""Shared by the tests that compare asr with faster-whisper (test_parity, test_multilingual)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def offline_testset():
    """scripts/offline_testset.py as a module (scripts/ is not a package)."""
    if "offline_testset" in sys.modules:
        return sys.modules["offline_testset"]
    spec = importlib.util.spec_from_file_location("offline_testset", SCRIPTS / "offline_testset.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["offline_testset"] = module
    spec.loader.exec_module(module)
    return module


def load_builtin(name: str, cache_dir: Path, compute_type: str = "float32"):
    """asr.load_model(name) converted into `cache_dir`, leaving ASR_CACHE_DIR as it was. In
    float32 by default: the peers are compared with float32 (what `auto` picks depends on the CPU)."""
    import asr

    old = os.environ.get("ASR_CACHE_DIR")
    os.environ["ASR_CACHE_DIR"] = str(cache_dir)
    try:
        return asr.load_model(name, device="cpu", quiet=True, compute_type=compute_type)
    finally:
        if old is None:
            os.environ.pop("ASR_CACHE_DIR", None)
        else:
            os.environ["ASR_CACHE_DIR"] = old


def comparison_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))
