"""The training configuration: YAML into typed dataclasses, checked before any work starts.

A recipe is a YAML file with one mapping per section (``run``, ``model``, ``data``, ...). Every
key must be a field of its section's dataclass and every value must have the field's type: an
unknown key or a wrong type is an error that names the key and the file, so a typo cannot
silently train with a default. ``--set section.key=value`` overrides (the value is read as YAML,
so ``--set optim.lr=3e-4`` is a float and ``--set data.train=out/x/train.jsonl`` a string).

The resolved configuration (defaults filled in, overrides applied) is what the run directory
and every checkpoint record, and what ``asr train --resume`` reads back.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from ..config import AUDIO_STRIDES
from ..data.augment import AugmentConfig
from ..errors import InputError
from ..text.target_style import TARGET_STYLES

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
DISTRIBUTED_STRATEGIES = ("ddp", "fsdp")
SCHEDULES = ("cosine", "inverse_sqrt", "constant")
STACKS = ("audio", "text")
NORMALIZERS = ("whisper-english", "basic", "none")
# numbers YAML 1.1 leaves as strings: an exponent without a dot in the mantissa ("3e-4")
YAML11_FLOAT = re.compile(r"^[-+]?\d+[eE][-+]?\d+$")


class ConfigError(InputError):
    """A configuration that cannot be used: ``"<file>: <key>: <problem>"`` on one line."""


@dataclass
class RunConfig:
    seed: int = 0
    max_steps: int = 1000
    # wall-clock budget of one process's training loop in minutes (None: none). When it runs
    # out the run validates, checkpoints and stops as at max_steps; --resume continues it
    max_minutes: Optional[float] = None
    # shorten run.max_steps (never lengthen it), once, at the first validation after 100 steps of
    # the process (loop.FIT_AFTER_STEPS), so that the whole schedule ends inside run.max_minutes
    # at the steady pace measured until then (schedule.fitted_max_steps): a recipe sized for one
    # CPU still decays its lr to the end on a slower one
    fit_to_max_minutes: bool = False
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    threads: int = 0  # CPU threads for torch (0: torch's default)
    compile: bool = False  # torch.compile the residual blocks for training (asr.train.loop.compile_blocks)
    deterministic: bool = False  # torch.use_deterministic_algorithms (exact resume on CPU)
    log_every: int = 1  # optimiser steps between metrics.jsonl rows
    progress: bool = True  # tqdm bar
    tensorboard: bool = False  # also write the metrics as TensorBoard events in RUN_DIR/tensorboard/


@dataclass
class ModelConfig:
    preset: str = "whisper-cpu-small"  # asr.nn.presets name; n_vocab comes from the tokenizer
    dims: dict = field(default_factory=dict)  # ModelDimensions fields to override
    audio: dict = field(default_factory=dict)  # StackOptions fields of the encoder to override
    text: dict = field(default_factory=dict)  # StackOptions fields of the decoder to override
    rotary_base: float = 10000.0
    # mel frames per encoder position: 2 (Whisper's stem, 20 ms) or 4 (40 ms, half the encoder's
    # sequence). None: the preset's (2), or with init_from the pretrained model's, which a set
    # value must equal (its convolutions were trained at that stride)
    audio_stride: Optional[int] = None
    dropout: float = 0.0  # residual dropout after every attention / MLP branch (training only)
    init_from: Optional[str] = None  # a checkpoint directory or built-in model name (tiny.en)

    def __post_init__(self):
        if self.audio_stride is not None and self.audio_stride not in AUDIO_STRIDES:
            raise ValueError(f"audio_stride must be one of {AUDIO_STRIDES}, got {self.audio_stride}")


@dataclass
class DataConfig:
    train: str = ""
    dev: str = ""
    max_batch_seconds: float = 64.0  # padded seconds of audio per batch (batch x longest clip)
    max_batch_size: Optional[int] = None
    bucket_width_s: float = 0.5
    num_workers: int = 0  # DataLoader worker processes
    check_audio: bool = True  # open every file up front (missing / unreadable audio)
    skip_bad: bool = False  # drop bad utterances instead of stopping (--skip-bad)
    # share of utterances trained in Whisper's timestamp format (<|0.00|> text <|end|>), the rest
    # with <|notimestamps|>: fine-tuning a Whisper model keeps its long-form transcription
    timestamp_prob: float = 0.0
    # > 0: a random silence up to this long before each timestamped clip, its segment running
    # from the measured start of speech to its end (asr.data.collate), so that a model learns
    # where speech starts in a window instead of always <|0.00|>
    timestamp_max_lead_s: float = 0.0
    # as_is, or whisper: " Sentence case with a full stop." (asr.text.target_style), the format a
    # pretrained Whisper model writes, so fine-tuning does not also teach it to drop capitals
    target_style: str = "as_is"
    # every training batch's mel frames and token positions rounded up to multiples of these (with
    # the padding batches already have, so the loss is the same): in bfloat16 on a CPU each new
    # shape of a matrix product makes oneDNN compile kernels afresh, and rounded shapes repeat
    # (small.yaml's step 0.295 s against 0.349 s at 32 / 8; recipes/synth_en/RESULTS.md). 1: off
    pad_frames_multiple: int = 1
    pad_tokens_multiple: int = 1


@dataclass
class TokenizerConfig:
    vocab_size: int = 1000  # sentencepiece text vocabulary trained on data.train's transcripts
    model_type: str = "unigram"


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-9
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    accumulate: int = 1  # micro-batches per optimiser step
    fused: bool = True  # fused AdamW where torch has it for the device
    max_bad_steps: int = 5  # consecutive NaN/inf steps that stop the run
    freeze: list = field(default_factory=list)  # parameter-name prefixes kept fixed (e.g. model.encoder.conv)


@dataclass
class ScheduleConfig:
    kind: str = "cosine"  # cosine | inverse_sqrt | constant, after a linear warmup
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05  # cosine: final lr / peak lr


@dataclass
class LossConfig:
    label_smoothing: float = 0.1
    ctc_weight: float = 0.3  # joint CTC/attention: (1 - w) attention + w CTC on the encoder
    # a soft monotonic window on the cross-attention for the first N steps (asr.train.attention_prior)
    attention_window_steps: int = 0
    attention_window_sigma_s: float = 0.3  # its width (standard deviation), seconds of audio
    attention_window_fade: bool = False  # fade it out linearly over those steps instead of stopping at once
    # fraction of the decoder's input text tokens replaced by a random text token during training
    # (the targets stay): the decoder learns not to trust its own history over the audio
    token_corruption: float = 0.0


@dataclass
class DynamicBaseConfig:
    """EMA-driven rotary base rule (asr.train.dynamic_base); constants in loss units and steps."""

    enabled: bool = True
    stacks: list = field(default_factory=lambda: ["audio", "text"])  # stacks whose base it moves
    ema_beta: float = 0.9  # smoothing of the training loss per optimiser step
    tolerance: float = 0.01  # relative change of the smoothed loss that counts as a move
    grow: float = 1.1  # base x grow while the smoothed loss keeps improving
    shrink: float = 0.9  # base x shrink when it rises
    min_base: float = 1000.0
    max_base: float = 100000.0
    start_step: int = 100  # no change before this step (the loss falls fast at first anyway)
    cooldown_steps: int = 100  # steps between decisions


@dataclass
class ValidationConfig:
    every_steps: int = 500  # and at the end
    max_utterances: Optional[int] = None  # first N of data.dev (None: all)
    batch_seconds: float = 120.0  # padded audio seconds per decoding batch
    # decoding cap: tokens_per_second x clip seconds + extra_tokens; None = measured on the
    # training transcripts (their highest rate x 1.5), so looping hypotheses stop early
    tokens_per_second: Optional[float] = None
    extra_tokens: int = 10
    normalizer: str = "whisper-english"
    # > 0: the dev WER (which picks the best checkpoint) from joint CTC/attention decoding with
    # this weight on the CTC prefix score (asr.inference.ctc_prefix; needs loss.ctc_weight > 0)
    ctc_weight: float = 0.0


@dataclass
class CheckpointConfig:
    every_steps: int = 500  # and at the end
    keep_last: int = 3  # plus the best by dev WER
    average: bool = True  # keep a running average of the weights (icefall's averaged model)
    average_every: int = 10  # steps between updates of the average
    average_start: int = 0  # first step that enters the average
    save_initial: bool = False  # write RUN/initial, the model before the first step (a warm start's step 0)


@dataclass
class DistributedConfig:
    """Under torchrun (ignored in a single process)."""

    backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    strategy: str = "ddp"  # ddp: a whole replica per rank | fsdp: weights, gradients, optimiser state sharded


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dynamic_base: DynamicBaseConfig = field(default_factory=DynamicBaseConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(enabled=False))
    precision: str = "auto"
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


# ---------------------------------------------------------------------------------------------
# loading


def load_config(path, overrides: Optional[list[str]] = None) -> TrainConfig:
    """Read a YAML recipe, apply ``section.key=value`` overrides, check and type everything."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(path, f"cannot read ({err})") from None
    except yaml.YAMLError as err:
        raise ConfigError(path, f"invalid YAML ({err})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping of sections, got {type(raw).__name__}")
    apply_overrides(raw, overrides or [])
    return config_from_dict(raw, str(path))


