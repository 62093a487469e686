"""The one mapping from OpenAI Whisper's tensor names to ours.

Every reader (CTranslate2, OpenAI .pt, Hugging Face) turns its file into `WhisperWeights`:
Whisper's dimensions plus tensors named as in OpenAI's model.py, e.g.

    encoder.blocks.0.attn.query.weight      decoder.blocks.3.cross_attn.value.bias
    encoder.positional_embedding            decoder.token_embedding.weight

`build_model` checks those names and shapes against the dimensions and loads them into an
`ASRModel` with vanilla stacks. The only differences from OpenAI's layout:

- positions live in `<stack>.positions.absolute` (the encoder's is a buffer, loaded with
  the checkpoint's own sinusoid table rather than recomputed);
- self-attention fuses query;key;value into one `attn.qkv` projection, cross-attention fuses
  key;value into `cross_attn.kv`. Whisper's key projections have no bias, so the fused bias
  gets zeros there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..config import ModelDimensions, ModelOptions
from ..nn.model import MLP_RATIO, ASRModel
from ..nn.presets import vanilla_options
from .errors import ConversionError

CONV_KERNEL = 3  # both stem convolutions of Whisper's encoder
PROJECTIONS = ("query", "key", "value", "out")
UNBIASED = "key"  # Whisper's key projections are bias-free

RENAMED = {
    "encoder.positional_embedding": "encoder.positions.absolute",
    "decoder.positional_embedding": "decoder.positions.absolute",
}
# attention module -> (our fused projection, the OpenAI projections it stacks, in order)
FUSED = {
    "attn": ("qkv", ("query", "key", "value")),
    "cross_attn": ("kv", ("key", "value")),
}
# OpenAI checkpoints may carry these non-weight buffers; they are derived, not learned
IGNORED = frozenset({"decoder.mask", "alignment_heads"})




@dataclass
class WhisperWeights:
    """What every reader produces: dimensions, OpenAI-named tensors, and metadata worth keeping
    (suppressed tokens, alignment heads, where the weights came from)."""

    dims: ModelDimensions
    tensors: dict[str, Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)


def whisper_options() -> ModelOptions:
    """Vanilla stacks on fixed 30 s windows: Whisper's absolute encoder positions assume that the
    encoder always sees exactly 2 * n_audio_ctx frames, padding included and unmasked."""
    options = vanilla_options()
    options.fixed_audio_window = True
    return options


def is_multilingual(dims: ModelDimensions) -> bool:
    """Whisper's own rule: English-only vocabularies have 51864 tokens, multilingual ones more."""
    return dims.n_vocab >= 51865


# ------------------------------------------------------------------------------ shapes

def _layer_norm(prefix: str, d: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (d,), f"{prefix}.bias": (d,)}


def _block_shapes(prefix: str, d: int, cross_attention: bool) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    for attn in ("attn", "cross_attn") if cross_attention else ("attn",):
        shapes.update(_layer_norm(f"{prefix}.{attn}_ln", d))
        for projection in PROJECTIONS:
            shapes[f"{prefix}.{attn}.{projection}.weight"] = (d, d)
            if projection != UNBIASED:
                shapes[f"{prefix}.{attn}.{projection}.bias"] = (d,)
    shapes.update(_layer_norm(f"{prefix}.mlp_ln", d))
    hidden = MLP_RATIO * d
    shapes.update({f"{prefix}.mlp.0.weight": (hidden, d), f"{prefix}.mlp.0.bias": (hidden,),
                   f"{prefix}.mlp.2.weight": (d, hidden), f"{prefix}.mlp.2.bias": (d,)})
    return shapes


def openai_shapes(dims: ModelDimensions) -> dict[str, tuple]:
    """Every tensor of an OpenAI Whisper checkpoint with these dimensions, and its shape."""
    a, t = dims.n_audio_state, dims.n_text_state
    shapes = {
        "encoder.conv1.weight": (a, dims.n_mels, CONV_KERNEL), "encoder.conv1.bias": (a,),
        "encoder.conv2.weight": (a, a, CONV_KERNEL), "encoder.conv2.bias": (a,),
        "encoder.positional_embedding": (dims.n_audio_ctx, a),
        **_layer_norm("encoder.ln_post", a),
        "decoder.token_embedding.weight": (dims.n_vocab, t),
        "decoder.positional_embedding": (dims.n_text_ctx, t),
        **_layer_norm("decoder.ln", t),
    }
    for i in range(dims.n_audio_layer):
        shapes.update(_block_shapes(f"encoder.blocks.{i}", a, cross_attention=False))
    for i in range(dims.n_text_layer):
        shapes.update(_block_shapes(f"decoder.blocks.{i}", t, cross_attention=True))
    return shapes


def _some(names, limit: int = 3) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_weights(weights: WhisperWeights, source: str) -> None:
    """Fail loudly, naming the tensors, when the weights do not match their dimensions."""
    expected = openai_shapes(weights.dims)
    present = set(weights.tensors) - IGNORED
    missing = expected.keys() - present
    if missing:
        raise ConversionError(f"{source}: missing Whisper tensors: {_some(missing)}")
    unexpected = present - expected.keys()
    if unexpected:
        raise ConversionError(f"{source}: tensors that are not part of Whisper: {_some(unexpected)}")
    for name, shape in expected.items():
        got = tuple(weights.tensors[name].shape)
        if got != shape:
            raise ConversionError(f"{source}: {name} has shape {got}, expected {shape} "
                                  f"for the dimensions {weights.dims}")


# ------------------------------------------------------------------------------ mapping

def to_our_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """OpenAI-named tensors (already checked) -> our state dict, in float32."""
    state: dict[str, Tensor] = {}
    fused: dict[str, dict[str, Tensor]] = {}  # our fused name -> OpenAI projection -> tensor
    for name, tensor in tensors.items():
        if name in IGNORED:
            continue
        tensor = tensor.detach().to(torch.float32)
        if name in RENAMED:
            state[RENAMED[name]] = tensor
            continue
        module, projection, parameter = name.rsplit(".", 2)  # "....attn", "query", "weight"
        attention = module.rsplit(".", 1)[-1]
        if attention in FUSED and projection in FUSED[attention][1]:
            fused.setdefault(f"{module}.{FUSED[attention][0]}.{parameter}", {})[projection] = tensor
        else:
            state[name] = tensor
    for name, parts in fused.items():
        attention = name.rsplit(".", 3)[-3]
        order = FUSED[attention][1]
        like = next(iter(parts.values()))
        # the bias-free key projection contributes zeros to the fused bias
        state[name] = torch.cat([parts.get(p, torch.zeros_like(like)) for p in order])
    return state


def build_model(weights: WhisperWeights, source: str = "weights") -> ASRModel:
    """An ASRModel computing exactly what the Whisper weights compute (on 30 s windows)."""
    check_weights(weights, source)
    model = ASRModel(weights.dims, whisper_options())
    # strict: every tensor of our model must come from the checkpoint, none left over
    model.load_state_dict(to_our_state(weights.tensors), strict=True)
    return model.eval()
