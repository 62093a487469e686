"""Model dimensions (Whisper's names) and the options that switch the seed components.

Both are plain dataclasses that round-trip through JSON (`to_dict` / `from_dict`), because a
checkpoint's config.json is how a model is rebuilt.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Union

POSITIONS = ("sinusoidal", "learned", "learned_sinusoidal", "none")
DEFAULT_ROTARY_BASE = 10000.0

# Older config.json files: StackOptions fields that were renamed, and the one model-wide rotary
# base that became one per stack. options_from_dict reads both spellings.
RENAMED_STACK_FIELDS = {"n_conv_heads": "channel_blocks"}
LEGACY_MODEL_ROTARY_BASE = "rotary_base"

AUDIO_STRIDES = (2, 4)  # mel frames per encoder position that the stem can make (ModelOptions)
WHISPER_EN_VOCAB = 51864  # tokens of Whisper's English-only vocabulary (multilingual: 51865+)


@dataclass
class ModelDimensions:
    n_mels: int = 80
    n_audio_ctx: int = 1500  # encoder positions after the stem (1500 = 30 s at Whisper's stride 2)
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4
    n_vocab: int = WHISPER_EN_VOCAB
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
    # the stack's rotary base (inv_freq_i = base^(-2i/h)). The live value is the stack's
    # RotaryFrequencies buffer; dynamic base adjustment changes both through
    # ASRModel.set_rotary_base, and a checkpoint's config.json carries the value at saving time
    rotary_base: float = DEFAULT_ROTARY_BASE
    # T5-style log-bucketed relative position bias, shared by the layers of the stack
    relative_bias: bool = False
    bias_buckets: int = 32
    bias_max_distance: int = 128
    # attention kind: one name for every layer, or one per layer ("mha", "hybrid", "dynconv";
    # asr.nn.model.ATTENTION_LAYERS maps each name to its layer class)
    attention: Union[str, list] = "mha"
    # hybrid attention: local sliding-window heads (|i - j| <= window) plus global heads
    window: int = 64
    # heads that are local, the first ones; the rest are global. None = half of them
    # (n_head // 2). 0 (all global) and n_head (all local) are valid choices, which is why
    # "half" is spelled None and not 0
    local_heads: Optional[int] = None
    global_stride: int = 1  # > 1: global heads attend to keys/values average-pooled by this
    hybrid_gate: bool = True  # a learned output scale for the local heads and one for the global
    # dynamic convolution branch beside attention
    kernel_width: int = 15
    # the dynamic convolution splits the channels into this many contiguous blocks, each with
    # its own kernel predicted at every step; None = n_head blocks
    channel_blocks: Optional[int] = None
    # learned sinusoidal embeddings: recompute in backward instead of storing activations
    checkpoint_positions: bool = False

    def attention_kinds(self, n_layer: int) -> list[str]:
        """The attention kind of each layer (the names are checked where they become classes)."""
        kinds = [self.attention] * n_layer if isinstance(self.attention, str) else list(self.attention)
        if len(kinds) != n_layer:
            raise ValueError(f"attention lists {len(kinds)} kinds for {n_layer} layers")
        return kinds

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; choose from {POSITIONS}")


@dataclass
class ModelOptions:
    audio: StackOptions = field(default_factory=StackOptions)
    text: StackOptions = field(default_factory=lambda: StackOptions(positions="learned"))
    # Whisper-style fixed 30 s windows: the encoder always sees n_audio_ctx * 2 frames and no
    # padding mask. Only needed for imported Whisper weights, whose absolute positions assume it.
    fixed_audio_window: bool = False
    # Where the seed extras start (the one policy is asr/nn/extras_init.py):
    #   True  (warm start from Whisper): every extra is the identity - Givens angles 0, R = I,
    #         rotary scale 0, relative bias 0, hybrid output scales 1 with a window that covers
    #         the whole context, dynamic-convolution output projection 0 - so vanilla Whisper
    #         weights give exactly Whisper's outputs. A hybrid layer whose window or pooled
    #         global heads would change them is refused.
    #   False (training from scratch): the same, except rotary scale 1 (the position rotation is
    #         on from the first step) and any hybrid window.
    function_preserving_init: bool = False
    # mel frames (10 ms) per encoder position. 2 is Whisper's stem (one stride-2 convolution,
    # 20 ms positions); 4 makes the first convolution stride 2 as well (40 ms positions, as the
    # 4x subsampling front ends of ESPnet and icefall): the encoder's sequence is half as long,
    # so its attention and linear layers cost half. n_audio_ctx * audio_stride frames are the
    # longest audio the encoder takes.
    audio_stride: int = 2

    def __post_init__(self):
        if self.audio_stride not in AUDIO_STRIDES:
            raise ValueError(f"audio_stride must be one of {AUDIO_STRIDES}, got {self.audio_stride!r}")
        if self.fixed_audio_window and self.audio_stride != 2:
            raise ValueError("fixed_audio_window is Whisper's 30 s window, which needs audio_stride 2")


def to_dict(obj) -> dict:
    return asdict(obj)


def dims_from_dict(d: dict) -> ModelDimensions:
    return ModelDimensions(**_known(ModelDimensions, d))


def options_from_dict(d: dict) -> ModelOptions:
    """ModelOptions from config.json, also in the older spellings: renamed stack fields, and one
    model-level rotary_base, which then becomes the base of every stack that has none."""
    d = dict(d)
    legacy_base = d.pop(LEGACY_MODEL_ROTARY_BASE, None)
    stacks = {}
    for name in ("audio", "text"):
        stack = _renamed(d.pop(name, {}))
        if legacy_base is not None:
            stack.setdefault("rotary_base", legacy_base)
        stacks[name] = StackOptions(**_known(StackOptions, stack))
    return ModelOptions(**stacks, **_known(ModelOptions, d))


def _renamed(stack: dict) -> dict:
    stack = dict(stack)
    for old, new in RENAMED_STACK_FIELDS.items():
        if old in stack:
            if new in stack:
                raise ValueError(f"StackOptions has both {old!r} and its new name {new!r}")
            stack[new] = stack.pop(old)
    return stack


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return {k: v for k, v in d.items() if k in names}
