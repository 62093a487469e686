"""Start a model with seed extras from a vanilla (Whisper-shaped) model's weights.

Every attention kind is a MultiHeadAttention with the same weight names, so the vanilla weights
land under their own names in the extended model: no renaming. Everything the vanilla model
lacks (rotary, relative bias, gates, convolution branch) keeps its start from
asr/nn/extras_init.py; built with function_preserving_init, the extended model then computes
exactly what the vanilla one did.
"""
from __future__ import annotations

from torch import Tensor

from ..nn.model import ASRModel


def load_vanilla_weights(model: ASRModel, state: dict[str, Tensor]) -> list[str]:
    """Copy every tensor of `state` into `model`; return the names of the model's tensors that
    were not in `state` (its extras). Raises KeyError for a vanilla tensor with no place and
    ValueError for one whose shape does not fit."""
    target = model.state_dict()
    for name, tensor in state.items():
        if name not in target:
            raise KeyError(f"{name}: no matching tensor in the model")
        if target[name].shape != tensor.shape:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)} does not fit the model's "
                             f"{tuple(target[name].shape)}")
    result = model.load_state_dict(state, strict=False)
    return list(result.missing_keys)
