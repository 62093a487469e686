"""The model and tokenizer a training run starts from: a preset with overrides and a
sentencepiece vocabulary trained on the training transcripts, or pretrained weights and their
tokenizer (``--init-from``), with any seed extras at function-preserving init."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch

from ..config import ModelOptions, StackOptions, dims_from_dict, options_from_dict, to_dict
from ..convert.warm_start import load_vanilla_weights
from ..errors import InputError
from ..nn.model import ASRModel
from ..nn.presets import PRESETS, preset
from ..store.checkpoint import CheckpointError, load_checkpoint, load_tokenizer
from ..text.tokenizer import Tokenizer
from .config import ConfigError, TrainConfig

EMBEDDING_INIT_STD = 0.02
STACK_FIELDS = {f.name for f in dataclasses.fields(StackOptions)}


def train_tokenizer(texts: list[str], config: TrainConfig) -> Tokenizer:
    return Tokenizer.train(texts, vocab_size=config.tokenizer.vocab_size, model_type=config.tokenizer.model_type)


def _options_dict(options: ModelOptions, config: TrainConfig, where: str) -> dict:
    d = to_dict(options)
    for stack in ("audio", "text"):
        overrides = getattr(config.model, stack)
        unknown = set(overrides) - STACK_FIELDS
        if unknown:
            raise ConfigError(where, f"model.{stack}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(STACK_FIELDS))})")
        d[stack].update(overrides)
        if "rotary_base" in STACK_FIELDS and "rotary_base" not in overrides:
            d[stack]["rotary_base"] = config.model.rotary_base  # one base per stack
    if "rotary_base" not in STACK_FIELDS:
        d["rotary_base"] = config.model.rotary_base  # one base per model (older layout)
    if config.model.audio_stride is not None:
        d["audio_stride"] = config.model.audio_stride
    return d


def build_model(config: TrainConfig, tokenizer: Tokenizer, where: str) -> ASRModel:
    """A fresh model of config.model's preset, with n_vocab from the tokenizer."""
    if config.model.preset not in PRESETS:
        raise ConfigError(where, f"model.preset: unknown preset {config.model.preset!r} "
                                 f"(choose from {', '.join(sorted(PRESETS))})")
    dims, options = preset(config.model.preset, n_vocab=tokenizer.n_vocab)
    d = to_dict(dims)
    unknown = set(config.model.dims) - set(d)
    if unknown:
        raise ConfigError(where, f"model.dims: unknown keys {sorted(unknown)} (known: {', '.join(d)})")
    if "n_vocab" in config.model.dims:
        raise ConfigError(where, "model.dims.n_vocab: set by the tokenizer, not the config")
    d.update(config.model.dims)
    try:
        model = ASRModel(dims_from_dict(d), options_from_dict(_options_dict(options, config, where)))
    except (TypeError, ValueError) as err:
        raise ConfigError(where, f"model: {err}") from None
    # nn.Embedding starts at N(0, 1); through the tied output that gives logits of std sqrt(d)
    # and a first loss of ~5x ln(n_vocab). GPT-2's 0.02 starts near uniform predictions.
    torch.nn.init.normal_(model.decoder.token_embedding.weight, std=EMBEDDING_INIT_STD)
    return model


# config.json sections of a pretrained checkpoint that every model trained from it keeps:
# Whisper's decoding settings (suppressed tokens, ...) and where the weights came from
INHERITED_CONFIG = ("whisper", "converted_from")


def inherited_config(saved: dict) -> dict:
    return {key: saved[key] for key in INHERITED_CONFIG if key in saved}


def load_pretrained(name_or_path: str, config: TrainConfig, where: str) -> tuple[ASRModel, Tokenizer]:
    """Pretrained weights and their tokenizer. With stack overrides in the config (seed extras),
    the weights go into the extended model whose extras start as the identity. What the saved
    models must carry over from the pretrained config is ``pretrained_config(name_or_path)``."""
    from ..store.registry import resolve

    try:
        directory = resolve(name_or_path, quiet=True)
        pretrained, saved = load_checkpoint(directory)
        tokenizer = load_tokenizer(directory, saved)
    except (CheckpointError, ValueError, OSError) as err:
        raise InputError(name_or_path, f"cannot start from these weights ({err})") from None
    if tokenizer is None:
        raise InputError(name_or_path, "the checkpoint has no tokenizer to train with")
    stride = config.model.audio_stride
    if stride is not None and stride != pretrained.audio_stride:
        raise ConfigError(where, f"model.audio_stride: {stride}, but {name_or_path} was trained with "
                                 f"{pretrained.audio_stride} (leave it unset to keep it)")
    if not (config.model.audio or config.model.text):
        return pretrained.train(), tokenizer
    d = _options_dict(pretrained.options, config, where)
    d["function_preserving_init"] = True
    try:
        model = ASRModel(pretrained.dims, options_from_dict(d))
    except ValueError as err:  # e.g. a hybrid window that could not start as plain attention
        raise ConfigError(where, f"model: cannot add these extras to {name_or_path} ({err})") from None
    load_vanilla_weights(model, pretrained.state_dict())
    return model, tokenizer


def pretrained_config(name_or_path: str) -> dict:
    """The INHERITED_CONFIG sections of a pretrained model's config.json (Whisper's suppressed
    tokens among them: without them a fine-tuned Whisper decodes differently from step 0)."""
    from ..store.checkpoint import read_config
    from ..store.registry import resolve

    return inherited_config(read_config(resolve(name_or_path, quiet=True)))


def load_run_tokenizer(directory: Path) -> Optional[Tokenizer]:
    import json

    description = directory / "description.json"
    if not description.is_file():
        return None
    return Tokenizer.load(directory, json.loads(description.read_text()))


def save_run_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    import json

    from ..store.atomic import write_text_atomic

    description = tokenizer.save(directory)
    write_text_atomic(directory / "description.json", json.dumps(description, indent=1) + "\n")
