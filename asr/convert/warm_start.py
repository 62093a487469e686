"""Start a model with seed extras from a vanilla (Whisper-shaped) model's weights.

The vanilla weights land on the same modules in the extended model; the only renaming is for
dynamic-convolution layers, which keep their attention as a sub-module (`attn.attention.*`).
Everything the vanilla model lacks (rotary, relative bias, gates, convolution branch) keeps its
function-preserving init, so the extended model starts out computing exactly what the vanilla
one did.
"""
from __future__ import annotations

from torch import Tensor

from ..nn.model import ASRModel

DYNCONV_ATTENTION = (".attn.", ".attn.attention.")


def load_vanilla_weights(model: ASRModel, state: dict[str, Tensor]) -> list[str]:
    """Copy every tensor of `state` into `model`; return the names of the model's tensors that
    were not in `state` (its extras). Raises KeyError for a vanilla tensor with no place."""
    target = model.state_dict()
    mapped = {}
    for name, tensor in state.items():
        for candidate in (name, name.replace(*DYNCONV_ATTENTION)):
            if candidate in target:
                if target[candidate].shape != tensor.shape:
                    raise ValueError(f"{name}: shape {tuple(tensor.shape)} does not fit "
                                     f"{candidate} {tuple(target[candidate].shape)}")
                mapped[candidate] = tensor
                break
        else:
            raise KeyError(f"{name}: no matching tensor in the model")
    result = model.load_state_dict(mapped, strict=False)
    return list(result.missing_keys)
