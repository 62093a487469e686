"""Model dimensions (Whisper's names) and the options that switch the seed components.

Both are plain dataclasses that round-trip through JSON (`to_dict` / `from_dict`), because a
checkpoint's config.json is how a model is rebuilt.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Union

POSITIONS = ("sinusoidal", "learned", "learned_sinusoidal", "none")
ATTENTION_KINDS = ("mha", "hybrid", "dynconv")


@dataclass
class ModelDimensions:
    n_mels: int = 80
    n_audio_ctx: int = 1500  # encoder positions after the stride-2 stem (1500 = 30 s)
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4
    n_vocab: int = 51864
    n_text_ctx: int = 448
    n_text_state: int = 384
    n_text_head: int = 6
    n_text_layer: int = 4


@dataclass
class StackOptions:
    """Positional scheme and attention kinds of one stack (encoder or decoder)."""

    # absolute positions added to the input: fixed sinusoids (Whisper's encoder), a learned
    # table (Whisper's decoder), learned sinusoidal (normalised rows x gain), or none
    positions: str = "sinusoidal"
    # rotary embedding with learned Givens rotations and an orthogonal matrix, in self-attention
    rotary: bool = False
    rotary_givens: bool = True
    rotary_rotation: bool = True
    # T5-style log-bucketed relative position bias, shared by the layers of the stack
    relative_bias: bool = False
    bias_buckets: int = 32
    bias_max_distance: int = 128
    # attention kind: one name for every layer, or one per layer ("mha", "hybrid", "dynconv")
    attention: Union[str, list] = "mha"
    # hybrid attention: local sliding-window heads (|i - j| <= window) plus global heads
    window: int = 64
    # heads that are local; None = half of them (n_head // 2). 0 (all global) and n_head (all
    # local) are valid choices, which is why "half" is spelled None and not 0
    local_heads: Optional[int] = None
    global_stride: int = 1  # > 1: global heads attend to keys/values average-pooled by this
    hybrid_gate: bool = True
    # dynamic convolution branch beside attention
    kernel_width: int = 15
    # channel groups of the dynamic convolution, each with its own predicted kernel; None = n_head
    n_conv_heads: Optional[int] = None
    # learned sinusoidal embeddings: recompute in backward instead of storing activations
    checkpoint_positions: bool = False

    def attention_kinds(self, n_layer: int) -> list[str]:
        kinds = [self.attention] * n_layer if isinstance(self.attention, str) else list(self.attention)
        if len(kinds) != n_layer:
            raise ValueError(f"attention lists {len(kinds)} kinds for {n_layer} layers")
        for kind in kinds:
            if kind not in ATTENTION_KINDS:
                raise ValueError(f"unknown attention kind {kind!r}; choose from {ATTENTION_KINDS}")
        return kinds

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; choose from {POSITIONS}")


@dataclass
class ModelOptions:
    audio: StackOptions = field(default_factory=StackOptions)
    text: StackOptions = field(default_factory=lambda: StackOptions(positions="learned"))
    rotary_base: float = 10000.0  # the one rotary base of the model (dynamic base adjustment)
    # Whisper-style fixed 30 s windows: the encoder always sees n_audio_ctx * 2 frames and no
    # padding mask. Only needed for imported Whisper weights, whose absolute positions assume it.
    fixed_audio_window: bool = False
    # extras start as the identity so vanilla Whisper weights give Whisper's outputs
    function_preserving_init: bool = False


def to_dict(obj) -> dict:
    return asdict(obj)


def dims_from_dict(d: dict) -> ModelDimensions:
    return ModelDimensions(**_known(ModelDimensions, d))


def options_from_dict(d: dict) -> ModelOptions:
    d = dict(d)
    audio = StackOptions(**_known(StackOptions, d.pop("audio", {})))
    text = StackOptions(**_known(StackOptions, d.pop("text", {})))
    return ModelOptions(audio=audio, text=text, **_known(ModelOptions, d))


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return {k: v for k, v in d.items() if k in names}
