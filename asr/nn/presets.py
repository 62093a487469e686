"""Named model configurations.

`whisper-*` are the vanilla Whisper shapes (fixed sinusoidal encoder positions, learned decoder
positions, plain multi-head attention); `seed-*` switch on every seed component: learned
sinusoidal positions, rotary with Givens rotations and an orthogonal matrix, relative position
bias, hybrid local+global attention in the encoder and dynamic-convolution attention in the
decoder.
"""
from __future__ import annotations

from dataclasses import replace

from ..config import WHISPER_EN_VOCAB, ModelDimensions, ModelOptions, StackOptions

SIZES = {
    # name: (n_state, n_head, n_layer per stack)
    "tiny": (384, 6, 4),
    "base": (512, 8, 6),
    "cpu-small": (256, 4, 4),
}


def dims_for(size: str, n_vocab: int = WHISPER_EN_VOCAB, n_mels: int = 80) -> ModelDimensions:
    n_state, n_head, n_layer = SIZES[size]
    return ModelDimensions(n_mels=n_mels, n_audio_ctx=1500, n_audio_state=n_state, n_audio_head=n_head,
                           n_audio_layer=n_layer, n_vocab=n_vocab, n_text_ctx=448, n_text_state=n_state,
                           n_text_head=n_head, n_text_layer=n_layer)


def vanilla_options() -> ModelOptions:
    return ModelOptions(audio=StackOptions(positions="sinusoidal"), text=StackOptions(positions="learned"))


def seed_options() -> ModelOptions:
    audio = StackOptions(positions="learned_sinusoidal", rotary=True, relative_bias=True, attention="hybrid")
    text = StackOptions(positions="learned_sinusoidal", rotary=True, relative_bias=True, attention="dynconv")
    return ModelOptions(audio=audio, text=text)


def extras_on_whisper(options: ModelOptions, dims: ModelDimensions) -> ModelOptions:
    """Whisper's own positions with every extra added at function-preserving init: the starting
    point for fine-tuning imported Whisper weights into the seed architecture. The hybrid
    encoder's window starts over the whole audio context (its local heads are then global heads,
    as function-preserving init requires); fine-tuning shrinks it."""
    audio = replace(options.audio, rotary=True, relative_bias=True, attention="hybrid",
                    window=dims.n_audio_ctx - 1)
    text = replace(options.text, rotary=True, relative_bias=True, attention="dynconv")
    return replace(options, audio=audio, text=text, function_preserving_init=True)


PRESETS = {
    **{f"whisper-{size}": (size, vanilla_options) for size in SIZES},
    **{f"seed-{size}": (size, seed_options) for size in SIZES},
}


def preset(name: str, n_vocab: int = WHISPER_EN_VOCAB, n_mels: int = 80) -> tuple[ModelDimensions, ModelOptions]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
    size, options = PRESETS[name]
    return dims_for(size, n_vocab, n_mels), options()
