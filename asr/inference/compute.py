"""Compute types for inference: those faster-whisper users know (auto, float32, int8, bfloat16,
float16) and mixed ones of our own (float32_shortlist, float16_decoder, bfloat16_encoder,
bfloat16_encoder_float16_decoder), each kept to what measured faster here without changing
transcripts.

- float32: the weights as trained; the reference every other type is checked against.
- int8 (CPU): every plain linear layer and the tied output projection become dynamically
  quantised int8 layers (torch's fbgemm kernels: int8 weights per output channel, activations
  quantised per call). Measured here against the other int8 route, weight-only int8 matmul
  (torch._weight_int8pack_mm), dynamic quantisation was 3-13x faster at every shape Whisper tiny
  decodes with (see scripts/bench_transcribe.py --compute-types), so it is the one used. The
  output projection matters most: at batch 1 it reads 80 MB of float32 weights per token.
  Convolutions, LayerNorm and attention stay float32.
- float32_shortlist (CPU): float32 throughout, except that the vocabulary projection first
  ranks the text tokens with an int8 copy of the table and recomputes only the top 128 of them
  (and every special token) in float32 (asr.inference.shortlist). A decoding step reads ~20 MB
  of the table instead of 80 MB; what the search picks carries its float32 logit. Where the CPU
  computes bfloat16 natively, one-row steps rank with a group-wise int4 copy instead (10 MB,
  Int4Ranking; since 2026-12-07).
- bfloat16_encoder (CPU with AVX512-BF16 or AMX): float32_shortlist, except that the encoder's
  linear layers multiply in bfloat16 (Bfloat16Linear: inputs and weights rounded to bfloat16,
  products summed in float32 by oneDNN's bf16 kernels, outputs rounded once more); the
  residual stream, LayerNorm, attention, GELU and the convolutions stay float32.
- float16_decoder (CPU with AVX2): float32_shortlist, except that the decoder's layers that run
  at every step (attention query/key/value and output, MLP; not the cross-attention's key/value
  projection, once a window), and the output projection's special-token rows, hold their
  weights in float16 and multiply with FBGEMM's float16 kernel (Float16WeightLinear): inputs
  and outputs float32, products summed in float32, so the one rounding is the weights', to 11
  significant bits (none for Whisper's own weights, float16 values). A decoding step reads every decoder
  weight from memory (33 MB for tiny.en in float32, beside the int8 table's 20 MB and the
  cross-attention keys' 18 MB, against a 32 MB L3 cache), and this halves those bytes.
- bfloat16_encoder_float16_decoder (CPU with AVX512-BF16 or AMX): both of the above.
- bfloat16: all weights in bfloat16 but the rotary machinery (to_half), logits in float32. Only
  where the hardware computes it: CUDA, or a CPU with AVX512-BF16 or AMX (elsewhere bf16 is
  emulated, ~100x slower).
- float16: CUDA only (no fast float16 matmul on CPUs).
- auto: the fastest type whose transcripts agree with float32's on >= 99% of words over the
  offline test set (scripts/compute_agreement.py: scripts/offline_testset.py's 45 utterances,
  tiny.en, temperature 0). On a CPU with AVX512-BF16 or AMX that is
  bfloat16_encoder_float16_decoder, on other x86 CPUs with AVX2 float16_decoder, elsewhere
  float32_shortlist (the last paragraph of this list says why the float16 decoder weights);
  before 2026-12-07 it was bfloat16_encoder / float32_shortlist. float32_shortlist: 100% greedy and 99.25% with beam
  5 (the two utterances that differ are near-ties, 0.002 apart in average log-probability), the
  same WER (16.58% greedy, 12.50% beam 5), and a decoding step at beam 5 in ~60% of float32's
  time (2-core AVX2 EPYC, 2026-12-03). bfloat16_encoder also agrees, on a CPU with AMX: 99.24%
  greedy (1 utterance of 45 differs; WER 16.84% against 16.58%) and 100% with beam 5 (12.50%
  both), the set transcribed in 0.85x float32_shortlist's time greedy and 0.87x at beam 5
  (2-core Intel Xeon with AMX, 2026-12-06); on a 2-core AVX512-BF16 EPYC without AMX the same
  day, 100% greedy (WER equal) and 99.50% at beam 5 (1 of 45; WER 12.24%), rerun the same
  evening with the same figures. As whole processes it is faster than float32_shortlist on
  every row of scripts/RESULTS-peers-whole-process-avx512-g.md (AVX512-BF16 EPYC,
  2026-12-06 20:33 UTC: 20 short clips 6.75 s against 7.62 s greedy, 8.25 against 9.15 s at
  beam 5; the 302.6 s file 10.99 against 11.26 s and 16.61 against 17.35 s; one 1-s file 1.84
  against 1.90 s), with a lower peak RSS (436-440 against 455-461 MB on the long file), so auto
  takes it where the CPU computes bfloat16 natively. (On the AMX Xeon the whole-process rows
  had been 0.92-1.05x float32_shortlist's, before float32_shortlist's decoder and memory changes
  of the same evening; not rerun there.) The other
  types fall short: int8 90.4% (WER 17.6%),
  bfloat16 96.5% (16.8%; AVX512-BF16 CPU), and variants tried (int8 with a float32 output
  projection: 93.2%; full-range int8 activations: 96.5%; int8 in the encoder only: 92.9%; in
  the decoder's layers only: 97.0%; the whole encoder in bfloat16 (residual stream, LayerNorm and
  attention too), decoder as float32_shortlist:
  97.5% greedy, 96.0% beam 5, for an encoder 1.4x faster, 0.165 against 0.228 s a 30-s window,
  AVX512-BF16 EPYC, 2026-12-05; int8 with one activation scale per row (per frame or token,
  weights per channel, products through torch._int_mm, 4.3x float32's speed at the encoder's
  shapes) on top of float32_shortlist, ad-hoc, greedy: every linear layer of the encoder 95.9%,
  of both stacks 95.4%, the encoder's MLPs 95.4%, its attention output and second MLP layer
  98.5%, the second MLP layer of both stacks 96.5%, of the encoder alone 99.75% greedy but
  98.2% with beam 5, for ~1/4 of the encoder's matmul work, 2026-12-05); faster-whisper's int8
  agrees with its own float32 on 92.9%
  of the same words (scripts/RESULTS-peers.md). int8 is the fast choice when ~1 point of WER is
  acceptable: ask for it by name. On CUDA auto is float32 (float16 there is not measured here).
  Since 2026-12-07 auto adds float16 decoder weights wherever FBGEMM's float16 kernel runs:
  bfloat16_encoder_float16_decoder on a CPU with native bfloat16, float16_decoder on other x86
  CPUs with AVX2. On the offline test set both agree with float32 exactly as the types they
  build on (2-core AVX512-BF16 EPYC, 2026-12-07): float16_decoder 100 % greedy and 99.25 % at
  beam 5, bfloat16_encoder_float16_decoder 100 % and 99.50 % (WER 16.58 % / 12.50 % and
  16.58 % / 12.24 %), not one transcript different from its base type's. A decoding step of the
  long-form file: 4.58 against 5.85 ms a token greedy and 8.26 against 10.12 ms at beam 5
  (bfloat16_encoder_float16_decoder against bfloat16_encoder), and, with FBGEMM, oneDNN and
  torch held to AVX2 on the same CPU (FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
  ATEN_CPU_CAPABILITY=avx2), 4.83 against 6.29 and 7.86 against 10.13 ms (float16_decoder
  against float32_shortlist), tokens identical (scripts/bench_decode_step.py, 4 rounds). On a
  CPU that has AVX2 only (2-core EPYC, 2026-12-07) as whole processes: the 302.6 s file in
  20.5 against 23.0 s greedy and 28.1 against 35.3 s at beam 5, 20 short clips equal
  (scripts/RESULTS-peers-whole-process-avx2-c.md); a decoding step 9.84 against 11.09 ms greedy
  and 15.87 against 18.67 ms at beam 5, tokens identical (bench_decode_step.py, 3 rounds).
  Rounding the activations to float16 as well (torch's float16 matrix-vector kernel, ~1.2x
  faster again) agreed on only 98.2 % greedy.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from .options import COMPUTE_TYPES
from ..hardware import native_bf16
from ..nn.rotary import RotaryEmbeddingWithRotation, RotaryFrequencies
from ..store.checkpoint import EMBEDDING, decoder_step_linears, read_from_file  # EMBEDDING: the tied table (token embedding and output projection)

# what auto resolves to on the CPU: the fastest type measured to agree with float32 on >= 99% of
# words (see the module docstring for the figures), by (bfloat16 computed natively
# (asr.hardware.native_bf16), FBGEMM's float16 kernel runs (float16_weights_supported)); on CUDA
# float32
AUTO_CPU = {(True, True): "bfloat16_encoder_float16_decoder", (True, False): "bfloat16_encoder",
            (False, True): "float16_decoder", (False, False): "float32_shortlist"}
# the types that hold the decoder's step weights in float16, and the type each builds on
FLOAT16_DECODER = {"float16_decoder": "float32_shortlist", "bfloat16_encoder_float16_decoder": "bfloat16_encoder"}
# the types whose vocabulary projection is a ShortlistProjection (which reads rows of the table)
SHORTLIST_TYPES = ("float32_shortlist", "bfloat16_encoder", *FLOAT16_DECODER)
# kept in their trained precision by bfloat16 and float16 (to_half)
FULL_PRECISION_MODULES = (RotaryFrequencies, RotaryEmbeddingWithRotation)


class ComputeTypeError(ValueError):
    """A compute type this machine cannot run; the message says why and what to use instead."""


def resolve_compute_type(compute_type: str, device: Union[str, torch.device]) -> str:
    """The concrete type to run on `device` ("auto" resolved), or ComputeTypeError when the
    device cannot run the type asked for."""
    if compute_type not in COMPUTE_TYPES:
        raise ComputeTypeError(f"unknown compute type {compute_type!r}; choose from {', '.join(COMPUTE_TYPES)}")
    cuda = torch.device(device).type == "cuda"
    if compute_type == "auto":
        return "float32" if cuda else AUTO_CPU[native_bf16()[0], float16_weights_supported()]
    if compute_type in ("int8", *SHORTLIST_TYPES) and cuda:
        raise ComputeTypeError(f"compute type {compute_type} runs on the CPU only (use float16 or bfloat16 on CUDA)")
    if compute_type == "float16" and not cuda:
        raise ComputeTypeError("compute type float16 needs CUDA (on the CPU use int8 or float32)")
    if compute_type in FLOAT16_DECODER and not float16_weights_supported():
        raise ComputeTypeError(f"compute type {compute_type} needs FBGEMM's float16 kernel (an x86 CPU with AVX2); "
                               "use float32_shortlist")
    if compute_type in ("bfloat16", "bfloat16_encoder", "bfloat16_encoder_float16_decoder") and not cuda \
            and not native_bf16()[0]:
        raise ComputeTypeError(f"compute type {compute_type}: this CPU has no AVX512-BF16/AMX, bfloat16 would be "
                               "emulated (~100x slower); use int8 or float32")
    return compute_type


def apply_compute_type(model: nn.Module, compute_type: str, n_text: Optional[int] = None,
                       weights: Optional[Path] = None) -> nn.Module:
    """Convert a loaded (eval-mode) model in place for inference in `compute_type` (already
    resolved); returns it. Not for training: int8 layers have no gradient. float32_shortlist
    needs `n_text`, the tokenizer's first special token; given the checkpoint's `weights` file,
    its int8 table is kept in the model cache (Int8Cache)."""
    if compute_type == "float32":
        return model
    if compute_type in FLOAT16_DECODER:
        apply_compute_type(model, FLOAT16_DECODER[compute_type], n_text, weights)
        replace_linears(model.decoder.blocks, "decoder.blocks", decoder_step_linears(model),
                        Float16WeightLinear.from_linear, weights)
        projection = model.decoder.output_projection
        projection.special_linear = Float16WeightLinear(projection.special.t())
        return model
    if compute_type == "bfloat16_encoder":
        apply_compute_type(model, "float32_shortlist", n_text, weights)
        replace_linears(model.encoder, "encoder", quantizable_linears(model.encoder), Bfloat16Linear, weights)
        return model
    if compute_type == "float32_shortlist":
        from .shortlist import FileRows, RowEmbedding, ShortlistProjection, TableRows

        if n_text is None:
            raise ValueError("float32_shortlist needs the tokenizer's first special token (n_text)")
        table = model.decoder.token_embedding.weight.detach()
        in_file = weights is not None and Path(weights).is_file()
        readable = in_file and table.dtype in (torch.float32, torch.float16)  # what FileRows reads
        rows = FileRows(Path(weights), EMBEDDING, tuple(table.shape)) if readable else TableRows(table)
        cache = Int8Cache.for_weights(weights) if in_file else None
        with warnings.catch_warnings():  # torch.ao's quantised tensors are marked deprecated (see below)
            warnings.simplefilter("ignore")
            quantized = _int8_weight(EMBEDDING, lambda name: table, cache)
        int4 = int4_ranking(table, n_text, cache) if native_bf16()[0] else None  # one-row steps
        if cache is not None:
            cache.save()
        model.decoder.output_projection = ShortlistProjection(rows, quantized, n_text, int4=int4)
        if readable:  # the input tokens' rows by pread too (RowEmbedding says why)
            model.decoder.token_embedding = RowEmbedding(rows)
        return model
    if compute_type in ("bfloat16", "float16"):
        return to_half(model, getattr(torch, compute_type))
    if compute_type == "int8":
        state = model.state_dict()
        quantize_int8(model, state.__getitem__)
        return model
    raise ComputeTypeError(f"unknown compute type {compute_type!r}")


def replace_linears(stack: nn.Module, prefix: str, names: list[str], layer: Callable[[nn.Linear, Optional[Tensor]], nn.Module],
                    weights: Optional[Path]) -> None:
    """Replace each linear layer `names` of `stack` (whose weights the checkpoint names
    "{prefix}.{name}.weight") by layer(linear, weight), the weight read from the `weights` file
    with plain reads (read_from_file: the memory-mapped pages stay untouched) where there is
    one, else None (the layer takes linear.weight)."""
    in_file = weights is not None and Path(weights).is_file()
    with open(weights, "rb") if in_file else contextlib.nullcontext() as f:
        for name in names:
            linear = stack.get_submodule(name)
            stored = None if f is None else read_from_file(f, f"{prefix}.{name}.weight", tuple(linear.weight.shape))
            stack.set_submodule(name, layer(linear, stored))


def to_half(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Every weight in `dtype` except the rotary machinery, which stays as trained: its
    frequencies (in a 16-bit format a position-1500 phase is off by radians), its float64 base
    and its learned basis change (matrix_exp computed in the parameters' dtype gave NaN in
    bfloat16 and float16). Those modules compute in float32
    anyway (asr.nn.rotary) and hold a few thousand numbers."""
    kept = [(owner, name, tensor.detach().clone(), isinstance(tensor, nn.Parameter))
            for module in model.modules() if isinstance(module, FULL_PRECISION_MODULES)
            for owner in module.modules()
            for name, tensor in [*owner.named_parameters(recurse=False), *owner.named_buffers(recurse=False)]]
    model.to(dtype)
    for owner, name, tensor, is_parameter in kept:
        if is_parameter:
            getattr(owner, name).data = tensor
        else:
            setattr(owner, name, tensor)
    return model


