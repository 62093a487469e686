"""Compute types for inference, named as faster-whisper names them: auto, float32, int8,
bfloat16, float16.

- float32: the weights as trained; the reference every other type is checked against.
- int8 (CPU): every plain linear layer and the tied output projection become dynamically
  quantised int8 layers (torch's fbgemm kernels: int8 weights per output channel, activations
  quantised per call). Measured here against the other int8 route, weight-only int8 matmul
  (torch._weight_int8pack_mm), dynamic quantisation was 3-13x faster at every shape Whisper tiny
  decodes with (see scripts/bench_transcribe.py --compute-types), so it is the one used. The
  output projection matters most: at batch 1 it reads 80 MB of float32 weights per token.
  Convolutions, LayerNorm and attention stay float32.
- bfloat16: all weights in bfloat16, logits in float32. Only where the hardware computes it:
  CUDA, or a CPU with AVX512-BF16 or AMX (elsewhere bf16 is emulated, ~100x slower).
- float16: CUDA only (no fast float16 matmul on CPUs).
- auto: on CPU int8, on CUDA float16. int8 is the fastest type measured on CPU (with or without
  native bf16), and its transcripts agree with float32's on >= 99% of words over the offline
  test set (scripts/compare_peers.py reports the agreement; README has the figures).
"""
from __future__ import annotations

import functools
import warnings
from typing import Union

import torch
from torch import nn

COMPUTE_TYPES = ("auto", "float32", "int8", "bfloat16", "float16")
# CPU flags (as /proc/cpuinfo names them) that mean bfloat16 matmuls run natively
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class ComputeTypeError(ValueError):
    """A compute type this machine cannot run; the message says why and what to use instead."""


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none to read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def resolve_compute_type(compute_type: str, device: Union[str, torch.device]) -> str:
    """The concrete type to run on `device` ("auto" resolved), or ComputeTypeError when the
    device cannot run the type asked for."""
    if compute_type not in COMPUTE_TYPES:
        raise ComputeTypeError(f"unknown compute type {compute_type!r}; choose from {', '.join(COMPUTE_TYPES)}")
    cuda = torch.device(device).type == "cuda"
    if compute_type == "auto":
        return "float16" if cuda else "int8"
    if compute_type == "int8" and cuda:
        raise ComputeTypeError("compute type int8 runs on the CPU only (use float16 or bfloat16 on CUDA)")
    if compute_type == "float16" and not cuda:
        raise ComputeTypeError("compute type float16 needs CUDA (on the CPU use int8 or float32)")
    if compute_type == "bfloat16" and not cuda and not cpu_has_native_bf16():
        raise ComputeTypeError("compute type bfloat16: this CPU has no AVX512-BF16/AMX, bfloat16 would be "
                               "emulated (~100x slower); use int8 or float32")
    return compute_type


def apply_compute_type(model: nn.Module, compute_type: str) -> nn.Module:
    """Convert a loaded (eval-mode) model in place for inference in `compute_type` (already
    resolved); returns it. Not for training: int8 layers have no gradient."""
    if compute_type == "float32":
        return model
    if compute_type in ("bfloat16", "float16"):
        return model.to(getattr(torch, compute_type))
    if compute_type == "int8":
        quantize_int8(model)
        return model
    raise ComputeTypeError(f"unknown compute type {compute_type!r}")


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the plain nn.Linear layers: not parametrised (the rotary basis R is an
    orthogonal parametrisation read through .weight), not a subclass with its own forward."""
    from torch.nn.utils import parametrize

    return [name for name, module in model.named_modules()
            if type(module) is nn.Linear and not parametrize.is_parametrized(module)]


def quantize_int8(model: nn.Module) -> None:
    """Dynamic int8 quantisation (per output channel) of the linear layers and of the decoder's
    tied output projection."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    with warnings.catch_warnings():
        # torch.ao.quantization's eager API is marked deprecated in favour of torchao (not a
        # dependency here); its kernels are what this CPU runs fastest (see the module docstring)
        warnings.simplefilter("ignore")
        names = quantizable_linears(model)
        quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names}, inplace=True)
        decoder = model.decoder
        embedding = decoder.token_embedding.weight  # [n_vocab, n_state]: the tied projection
        tied = nn.Linear(embedding.shape[1], embedding.shape[0], bias=False)
        tied.weight = nn.Parameter(embedding.detach(), requires_grad=False)  # shared, not copied
        tied.qconfig = per_channel_dynamic_qconfig
        decoder.output_projection = DynamicLinear.from_float(tied)
