"""Checkpoint directories: config.json (dims, options, tokenizer description) + model.safetensors.

Loading never unpickles: tensors come from safetensors, everything else from JSON. Each file is
written to a temporary name in the same directory and renamed into place, so a crash while
saving leaves the previous checkpoint readable.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_write, write_text_atomic
from ..config import dims_from_dict, options_from_dict, to_dict
from ..nn.ctc_head import CTC_HEAD_FILE, CTCHead
from ..nn.model import ASRModel
from ..nn.orthogonal import current_name
from ..nn.step_linear import StepLinear

from .layout import CONFIG_FILE, FORMAT, FORMAT_VERSION, WEIGHTS_FILE, CheckpointError


def save_checkpoint(model: ASRModel, directory: Union[str, Path], *,
                    tokenizer=None, extra: Optional[dict[str, Any]] = None,
                    ctc_head: Optional[CTCHead] = None) -> Path:
    """Write model and tokenizer to directory. `tokenizer` is a Tokenizer (its files are saved
    beside the weights) or an already JSON-able description dict. `ctc_head` (default: the
    model's own, if it has one) is saved beside them for joint CTC/attention decoding."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(tokenizer, "save"):
        tokenizer = tokenizer.save(directory)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dims": to_dict(model.dims),
        "options": _options_with_rotary_bases(model),
        "tokenizer": tokenizer,
        **(extra or {}),
    }
    # safetensors wants contiguous tensors with unshared storage
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(state, p, metadata={"format": FORMAT}))
    ctc_head = ctc_head if ctc_head is not None else model.ctc_head
    if ctc_head is not None:
        ctc_head.save(directory)
    write_text_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return directory


def read_config(directory: Union[str, Path]) -> dict:
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory (no such directory)")
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint directory (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable config ({err})") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an asr checkpoint config (format={config.get('format')!r})")
    return config