def apply_overrides(raw: dict, overrides: list[str]) -> None:
    """``section.key=value`` (or ``key=value`` for a top-level field) into ``raw``, in place."""
    for item in overrides:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError("--set", f"{item!r} is not section.key=value")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        *sections, key = name.strip().split(".")
        target = raw
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError("--set", f"{name}: {section} is not a section")
        target[key] = value


def config_from_dict(raw: dict, where: str) -> TrainConfig:
    config = _build(TrainConfig, raw, where, prefix="")
    check_values(config, where)
    return config


def _build(cls, raw: dict, where: str, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(where, f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(where, f"{prefix}{key}: unknown key (known: {', '.join(names)})")
    values = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value if value is not None else {}, where, f"{prefix}{key}.")
        else:
            values[key] = _typed(value, hint, where, f"{prefix}{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(where, f"{prefix.rstrip('.') or 'config'}: {err}") from None


def _typed(value: Any, hint, where: str, key: str):
    """``value`` checked against the type ``hint`` (int accepted for float; bool is never an int)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(value, option, where, key)
            except ConfigError:
                continue
        raise ConfigError(where, f"{key}: expected {_type_name(hint)}, got {value!r}")
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and YAML11_FLOAT.match(value):
        return float(value)  # YAML 1.1 reads 3e-4 (no dot) as a string
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if (hint is list or origin is list) and isinstance(value, list):
        return [_typed(v, args[0], where, key) for v in value] if args else list(value)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_typed(v, args[0], where, key) for v in value)
    if hint is dict and isinstance(value, dict):
        return dict(value)
    raise ConfigError(where, f"{key}: expected {_type_name(hint)}, got {value!r}")


def _type_name(hint) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def check_values(config: TrainConfig, where: str) -> None:
    """Choices and ranges, each named by its key."""
    def need(ok: bool, key: str, problem: str):
        if not ok:
            raise ConfigError(where, f"{key}: {problem}")

    need(config.precision in PRECISIONS, "precision", f"{config.precision!r} is not one of {PRECISIONS}")
    need(config.schedule.kind in SCHEDULES, "schedule.kind", f"{config.schedule.kind!r} is not one of {SCHEDULES}")
    need(config.validation.normalizer in NORMALIZERS, "validation.normalizer",
         f"{config.validation.normalizer!r} is not one of {NORMALIZERS}")
    need(config.run.device in ("auto", "cpu", "cuda") or config.run.device.startswith("cuda:"),
         "run.device", f"{config.run.device!r} is not auto, cpu or cuda")
    need(config.run.max_steps >= 1, "run.max_steps", "must be >= 1")
    need(not config.run.fit_to_max_minutes or config.run.max_minutes is not None, "run.fit_to_max_minutes",
         "true needs run.max_minutes")
    need(not config.run.fit_to_max_minutes or config.validation.every_steps < config.run.max_steps,
         "run.fit_to_max_minutes", "fits the schedule at the first validation: validation.every_steps must be "
         "< run.max_steps")
    need(config.optim.accumulate >= 1, "optim.accumulate", "must be >= 1")
    need(config.optim.lr > 0, "optim.lr", "must be > 0")
    need(len(config.optim.betas) == 2, "optim.betas", "must be two numbers")
    need(0.0 <= config.loss.ctc_weight <= 1.0, "loss.ctc_weight", "must be in [0, 1]")
    need(config.loss.attention_window_steps >= 0, "loss.attention_window_steps", "must be >= 0")
    need(config.loss.attention_window_sigma_s > 0, "loss.attention_window_sigma_s", "must be > 0")
    need(0.0 <= config.loss.label_smoothing < 1.0, "loss.label_smoothing", "must be in [0, 1)")
    need(0.0 <= config.model.dropout < 1.0, "model.dropout", "must be in [0, 1)")
    need(0.0 <= config.loss.token_corruption < 1.0, "loss.token_corruption", "must be in [0, 1)")
    need(config.model.rotary_base > 1.0, "model.rotary_base", "must be > 1")
    base = config.dynamic_base
    need(all(s in STACKS for s in base.stacks) and base.stacks, "dynamic_base.stacks",
         f"must list stacks from {STACKS}")
    need(0.0 <= base.ema_beta < 1.0, "dynamic_base.ema_beta", "must be in [0, 1)")
    need(base.grow >= 1.0, "dynamic_base.grow", "must be >= 1")
    need(0.0 < base.shrink <= 1.0, "dynamic_base.shrink", "must be in (0, 1]")
    need(1.0 < base.min_base <= base.max_base, "dynamic_base.min_base", "must be > 1 and <= max_base")
    need(base.cooldown_steps >= 1, "dynamic_base.cooldown_steps", "must be >= 1")
    need(config.validation.every_steps >= 1, "validation.every_steps", "must be >= 1")
    need(0.0 <= config.validation.ctc_weight <= 1.0, "validation.ctc_weight", "must be in [0, 1]")
    if config.run.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
        except ImportError:
            need(False, "run.tensorboard", "true needs the tensorboard package (pip install 'asr[tensorboard]')")
    need(not config.validation.ctc_weight or config.loss.ctc_weight > 0, "validation.ctc_weight",
         "joint CTC/attention decoding needs a CTC head: set loss.ctc_weight > 0")
    need(config.checkpoint.every_steps >= 1, "checkpoint.every_steps", "must be >= 1")
    need(config.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
    need(config.checkpoint.average_every >= 1, "checkpoint.average_every", "must be >= 1")
    need(config.data.max_batch_seconds > 0, "data.max_batch_seconds", "must be > 0")
    need(1 <= config.data.pad_frames_multiple <= 3000, "data.pad_frames_multiple", "must be in [1, 3000] frames")
    need(1 <= config.data.pad_tokens_multiple <= 448, "data.pad_tokens_multiple", "must be in [1, 448] tokens")
    need(bool(config.data.train), "data.train", "no training manifest given")
    need(0.0 <= config.data.timestamp_prob <= 1.0, "data.timestamp_prob", "must be in [0, 1]")
    need(0.0 <= config.data.timestamp_max_lead_s <= 20.0, "data.timestamp_max_lead_s", "must be in [0, 20] seconds")
    need(config.data.target_style in TARGET_STYLES, "data.target_style",
         f"{config.data.target_style!r} is not one of {TARGET_STYLES}")
    need(all(isinstance(p, str) and p for p in config.optim.freeze), "optim.freeze",
         "must list parameter-name prefixes")
    need(config.distributed.strategy in DISTRIBUTED_STRATEGIES, "distributed.strategy",
         f"{config.distributed.strategy!r} is not one of {DISTRIBUTED_STRATEGIES}")
    need(config.distributed.backend in ("auto", "gloo", "nccl"), "distributed.backend",
         f"{config.distributed.backend!r} is not auto, gloo or nccl")


def _plain(obj):
    """Tuples to lists, so the YAML dump is plain (safe_load-able) YAML."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
