"""Training checkpoints: write all of one or none of it, find the newest good one, keep a few.

A checkpoint is a directory ``RUN/checkpoints/step-00001000/``:

    model/                 config.json + model.safetensors + tokenizer: a model directory
                           (``asr transcribe --model .../model`` works on it), with the resolved
                           training config inside config.json, and ctc_head.safetensors when
                           the run trains a CTC head (a copy, for joint CTC/attention decoding)
    state.pt               optimiser, grad scaler, every RNG state, sampler position, dynamic
                           base controller, step, metrics so far (loaded with weights_only=True)
    tensors.safetensors    training-only tensors: the CTC head, the running average (weights and head)
    meta.json              step and the sha256 of every file above; written last

It is built under a temporary name and renamed into place once complete (a directory rename is
atomic), so a kill at any moment leaves either the old set of checkpoints or the old set plus a
complete new one; leftover temporary directories are removed on the next start. A checkpoint
whose files do not match meta.json (truncated, corrupt) is passed over with a warning and the
previous one is used.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file, save_file

from ..store.atomic import atomic_write, fsync_directory, write_text_atomic
from ..nn.ctc_head import CTCHead
from ..store.checkpoint import save_checkpoint

CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
STATE_FILE = "state.pt"
TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
BEST_FILE = "best.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")
HASH_CHUNK = 1 << 20  # bytes read at a time when checksumming


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, say); the previous ones are intact."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


class Checkpoints:
    """The checkpoints of one run directory."""

    def __init__(self, run_dir: Path, keep_last: int):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / CHECKPOINTS
        self.keep_last = keep_last

    # -- writing ---------------------------------------------------------------------------
    def remove_partial(self) -> None:
        """Temporary directories of writes that a kill interrupted."""
        if self.root.is_dir():
            for path in self.root.iterdir():
                if path.name.startswith(".tmp-"):
                    shutil.rmtree(path, ignore_errors=True)

    def save(self, step: int, model, tokenizer, model_extra: dict, state: dict,
             tensors: dict[str, torch.Tensor], meta: dict,
             write_files: Optional[Callable] = None) -> Path:
        """Write checkpoint ``step``; raise CheckpointWriteError if it cannot be completed."""
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".tmp-{step_dir_name(step)}-{uuid.uuid4().hex[:8]}"
        final = self.root / step_dir_name(step)
        try:
            temporary.mkdir()
            (write_files or write_checkpoint_files)(temporary, model, tokenizer, model_extra, state, tensors, meta)
            fsync_directory(temporary)
            if final.exists():  # the same step written again (a resumed run's last step)
                shutil.rmtree(final)
            temporary.rename(final)
            fsync_directory(self.root)
        except OSError as err:
            shutil.rmtree(temporary, ignore_errors=True)
            previous = self.steps()
            kept = f"the previous checkpoint {step_dir_name(previous[-1])} is intact" if previous else "no earlier checkpoint"
            raise CheckpointWriteError(f"{final}: checkpoint not written ({err.strerror or err}); {kept}") from None
        self.prune()
        return final

    def prune(self) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep_last:])
        best = self.best()
        if best is not None:
            keep.add(best["step"])
        for step in steps:
            if step not in keep:
                shutil.rmtree(self.root / step_dir_name(step), ignore_errors=True)

    def set_best(self, step: int, dev_wer: float) -> None:
        write_text_atomic(self.run_dir / BEST_FILE, json.dumps({"step": step, "dev_wer": dev_wer,
                                                                "checkpoint": f"{CHECKPOINTS}/{step_dir_name(step)}"}) + "\n")

    def best(self) -> Optional[dict]:
        try:
            return json.loads((self.run_dir / BEST_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    # -- reading ---------------------------------------------------------------------------
    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := STEP_DIR.match(p.name)))

    def latest_valid(self) -> Optional[Path]:
        """The newest checkpoint whose files match their checksums; corrupt ones are skipped
        with a warning."""
        for step in reversed(self.steps()):
            path = self.root / step_dir_name(step)
            problem = verify(path)
            if problem is None:
                return path
            warnings.warn(f"{path}: {problem}; trying the previous checkpoint", stacklevel=2)
        return None


def write_checkpoint_files(directory: Path, model, tokenizer, model_extra: dict, state: dict,
                           tensors: dict[str, torch.Tensor], meta: dict) -> None:
    head = {k.removeprefix("ctc_head."): v for k, v in tensors.items() if k.startswith("ctc_head.")}
    ctc_head = CTCHead(head["weight"], head["bias"]) if head else None  # for joint decoding
    save_checkpoint(model, directory / MODEL_DIR, tokenizer=tokenizer, extra=model_extra, ctc_head=ctc_head)
    atomic_write(directory / STATE_FILE, lambda p: torch.save(state, p))
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(directory / TENSORS_FILE, lambda p: save_file(tensors, p))
    files = {str(p.relative_to(directory)): sha256_of(p) for p in sorted(directory.rglob("*")) if p.is_file()}
    write_text_atomic(directory / META_FILE, json.dumps({**meta, "files": files}, indent=1) + "\n")


def verify(path: Path) -> Optional[str]:
    """None if every file listed in meta.json is there with its checksum, else the problem."""
    try:
        meta = json.loads((path / META_FILE).read_text())
        files = meta["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return f"no readable {META_FILE}"
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if sha256_of(file) != digest:
            return f"{name} does not match its checksum (truncated or corrupt)"
    return None


def read_state(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(state, tensors, meta) of a verified checkpoint directory, without unpickling code."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    tensors = load_file(path / TENSORS_FILE, device="cpu")
    meta = json.loads((path / META_FILE).read_text())
    return state, tensors, meta
