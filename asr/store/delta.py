"""A fine-tuned model shipped as the tensors it changed over a pretrained one.

A model fine-tuned from tiny.en with its token embedding and convolutions frozen differs from
tiny.en in about half of its 39 M weights. Shipping those (float16 where they are large
matrices) keeps the package small; the full checkpoint is rebuilt on first use from the
pretrained model the package already has, and checked against it:

    delta directory: config.json     the fine-tuned model's own config, plus a "delta" section
                     delta.safetensors  the tensors that differ from the base (or are new)

The "delta" section names the base model and a SHA-256 over the base tensors the rebuilt model
takes unchanged, so a different base (another conversion, another release) is an error, never a
silently different model. The rebuilt model's weights are the delta's values: figures quoted
for a shipped model are measured on the rebuilt one, float16 rounding included.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

import torch
from safetensors.torch import load_file, save_file

from .atomic import write_text_atomic
from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError

DELTA_FILE = "delta.safetensors"
HALF_MIN_ELEMENTS = 65536  # float tensors at least this large are stored in float16 (matrices)


def base_digest(base: dict[str, torch.Tensor], names: list[str]) -> str:
    """SHA-256 over the named base tensors (name, dtype, shape and bytes), in name order."""
    digest = hashlib.sha256()
    for name in sorted(names):
        tensor = base[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_floating_point() and tensor.numel() >= HALF_MIN_ELEMENTS:
        return tensor.half().contiguous()
    return tensor.contiguous()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_delta(model_dir: Union[str, Path], base_dir: Union[str, Path], base_name: str,
                out_dir: Union[str, Path], description: str = "") -> dict:
    """Write the delta of checkpoint ``model_dir`` over checkpoint ``base_dir`` (built-in name
    ``base_name``) into ``out_dir``; returns a summary (tensors changed, kept, bytes).
    ``description`` (what the model is, where its figures are) is what `asr models` shows."""
    model_dir, base_dir, out_dir = Path(model_dir), Path(base_dir), Path(out_dir)
    tuned = load_file(model_dir / WEIGHTS_FILE)
    base = load_file(base_dir / WEIGHTS_FILE)
    kept = [n for n, t in tuned.items() if n in base and base[n].shape == t.shape and torch.equal(base[n], t)]
    changed = {n: _stored(t) for n, t in tuned.items() if n not in set(kept)}
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(changed, out_dir / DELTA_FILE, metadata={"format": "asr-delta"})
    config["delta"] = {"base": base_name, "description": description, "delta_sha256": file_digest(out_dir / DELTA_FILE),
                       "base_tensors": sorted(kept), "base_sha256": base_digest(base, kept)}
    write_text_atomic(out_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return {"changed": len(changed), "kept": len(kept), "bytes": (out_dir / DELTA_FILE).stat().st_size}


def delta_section(delta_dir: Path) -> dict:
    return json.loads((delta_dir / CONFIG_FILE).read_text())["delta"]


def is_built_from(checkpoint_dir: Path, delta_dir: Path) -> bool:
    """Whether checkpoint_dir was rebuilt from this very delta (a JSON read, no hashing)."""
    try:
        built = json.loads((checkpoint_dir / CONFIG_FILE).read_text()).get("built_from_delta") or {}
        return built.get("delta_sha256") == delta_section(delta_dir)["delta_sha256"]
    except (OSError, ValueError, KeyError):
        return False


def build_from_delta(delta_dir: Union[str, Path], base_dir: Union[str, Path], target: Union[str, Path]) -> Path:
    """Rebuild the full checkpoint of ``delta_dir`` over the base checkpoint ``base_dir`` into
    ``target`` (written in a temporary sibling and renamed: never half-built)."""
    delta_dir, base_dir, target = Path(delta_dir), Path(base_dir), Path(target)
    config = json.loads((delta_dir / CONFIG_FILE).read_text())
    section = config.pop("delta")
    if file_digest(delta_dir / DELTA_FILE) != section["delta_sha256"]:
        raise CheckpointError(f"{delta_dir / DELTA_FILE}: damaged (its SHA-256 is not the one in {CONFIG_FILE})")
    # the built model remembers which delta it came from: a newer shipped one is rebuilt
    config["built_from_delta"] = {"base": section["base"], "description": section["description"],
                                  "delta_sha256": section["delta_sha256"]}
    base = load_file(base_dir / WEIGHTS_FILE)
    names = section["base_tensors"]
    missing = [n for n in names if n not in base]
    if missing or base_digest(base, names) != section["base_sha256"]:
        what = f"lacks {missing[0]}" if missing else "has other weights"
        raise CheckpointError(f"{delta_dir}: the base model {section['base']} ({base_dir}) {what} than the one "
                              f"this model was fine-tuned from; rebuild it from the same base")
    state = {n: base[n] for n in names}
    for name, tensor in load_file(delta_dir / DELTA_FILE).items():
        state[name] = tensor.float() if tensor.dtype == torch.float16 else tensor
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for path in base_dir.iterdir():  # the tokenizer files: the fine-tune kept the base's
            if path.is_file() and path.name not in (WEIGHTS_FILE, CONFIG_FILE):
                shutil.copy2(path, tmp / path.name)
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "asr-checkpoint"})
        write_text_atomic(tmp / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
