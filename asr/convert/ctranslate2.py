"""Read a CTranslate2 Whisper model directory (model.bin + config.json + tokenizer) without
importing ctranslate2.

model.bin (binary versions 4 to 6), all integers little-endian:

    uint32 binary_version, string spec_name ("WhisperSpec"), uint32 spec_revision
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank], uint8 dtype_id, uint32 n_bytes, bytes
    uint32 n_aliases, then per alias: string alias, string target

A string is uint16 length (including a trailing NUL), then the UTF-8 bytes and the NUL.
Names are "/"-scoped: encoder/layer_0/self_attention/linear_0/weight. Quantised weights
(int8 per output row, int16 per tensor) come with a `<name>_scale` and mean value / scale.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import torch
from torch import Tensor

from ..config import ModelDimensions
from .whisper_names import ConversionError, WhisperWeights

MODEL_FILE = "model.bin"
CONFIG_FILE = "config.json"
SPEC_NAME = "WhisperSpec"
# the layout above is ctranslate2 4.x's writer (version 6); 4 and 5 share it, 5 changed only
# how quantised values were rounded. Older files store item sizes instead of dtype ids.
BINARY_VERSIONS = (4, 5, 6)
DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)  # by id
SCALE_SUFFIX = "_scale"
GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU (erf form, as in Whisper)
# Scalar flags of the decoder spec, and the value that matches Whisper's computation
EXPECTED_FLAGS = {
    "decoder/activation": GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/alibi_use_positive_positions": 0,  # written by newer ctranslate2 versions
    "decoder/scale_alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Used by ctranslate2 for word alignment only; the real head list is in config.json
UNUSED = frozenset({"decoder/alignment_heads", "decoder/alignment_layer"})
HEADS = {"encoder/num_heads", "decoder/num_heads"}
TIED_PROJECTION = "decoder/projection/weight"
EMBEDDINGS = "decoder/embeddings/weight"
# Metadata from config.json worth keeping in our checkpoint
CONFIG_KEYS = ("suppress_ids", "suppress_ids_begin", "alignment_heads", "lang_ids")

WHOLE_MODEL = {
    "encoder/conv1": "encoder.conv1",
    "encoder/conv2": "encoder.conv2",
    "encoder/layer_norm": "encoder.ln_post",
    "decoder/layer_norm": "decoder.ln",
    "decoder/embeddings": "decoder.token_embedding",
}
POSITIONS = {
    "encoder/position_encodings/encodings": "encoder.positional_embedding",
    "decoder/position_encodings/encodings": "decoder.positional_embedding",
}
PER_LAYER = {
    "self_attention/layer_norm": "attn_ln",
    "self_attention/linear_1": "attn.out",
    "attention/layer_norm": "cross_attn_ln",
    "attention/linear_0": "cross_attn.query",
    "attention/linear_2": "cross_attn.out",
    "ffn/layer_norm": "mlp_ln",
    "ffn/linear_0": "mlp.0",
    "ffn/linear_1": "mlp.2",
}
# ctranslate2 stacks these projections along the output dimension
FUSED = {
    "self_attention/linear_0": ("attn.query", "attn.key", "attn.value"),
    "attention/linear_1": ("cross_attn.key", "cross_attn.value"),
}
PARAMETERS = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}
LAYER_NAME = re.compile(r"(encoder|decoder)/layer_(\d+)/(.+)/(\w+)")
STACK_PREFIX = {"encoder": "encoder.blocks", "decoder": "decoder.blocks"}


class _Reader:
    """Sequential little-endian reads from the open model.bin, with truncation checks."""

    def __init__(self, file, path: Path):
        self.file, self.path = file, path

    def read(self, n: int) -> bytearray:
        data = bytearray(n)  # its own buffer: tensors made over it are suitably aligned
        if self.file.readinto(data) != n:
            raise ConversionError(f"{self.path}: truncated (ends inside a {n}-byte field)")
        return data

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        return self.read(self.unpack("H"))[:-1].decode("utf-8")  # drop the trailing NUL


def read_model_bin(path: Path) -> tuple[str, dict[str, Tensor], dict[str, str]]:
    """(spec name, variables by name, aliases alias -> target) of a model.bin."""
    with open(path, "rb") as file:
        reader = _Reader(file, path)
        version = reader.unpack("I")
        if version not in BINARY_VERSIONS:
            raise ConversionError(f"{path}: CTranslate2 binary version {version} is not supported "
                                  f"(supported: {', '.join(map(str, BINARY_VERSIONS))})")
        spec = reader.string()
        reader.unpack("I")  # spec revision: the variable names it implies are checked later
        variables = {}
        for _ in range(reader.unpack("I")):
            name = reader.string()
            shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
            dtype_id, n_bytes = reader.unpack("B"), reader.unpack("I")
            if dtype_id >= len(DTYPES):
                raise ConversionError(f"{path}: {name} has unknown dtype id {dtype_id}")
            dtype = DTYPES[dtype_id]
            if n_bytes != torch.Size(shape).numel() * dtype.itemsize:
                raise ConversionError(f"{path}: {name} holds {n_bytes} bytes, not shape {shape} of {dtype}")
            variables[name] = torch.frombuffer(reader.read(n_bytes), dtype=dtype).reshape(shape)
        aliases = {}
        for _ in range(reader.unpack("I")):
            alias = reader.string()
            aliases[alias] = reader.string()
    return spec, variables, aliases


def dequantize(variables: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Float32 values of every non-scalar variable; a `<name>_scale` divides its int weight."""
    result = {}
    for name, value in variables.items():
        if name.endswith(SCALE_SUFFIX) or name.endswith("_zero"):
            if name.endswith("_zero"):
                raise ConversionError(f"{path}: {name}: zero-point (AWQ) quantisation is not supported")
            continue
        scale = variables.get(name + SCALE_SUFFIX)
        if value.is_floating_point():
            if scale is not None:
                raise ConversionError(f"{path}: {name} is floating point but has a scale")
            result[name] = value.to(torch.float32)
        elif value.dim() == 0:
            result[name] = value.clone()  # integer flags and head counts stay as they are
        else:
            if scale is None:
                raise ConversionError(f"{path}: integer weight {name} has no {name}{SCALE_SUFFIX}")
            # per output row (int8) or one per tensor (int16): broadcast over the other dims
            scale = scale.to(torch.float32).reshape(-1, *([1] * (value.dim() - 1)))
            result[name] = value.to(torch.float32) / scale
    return result


