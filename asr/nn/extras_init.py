"""Where every seed extra starts: the model's one init policy.

`ModelOptions.function_preserving_init` picks one of two starting points, and `ASRModel` applies
it here when it is built (whatever the modules' own constructors did):

    extra                                   with the option        without (from scratch)
                                            (warm start)
    rotary: Givens angles                   0                      0
    rotary: orthogonal matrix R             I                      I
    rotary: scale of the position angles    0 (no rotation)        1 (plain rotary)
    relative position bias table            0                      0
    hybrid: local / global output scales    1 (logits 0)           1 (logits 0)
    hybrid: window, global_stride           must cover the         as configured
                                            context, else refused
    dynconv: branch output projection       0 (branch silent)      0
    dynconv: conv_in, kernel, gate          torch's Linear init    torch's Linear init

With the option every extra is the identity, so vanilla Whisper weights loaded into the model
give exactly Whisper's outputs and fine-tuning opens the extras from there. Without it the
model is trained from scratch and the design's training init applies: Givens angles 0 and
R = I (a learned basis change starting at no change), a zero relative bias and a zero branch
output projection (added terms that start at nothing and get gradients at once), and the
rotary scale 1, because from scratch nothing else tells the attention where a token is when
the stack has no absolute positions.

Absolute positions, projections, norms and MLPs are not extras: they keep torch's init or the
weights loaded into them.
"""
from __future__ import annotations

import torch
from torch import nn

from .dynconv import DynamicConvAttention
from .hybrid_attention import HybridAttention
from .relative_bias import RelativePositionBias
from .rotary import RotaryEmbeddingWithRotation

# the rotary scale a model starts with, by function_preserving_init
ROTARY_SCALE = {True: 0.0, False: 1.0}
# extras whose reset_to_identity() is their starting point under both settings
IDENTITY_AT_START = (RelativePositionBias, HybridAttention, DynamicConvAttention)


@torch.no_grad()
def reset_extras(stack: nn.Module, function_preserving: bool) -> None:
    """Put every extra inside `stack` where the table above says it starts."""
    for module in stack.modules():
        if isinstance(module, RotaryEmbeddingWithRotation):
            module.reset_to_identity()  # angles 0, R = I, scale 0
            module.scale.fill_(ROTARY_SCALE[function_preserving])
        elif isinstance(module, IDENTITY_AT_START):
            module.reset_to_identity()


def check_function_preserving(name: str, blocks: nn.ModuleList, n_ctx: int) -> None:
    """Refuse a stack whose hybrid layers would not start as plain attention on inputs of up to
    n_ctx positions: the option would then not preserve the function its name promises."""
    for i, block in enumerate(blocks):
        layer = block.attn
        if isinstance(layer, HybridAttention) and not layer.starts_as_plain_attention(n_ctx):
            raise ValueError(
                f"function_preserving_init: {name} layer {i} is hybrid attention with window "
                f"{layer.window} and global_stride {layer.global_stride}, which is not plain "
                f"attention over {n_ctx} positions; start it with window >= {n_ctx - 1} and "
                f"global_stride 1 (and shrink the window in fine-tuning), or train from scratch")


__all__ = ["ROTARY_SCALE", "check_function_preserving", "reset_extras"]