def load_checkpoint(directory: Union[str, Path], device: Union[str, torch.device] = "cpu", *,
                    convert: Optional[Callable[[ASRModel, Callable[[str], torch.Tensor]], None]] = None,
                    for_inference: bool = False, keep_embedding: bool = False, step_layout: bool = True):
    """Rebuild the model from config.json and load its weights. Returns (model, config).

    By default the weights are memory-mapped. ``convert(model, read)`` instead fills the model
    itself, one tensor at a time (``read(name)`` reads that tensor from the file into memory),
    so that a conversion (int8 quantisation) never holds the whole float32 weights at once.
    ``for_inference`` stores the decoder's per-step linear weights (unless ``step_layout`` is
    False: a compute type that converts them itself) and (unless ``keep_embedding``) the tied
    token embedding in the layouts a decoding step reads fastest (see
    decoder_linears_in_step_layout and embedding_in_output_layout); such a model is for
    decoding, not for training."""
    directory = Path(directory)
    config = read_config(directory)
    try:
        with skip_random_init():  # every weight is about to be replaced by the checkpoint's
            model = ASRModel(dims_from_dict(config["dims"]), options_from_dict(config["options"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: invalid model config ({err})") from None
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: missing {WEIGHTS_FILE}")
    if convert is not None:
        _load_converting(model, weights, convert)
    else:
        try:
            # memory-mapped: pages are read from the file as they are first used, and the
            # model's parameters become these tensors (assign=True) instead of copies of them
            state = load_file(weights, device="cpu")
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{weights}: unreadable weights ({err})") from None
        try:
            model.load_state_dict(_match_dtypes(model, state), strict=True, assign=True)
        except RuntimeError as err:
            first = str(err).splitlines()[0] if str(err) else "mismatch"
            raise CheckpointError(f"{weights}: weights do not match config ({first})") from None
        if for_inference and step_layout:
            decoder_linears_in_step_layout(model, weights)
        if for_inference:
            if not keep_embedding:
                embedding_in_output_layout(model, weights)
    _restore_rotary_bases(model)
    model = model.to(device).eval()
    if (directory / CTC_HEAD_FILE).is_file():
        try:
            model.ctc_head = CTCHead.load(directory / CTC_HEAD_FILE, device)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{directory / CTC_HEAD_FILE}: unreadable CTC head ({err})") from None
    return model, config


EMBEDDING = "decoder.token_embedding.weight"
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16}  # the embedding dtypes read directly
EMBEDDING_ROWS_PER_READ = 4096  # rows of the table read from the file at a time (6 MB for tiny)


def read_from_file(f, name: str, shape: tuple) -> Optional[torch.Tensor]:
    """A float tensor of the open weights file read with plain reads (not mapped: the file's
    pages stay out of this process's resident memory), in its own dtype (float32 or float16);
    None when the file holds it under another name, shape or dtype."""
    f.seek(0)
    try:
        offset, dtype = tensor_location(f, name, shape)
    except (CheckpointError, KeyError):  # another dtype or shape, or a legacy name: keep it mapped
        return None
    values = np.empty(shape, dtype=dtype)
    f.seek(offset)
    if f.readinto(memoryview(values).cast("B")) != values.nbytes:
        raise CheckpointError(f"{f.name}: truncated {name}")
    return torch.from_numpy(values)


def transposed_from_file(f, name: str, shape: tuple) -> Optional[torch.Tensor]:
    """A [rows, cols] tensor of the open weights file (read_from_file) in [cols, rows]-contiguous
    storage, seen through a [rows, cols] view."""
    values = read_from_file(f, name, shape)
    return None if values is None else values.float().t().contiguous().t()


def decoder_step_linears(model: ASRModel) -> list[str]:
    """Names (under model.decoder.blocks) of the linear layers that run at every decoding step:
    all but the cross-attention's key/value projection, which runs once per window over the
    audio frames."""
    return [name for name, module in model.decoder.blocks.named_modules()
            if isinstance(module, torch.nn.Linear) and name.split(".")[-1] != "kv"]


def decoder_linears_in_step_layout(model: ASRModel, weights: Path) -> None:
    """Make the decoder's linear layers that run at every decoding step StepLinears (their few
    rows multiplied on every CPU thread, asr.nn.step_linear), their weights in the transposed
    storage those read ([in, out] contiguous, seen as the usual [out, in]). Read with plain
    reads, so the memory-mapped originals are never paged in and resident memory does not grow.
    The cross-attention's key/value projection runs once per window over all audio frames and
    keeps its layout."""
    with open(weights, "rb") as f:
        for name in decoder_step_linears(model):
            module = model.decoder.blocks.get_submodule(name)
            weight = transposed_from_file(f, f"decoder.blocks.{name}.weight", tuple(module.weight.shape))
            if weight is not None:
                model.decoder.blocks.set_submodule(name, StepLinear.from_linear(module, weight.to(module.weight.dtype)))


def tensor_location(f, name: str, shape: tuple) -> tuple[int, type]:
    """(byte offset of the tensor's data in the file, numpy dtype), from the safetensors header:
    an 8-byte little-endian length, then that many bytes of JSON with each tensor's dtype,
    shape and data_offsets (relative to the end of the header)."""
    import json
    import struct

    (length,) = struct.unpack("<Q", f.read(8))
    entry = json.loads(f.read(length))[name]
    if tuple(entry["shape"]) != tuple(shape) or entry["dtype"] not in SAFETENSORS_DTYPES:
        raise CheckpointError(f"{f.name}: {name} is {entry['dtype']} {entry['shape']}, not a float table of {list(shape)}")
    return 8 + length + entry["data_offsets"][0], SAFETENSORS_DTYPES[entry["dtype"]]


def embedding_in_output_layout(model: ASRModel, weights: Path) -> None:
    """Put the tied token embedding [n_vocab, d] into transposed storage ([d, n_vocab]
    contiguous, seen through a [n_vocab, d] view). A decoding step's logits product reads the
    table in that layout about twice as fast (asr/nn/model.py, TextDecoder.output_weight), and
    holding it so from the start saves the second 80 MB copy (Whisper tiny) that the decoder
    would otherwise make. The rows are read from the file with plain reads, block by block:
    neither the model's memory-mapped original nor a mapping of our own is paged in (both
    safetensors routes, a mapped slice or its pread backend, measured an 50-80 MB peak on top).
    An embedding lookup then reads a strided row, which costs nothing measurable."""
    embedding = model.decoder.token_embedding
    n_vocab, width = embedding.weight.shape
    transposed = torch.empty(width, n_vocab, dtype=embedding.weight.dtype)
    with open(weights, "rb") as f:
        offset, dtype = tensor_location(f, EMBEDDING, (n_vocab, width))
        block = np.empty((EMBEDDING_ROWS_PER_READ, width), dtype=dtype)
        for start in range(0, n_vocab, EMBEDDING_ROWS_PER_READ):
            rows = min(EMBEDDING_ROWS_PER_READ, n_vocab - start)
            f.seek(offset + start * width * block.itemsize)
            if f.readinto(memoryview(block[:rows]).cast("B")) != rows * width * block.itemsize:
                raise CheckpointError(f"{weights}: truncated {EMBEDDING}")
            transposed[:, start:start + rows] = torch.from_numpy(block[:rows]).to(transposed.dtype).t()
    embedding.weight = torch.nn.Parameter(transposed.t(), requires_grad=False)


def _load_converting(model: ASRModel, weights: Path, convert) -> None:
    """Check that the file holds exactly the model's tensors, with their shapes, then let
    `convert` read them one at a time (pread: into memory, not mapped)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt", device="cpu", backend="pread") as f:
            in_file = {current_name(name): name for name in f.keys()}  # today's name -> the file's
            names = set(in_file)
            missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or unexpected:
                raise CheckpointError(f"{weights}: weights do not match config (missing {missing[:3]}, "
                                      f"unexpected {unexpected[:3]})")
            for name in names:
                shape = tuple(f.get_slice(in_file[name]).get_shape())
                if shape != expected[name] and not (shape == () and expected[name] == (1,)):
                    raise CheckpointError(f"{weights}: weights do not match config ({name}: shape {shape}, "
                                          f"expected {expected[name]})")
            own = model.state_dict()
            convert(model, lambda name: f.get_tensor(in_file[name]).reshape(own[name].shape).to(own[name].dtype))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable weights ({err})") from None


# torch.nn.init functions whose random draws a checkpoint load overwrites anyway (0.3 s of
# start-up for Whisper tiny's 38M parameters, measured); the constant ones (zeros_, ones_) stay,
# since the init policy checks what they set
RANDOM_INITS = ("normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                "xavier_normal_", "trunc_normal_")


@contextlib.contextmanager
def skip_random_init():
    """Build a model without drawing random initial weights. Only for models whose every
    parameter is then loaded with load_state_dict(strict=True): the skipped draws leave
    uninitialised memory behind."""
    saved = {name: getattr(torch.nn.init, name) for name in RANDOM_INITS}
    try:
        for name in RANDOM_INITS:
            setattr(torch.nn.init, name, _keep)
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def _keep(tensor, *args, **kwargs):
    return tensor


def _match_dtypes(model: ASRModel, state: dict) -> dict:
    """With assign=True the loaded tensors replace the parameters as they are; a tensor saved in
    another dtype than the model's (a float16 checkpoint) is converted first, as copy_ would."""
    own = model.state_dict()
    state = upgrade_state(state, own)
    return {name: tensor.to(own[name].dtype) if name in own and tensor.dtype != own[name].dtype else tensor
            for name, tensor in state.items()}


def upgrade_state(state: dict, own: dict) -> dict:
    """Older checkpoints in today's layout: the rotary basis R's tensors under their names from
    when R was torch's orthogonal parametrisation (asr.nn.orthogonal), and the rotary scales and
    sinusoid gains as 0-d scalars from before they became 1-element vectors (reshaped, only those)."""
    state = {current_name(name): tensor for name, tensor in state.items()}
    return {name: tensor.reshape(own[name].shape)
            if name in own and tensor.dim() == 0 and tuple(own[name].shape) == (1,) else tensor
            for name, tensor in state.items()}


# which ModelOptions field holds each stack's options (and its rotary_base)
STACK_OPTIONS = {"encoder": "audio", "decoder": "text"}


def _options_with_rotary_bases(model: ASRModel) -> dict:
    """The model's options for config.json, each stack's rotary_base read from its live buffer."""
    options = to_dict(model.options)
    for stack, base in model.rotary_bases().items():
        options[STACK_OPTIONS[stack]]["rotary_base"] = base
    return options


def _restore_rotary_bases(model: ASRModel) -> None:
    """Each stack's base in the weights' buffers is authoritative (also for older checkpoints
    with one model-level base in config.json); the stack's options follow it."""
    for stack, base in model.rotary_bases().items():
        model.set_rotary_base(base, stack)


def load_tokenizer(directory: Union[str, Path], config: dict):
    """The tokenizer saved with a checkpoint (None if it was saved without one)."""
    from ..text.tokenizer import Tokenizer

    description = config.get("tokenizer")
    if not description:
        return None
    try:
        return Tokenizer.load(directory, description)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"{directory}: unreadable tokenizer ({err})") from None
