"""Read a transformers Whisper directory: config.json + model.safetensors (or shards listed in
model.safetensors.index.json), names like model.encoder.layers.0.self_attn.q_proj.weight."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ..config import ModelDimensions
from .whisper_names import ConversionError, WhisperWeights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"
MODEL_PREFIX = "model."  # WhisperForConditionalGeneration; a bare WhisperModel has none
TIED_PROJECTION = "proj_out.weight"
EMBEDDINGS = "decoder.embed_tokens.weight"

# our ModelDimensions field <- transformers config key
DIMS = {
    "n_mels": "num_mel_bins", "n_audio_ctx": "max_source_positions", "n_audio_state": "d_model",
    "n_audio_head": "encoder_attention_heads", "n_audio_layer": "encoder_layers",
    "n_vocab": "vocab_size", "n_text_ctx": "max_target_positions", "n_text_state": "d_model",
    "n_text_head": "decoder_attention_heads", "n_text_layer": "decoder_layers",
}
# config values that would make the network compute something other than Whisper
EXPECTED_CONFIG = {"activation_function": "gelu", "scale_embedding": False}
GENERATION_KEYS = {"suppress_tokens": "suppress_ids", "begin_suppress_tokens": "suppress_ids_begin",
                   "alignment_heads": "alignment_heads"}

WHOLE_MODEL = {
    "encoder.conv1": "encoder.conv1",
    "encoder.conv2": "encoder.conv2",
    "encoder.embed_positions": "encoder.positional_embedding",
    "encoder.layer_norm": "encoder.ln_post",
    "decoder.embed_tokens": "decoder.token_embedding",
    "decoder.embed_positions": "decoder.positional_embedding",
    "decoder.layer_norm": "decoder.ln",
}
PER_LAYER = {
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value", "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
}
LAYER_NAME = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)")
POSITION_TABLES = {"encoder.positional_embedding", "decoder.positional_embedding"}


def read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConversionError(f"{path}: unreadable ({err})") from None
    if config.get("model_type", "whisper") != "whisper":
        raise ConversionError(f"{path}: model_type is {config['model_type']!r}, not 'whisper'")
    for key, expected in EXPECTED_CONFIG.items():
        if key in config and config[key] != expected:
            raise ConversionError(f"{path}: {key} = {config[key]!r}, but Whisper needs {expected!r}")
    return config


def dims_from_config(config: dict, path: Path) -> ModelDimensions:
    missing = sorted({key for key in DIMS.values() if key not in config})
    if missing:
        raise ConversionError(f"{path}: config lacks {', '.join(missing)}")
    return ModelDimensions(**{field: int(config[key]) for field, key in DIMS.items()})


def load_tensors(directory: Path) -> dict[str, Tensor]:
    index = directory / INDEX_FILE
    if (directory / WEIGHTS_FILE).is_file():
        files = [directory / WEIGHTS_FILE]
    elif index.is_file():
        try:
            files = sorted({directory / name for name in json.loads(index.read_text())["weight_map"].values()})
        except (OSError, json.JSONDecodeError, KeyError, AttributeError) as err:
            raise ConversionError(f"{index}: unreadable ({err})") from None
    else:
        raise ConversionError(f"{directory}: no {WEIGHTS_FILE} (only safetensors weights are read)")
    tensors = {}
    for file in files:
        try:
            tensors.update(load_file(file, device="cpu"))
        except (SafetensorError, OSError) as err:
            raise ConversionError(f"{file}: unreadable weights ({err})") from None
    return tensors


def to_openai_names(tensors: dict[str, Tensor], source: Path) -> dict[str, Tensor]:
    result = {}
    for name, value in tensors.items():
        hf_name = name[len(MODEL_PREFIX):] if name.startswith(MODEL_PREFIX) else name
        module, parameter = hf_name.rsplit(".", 1)
        if module in WHOLE_MODEL:
            target = WHOLE_MODEL[module]
            result[target if target in POSITION_TABLES else f"{target}.{parameter}"] = value
            continue
        match = LAYER_NAME.fullmatch(hf_name)
        if not match or match.group(3) not in PER_LAYER:
            raise ConversionError(f"{source}: tensor {name} is not part of a Whisper model")
        stack, layer, sublayer, parameter = match.groups()
        target = PER_LAYER[sublayer]
        # a key bias adds the same q.b to every score of a query, which softmax ignores
        if target.endswith(".key") and parameter == "bias":
            continue
        result[f"{stack}.blocks.{layer}.{target}.{parameter}"] = value
    return result


def _generation_metadata(directory: Path) -> dict:
    path = directory / GENERATION_CONFIG_FILE
    try:
        config = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # optional decoding hints: a broken file loses nothing the model needs
    return {ours: config[key] for key, ours in GENERATION_KEYS.items() if config.get(key) is not None}


def read_huggingface(directory: Path) -> WhisperWeights:
    directory = Path(directory)
    config = read_config(directory)
    dims = dims_from_config(config, directory / CONFIG_FILE)
    tensors = load_tensors(directory)
    projection = tensors.pop(TIED_PROJECTION, None)
    embeddings = tensors.get(MODEL_PREFIX + EMBEDDINGS, tensors.get(EMBEDDINGS))
    if projection is not None and (embeddings is None or not torch.equal(projection, embeddings)):
        raise ConversionError(f"{directory}: {TIED_PROJECTION} differs from the token embedding; "
                              "our decoder ties them")
    metadata = {"source_format": "huggingface", **_generation_metadata(directory)}
    return WhisperWeights(dims, to_openai_names(tensors, directory), metadata)