def loading_converter(compute_type: str, weights: Optional[Path] = None) -> Optional[Callable]:
    """For asr.store.checkpoint.load_checkpoint(convert=...): int8 is built while the weights
    are read, one tensor at a time, so the float32 weights are never all in memory at once
    (peak RSS); the other types convert after an ordinary (memory-mapped) load. Given the
    checkpoint's weights file, the int8 weights are kept in the model cache (Int8Cache) and
    read from there on later loads."""
    if compute_type != "int8":
        return None
    cache = Int8Cache.for_weights(weights) if weights is not None and Path(weights).is_file() else None
    return functools.partial(quantize_int8, cache=cache)


class Int8Cache:
    """The per-channel int8 weights of one checkpoint (and the shortlist's int4 ranking table,
    get_plain / put_plain), kept between processes.

    Quantising tiny.en's linear layers and output projection takes ~0.35 s of every int8
    start-up (torch.aminmax + quantize_per_channel, measured); the result depends only on the
    float32 weights, so it is stored once in $ASR_CACHE_DIR/int8/KEY.safetensors (int8 values and
    float64 scales; zero points are 0), KEY naming the weights file by path, size and mtime, so a
    rewritten checkpoint gets a new entry. A cache that cannot be written only costs the time."""

    VERSION = 1

    def __init__(self, path: Path):
        self.path = path
        self.stored: dict[str, Tensor] = {}
        if path.is_file():
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                self.stored = load_file(path)
            except (SafetensorError, OSError):  # damaged: rebuilt below
                self.stored = {}
        self.new: dict[str, Tensor] = {}

    @classmethod
    def for_weights(cls, weights: Path) -> "Int8Cache":
        from ..store.registry import cache_dir

        weights = Path(weights).resolve()
        stat = weights.stat()
        key = hashlib.sha256(f"{weights}:{stat.st_size}:{stat.st_mtime_ns}:{cls.VERSION}".encode()).hexdigest()[:32]
        return cls(cache_dir() / "int8" / f"{key}.safetensors")

    def get(self, name: str) -> Optional[Tensor]:
        values, scales = self.stored.get(f"{name}.int8"), self.stored.get(f"{name}.scales")
        if values is None or scales is None:
            return None
        zero_points = torch.zeros(len(scales), dtype=torch.long)
        return torch._make_per_channel_quantized_tensor(values, scales, zero_points, 0)

    def put(self, name: str, quantized: Tensor) -> None:
        self.new[f"{name}.int8"] = quantized.int_repr().contiguous()
        self.new[f"{name}.scales"] = quantized.q_per_channel_scales().contiguous()

    def get_plain(self, key: str) -> Optional[Tensor]:
        return self.stored.get(key)

    def put_plain(self, key: str, tensor: Tensor) -> None:
        self.new[key] = tensor.contiguous()

    def save(self) -> None:
        if not self.new:
            return
        from safetensors.torch import save_file

        from ..store.atomic import atomic_write

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda p: save_file({**self.stored, **self.new}, p))
        except OSError:
            pass