def _resolve_aliases(variables: dict[str, Tensor], aliases: dict[str, str], path: Path) -> None:
    target = aliases.pop(TIED_PROJECTION, None)
    if target is not None and target != EMBEDDINGS:
        raise ConversionError(f"{path}: output projection is tied to {target}, not the embeddings")
    projection = variables.pop(TIED_PROJECTION, None)
    if projection is not None and not torch.equal(projection, variables.get(EMBEDDINGS)):
        raise ConversionError(f"{path}: output projection differs from the token embedding; "
                              "our decoder ties them")
    for alias, name in aliases.items():
        if name not in variables:
            raise ConversionError(f"{path}: alias {alias} points to missing variable {name}")
        variables[alias] = variables[name]


def _check_flags(variables: dict[str, Tensor], path: Path) -> None:
    for name, expected in EXPECTED_FLAGS.items():
        if name in variables and int(variables[name]) != expected:
            raise ConversionError(f"{path}: {name} = {int(variables[name])}, but Whisper needs {expected}")


def to_openai_names(variables: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """ctranslate2 names -> OpenAI names; fused projections are split back apart."""
    tensors = {}
    for name, value in variables.items():
        if name in UNUSED or name in HEADS or name in EXPECTED_FLAGS:
            continue
        if name in POSITIONS:
            tensors[POSITIONS[name]] = value
            continue
        module, parameter = name.rsplit("/", 1)
        if module in WHOLE_MODEL and parameter in PARAMETERS:
            tensors[f"{WHOLE_MODEL[module]}.{PARAMETERS[parameter]}"] = value
            continue
        match = LAYER_NAME.fullmatch(name)
        if not match or match.group(4) not in PARAMETERS:
            raise ConversionError(f"{path}: variable {name} is not part of a Whisper model")
        stack, layer, sublayer, parameter = match.groups()
        prefix, parameter = f"{STACK_PREFIX[stack]}.{layer}", PARAMETERS[parameter]
        if sublayer in PER_LAYER:
            tensors[f"{prefix}.{PER_LAYER[sublayer]}.{parameter}"] = value
        elif sublayer in FUSED:
            parts = FUSED[sublayer]
            for part, chunk in zip(parts, value.chunk(len(parts), dim=0)):
                # Whisper's keys have no bias; a key bias adds the same q.b to every score of a
                # query, which softmax ignores, so dropping it changes nothing
                if part.endswith(".key") and parameter == "bias":
                    continue
                tensors[f"{prefix}.{part}.{parameter}"] = chunk.contiguous()
        else:
            raise ConversionError(f"{path}: variable {name} is not part of a Whisper model")
    return tensors


def _count_layers(variables: dict[str, Tensor], stack: str) -> int:
    layers = {int(m.group(2)) for m in map(LAYER_NAME.fullmatch, variables) if m and m.group(1) == stack}
    return max(layers) + 1 if layers else 0


def _dims(variables: dict[str, Tensor], path: Path) -> ModelDimensions:
    try:
        conv1 = variables["encoder/conv1/weight"]
        embeddings = variables[EMBEDDINGS]
        return ModelDimensions(
            n_mels=conv1.shape[1], n_audio_ctx=variables["encoder/position_encodings/encodings"].shape[0],
            n_audio_state=conv1.shape[0], n_audio_head=int(variables["encoder/num_heads"]),
            n_audio_layer=_count_layers(variables, "encoder"),
            n_vocab=embeddings.shape[0], n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
            n_text_state=embeddings.shape[1], n_text_head=int(variables["decoder/num_heads"]),
            n_text_layer=_count_layers(variables, "decoder"),
        )
    except KeyError as err:
        raise ConversionError(f"{path}: not a Whisper model (no {err.args[0]})") from None


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConversionError(f"{path}: unreadable ({err})") from None
    return {key: config[key] for key in CONFIG_KEYS if key in config}


def model_file(source: Path) -> Path:
    return source if source.is_file() else source / MODEL_FILE


def read_ctranslate2(source: Path) -> WhisperWeights:
    """A CTranslate2 Whisper directory (or its model.bin) -> OpenAI-named float32 weights."""
    path = model_file(Path(source))
    if not path.is_file():
        raise ConversionError(f"{source}: no {MODEL_FILE}")
    spec, variables, aliases = read_model_bin(path)
    if spec != SPEC_NAME:
        raise ConversionError(f"{path}: a {spec!r} model, not {SPEC_NAME!r}")
    variables = dequantize(variables, path)
    _resolve_aliases(variables, aliases, path)
    _check_flags(variables, path)
    dims = _dims(variables, path)
    metadata = {"source_format": "ctranslate2", **_read_config(path.parent)}
    return WhisperWeights(dims, to_openai_names(variables, path), metadata)


def tokenizer_path(source: Path) -> Path:
    """The directory the model lives in, where faster-whisper keeps tokenizer.json."""
    return model_file(Path(source)).parent