def int4_ranking(table: Tensor, n_text: int, cache: Optional[Int8Cache]):
    """The shortlist's Int4Ranking of the tied table's text rows (None where this torch lacks the
    kernel), from the cache when it holds one (quantising them takes ~0.1 s; the packed layout
    is torch's, hence its version in the key)."""
    from .shortlist import INT4_GROUP, Int4Ranking

    if not Int4Ranking.available():
        return None
    key = f"{EMBEDDING}.int4.g{INT4_GROUP}.torch{torch.__version__}"
    codes, scales_zeros = (None, None) if cache is None else (cache.get_plain(f"{key}.codes"),
                                                              cache.get_plain(f"{key}.scales_zeros"))
    if codes is None or scales_zeros is None:
        codes, scales_zeros = Int4Ranking.quantize(table[:n_text].float())
        if cache is not None:
            cache.put_plain(f"{key}.codes", codes)
            cache.put_plain(f"{key}.scales_zeros", scales_zeros)
    return Int4Ranking(codes, scales_zeros, n_text)


def _int8_weight(name: str, read: Callable[[str], Tensor], cache: Optional[Int8Cache]) -> Tensor:
    quantized = cache.get(name) if cache is not None else None
    if quantized is None:
        quantized = int8_per_channel(read(name))
        if cache is not None:
            cache.put(name, quantized)
    return quantized


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the plain nn.Linear layers (not a subclass with its own forward)."""
    return [name for name, module in model.named_modules() if type(module) is nn.Linear]


class Bfloat16Linear(nn.Module):
    """A linear layer that multiplies in bfloat16: the input and the weight rounded to bfloat16,
    the products summed in float32 (oneDNN's AVX512-BF16/AMX kernels), the output rounded to
    bfloat16 and returned in the input's dtype, the bias added in float32."""

    def __init__(self, linear: nn.Linear, weight: Optional[Tensor] = None):
        """weight: the linear layer's weight as read from the checkpoint file (read_from_file),
        so that its memory-mapped float32 pages are never touched (they would count in resident
        memory beside the bfloat16 copy); by default linear.weight."""
        super().__init__()
        self.register_buffer("weight", (linear.weight if weight is None else weight).detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias


def float16_weights_supported() -> bool:
    """Whether this CPU runs FBGEMM's float16 linear kernel (x86 with AVX2 or better)."""
    return ("fbgemm" in torch.backends.quantized.supported_engines
            and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"))


class Float16WeightLinear(nn.Module):
    """A linear layer whose weight is held in float16 and multiplied by FBGEMM's float16 kernel
    (torch.ops.quantized.linear_dynamic_fp16): input and output stay float32, the kernel widens
    the weight to float32 and sums the products in float32, so the one rounding is the weight's,
    to 11 significant bits. A decoding step streams every decoder weight from memory, and this
    halves those bytes: tiny.en's 24 step layers took 0.91 ms against 1.98 ms as StepLinear at
    one row, 1.18 against 2.83 ms at five (2 threads, caches evicted between passes, 2-core
    AVX512-BF16 EPYC, 2026-12-07, ad-hoc loop). Rounding the activations to float16 as well
    (torch's own float16 matrix-vector kernel, faster still) changed 2 of the offline test set's
    45 greedy transcripts (98.2 % word agreement); rounding the weights alone changed none. For
    imported Whisper models it rounds nothing: OpenAI published the weights in float16, and every
    one of tiny.en's converts exactly (checked 2026-12-07), so only the order of the sums differs
    from float32; for models trained here (float32) it is a rounding."""

    def __init__(self, weight: Tensor, bias: Optional[Tensor] = None):
        """weight [out, in] (float32 or float16), bias [out] or None."""
        super().__init__()
        self.out_features, self.in_features = weight.shape
        bias = None if bias is None else bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().float().contiguous(), bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight: Optional[Tensor] = None) -> "Float16WeightLinear":
        """weight: the layer's weight as read from the checkpoint file (read_from_file), so that
        its memory-mapped pages are never touched (as Bfloat16Linear); by default linear.weight."""
        return cls(linear.weight if weight is None else weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=float16"


class Int8Embedding(nn.Module):
    """Token embedding looked up in the int8 copy of the tied table: row * its scale. The float32
    table (80 MB for Whisper's vocabulary) is then not needed at all."""

    def __init__(self, table: Tensor, scales: Tensor):
        super().__init__()
        self.register_buffer("table", table)  # [n_vocab, n_state] int8
        self.register_buffer("scales", scales)  # [n_vocab] float32

    def forward(self, tokens: Tensor) -> Tensor:
        return self.table[tokens].float() * self.scales[tokens].unsqueeze(-1)


INT8_LEVELS = 127.5  # symmetric int8: [-128, 127] spans 2 * 127.5 steps, as torch's observer


def int8_per_channel(weight: Tensor) -> Tensor:
    """Symmetric per-output-channel int8 quantisation of a [out, in] weight (torch's
    per_channel_symmetric MinMax observer: scale = max |w| of the row / 127.5, zero point 0)."""
    low, high = torch.aminmax(weight, dim=1)  # no |w| temporary of the weight's size
    scales = (torch.maximum(-low, high).double() / INT8_LEVELS).clamp(min=torch.finfo(torch.float32).eps)
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    return torch.quantize_per_channel(weight.float(), scales, zero_points, 0, torch.qint8)


def quantize_int8(model: nn.Module, read: Callable[[str], Tensor], cache: Optional[Int8Cache] = None) -> None:
    """Fill `model` from `read(name)` (a state-dict name -> float tensor) with dynamic int8
    quantisation (per output channel) of every plain linear layer and of the tied output
    projection, which also serves the token embedding; other tensors are taken as they are."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    linears = quantizable_linears(model)
    names = list(model.state_dict())
    with warnings.catch_warnings():
        # torch.ao.quantization's eager API is marked deprecated in favour of torchao (not a
        # dependency here); its kernels are what this CPU runs fastest (see the module docstring)
        warnings.simplefilter("ignore")

        def quantized(weight: Tensor, bias: Optional[Tensor]) -> nn.Module:
            # built small and then given its weight: the constructor would pack a full-size
            # placeholder first (a third of the load time at Whisper's vocabulary size)
            layer = DynamicLinear(1, 1, bias_=bias is not None, dtype=torch.qint8)
            layer.set_weight_bias(weight, bias)
            layer.in_features, layer.out_features = weight.shape[1], weight.shape[0]
            return layer

        for name in linears:  # one float32 weight in memory at a time
            module = model.get_submodule(name)
            bias = read(f"{name}.bias") if module.bias is not None else None
            model.set_submodule(name, quantized(_int8_weight(f"{name}.weight", read, cache), bias))
        decoder = model.decoder
        table = _int8_weight(EMBEDDING, read, cache)  # [n_vocab, n_state]: the tied table
        projection = DynamicLinear(1, 1, bias_=False, dtype=torch.qint8)
        projection.set_weight_bias(table, None)
        projection.in_features, projection.out_features = table.shape[1], table.shape[0]
        decoder.output_projection = projection
        decoder.token_embedding = Int8Embedding(table.int_repr(), table.q_per_channel_scales().float())
    inside = tuple(f"{name}." for name in linears)
    for name in names:
        if name == EMBEDDING or name.startswith(inside):
            continue
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        tensor = read(name)
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(tensor, requires_grad=module._parameters[attr].requires_grad)
        else:
            module._buffers[attr] = tensor
    if cache is not None:
        cache.save()
