"""Compute types: every type this machine runs gives transcripts that agree with float32's on
the sample audio (word agreement measured with jiwer), the types it cannot run are refused in
one line, and int8 really quantises the layers. Speed is measured by scripts/bench_transcribe.py,
never here."""
import os
from pathlib import Path

import jiwer
import pytest
import torch

import asr
from asr.cli.main import main as cli_main
from asr.hardware import native_bf16
from asr.inference.compute import ComputeTypeError, float16_weights_supported, quantizable_linears, resolve_compute_type
from asr.text.normalize import basic_normalize
from test_transcribe import cache  # noqa: F401 (session fixture: the model cache)

DATA = Path(__file__).resolve().parent.parent / "data" / "audio"
SAMPLES = ["librivox-0870.flac", "librivox-0880.flac", "librivox-0930.flac", "goforward.flac",
           "espeak-en-us-library.flac"]
# int8 agreed with float32 on 90.6 % of the offline test set's words (AVX512-VNNI CPU; the
# module docstring of asr/inference/compute.py) and faster-whisper's int8 with its own float32
# on 92.9 %; on these five clips it was 100 % on that CPU and 92.9 % (3 words of 42) on an
# AVX2-only one, whose int8 kernels round differently. A broken type agrees on far less.
MIN_AGREEMENT = 0.85

RUNNABLE = (["float32_shortlist", "int8"] + (["float16_decoder"] if float16_weights_supported() else [])
            + (["bfloat16_encoder", "bfloat16"] if native_bf16()[0] else [])
            + (["bfloat16_encoder_float16_decoder"] if native_bf16()[0] and float16_weights_supported() else []))


def transcripts(model):
    return [basic_normalize(model.transcribe(str(DATA / name), temperature=0.0)["text"]) for name in SAMPLES]


@pytest.fixture(scope="module")
def float32_texts(cache):
    return transcripts(asr.load_model("tiny.en", device="cpu", quiet=True, compute_type="float32"))


@pytest.mark.parametrize("compute_type", RUNNABLE)
def test_compute_type_agrees_with_float32(float32_texts, compute_type):
    model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type=compute_type)
    assert model.compute_type == compute_type
    texts = transcripts(model)
    agreement = 1 - jiwer.wer(" ".join(float32_texts), " ".join(texts))
    assert agreement >= MIN_AGREEMENT, (float32_texts, texts)


def test_int8_quantises_every_plain_linear_and_the_output_projection(cache):
    model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type="int8").model
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    assert not quantizable_linears(model)  # none left in float32
    n_int8 = sum(isinstance(m, DynamicLinear) for m in model.modules())
    dims = model.dims
    # q/k/v (fused), out and two MLP layers per self-attention block; query, kv, out per cross;
    # plus the tied output projection
    assert n_int8 == 4 * dims.n_audio_layer + 7 * dims.n_text_layer + 1
    assert model.decoder.output_projection.weight().dtype == torch.qint8
    # the output projection is the int8 copy of the float32 embedding, per output channel, and
    # the embedding lookup reads the same table
    reference = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type="float32").model
    e = reference.decoder.token_embedding.weight
    w = model.decoder.output_projection.weight().dequantize()
    step = e.abs().amax(dim=1, keepdim=True) / 127.5  # one quantisation step per row
    assert ((w - e).abs() <= step / 2 + 1e-7).all()
    tokens = torch.tensor([[0, 11, 50256, 50257]])
    looked_up = model.decoder.token_embedding(tokens)
    assert ((looked_up - e[tokens]).abs() <= step[tokens] / 2 + 1e-7).all()


def test_auto_picks_by_what_the_cpu_computes_and_refuses_what_the_device_cannot_run(monkeypatch):
    # float32_shortlist agreed with float32 on 100% (greedy) and 99.25% (beam 5) of the offline
    # test set's words, bfloat16_encoder on >= 99.24% where the CPU computes bfloat16 natively,
    # the float16 decoder weights changed no transcript of either, int8 and bfloat16 agreed on
    # 90.4% and 96.5% (asr/inference/compute.py)
    import asr.inference.compute as compute

    want = {(True, True): "bfloat16_encoder_float16_decoder", (True, False): "bfloat16_encoder",
            (False, True): "float16_decoder", (False, False): "float32_shortlist"}
    assert resolve_compute_type("auto", "cpu") == want[native_bf16()[0], float16_weights_supported()]
    for has_bf16 in (True, False):  # whichever CPU runs the test
        for has_fbgemm_fp16 in (True, False):
            monkeypatch.setattr(compute, "native_bf16", lambda: (has_bf16, "test"))
            monkeypatch.setattr(compute, "float16_weights_supported", lambda: has_fbgemm_fp16)
            assert resolve_compute_type("auto", "cpu") == want[has_bf16, has_fbgemm_fp16]
            assert resolve_compute_type("auto", "cuda") == "float32"
    monkeypatch.setattr(compute, "native_bf16", lambda: (True, "test"))
    monkeypatch.setattr(compute, "float16_weights_supported", lambda: False)
    with pytest.raises(ComputeTypeError, match="AVX2"):
        resolve_compute_type("bfloat16_encoder_float16_decoder", "cpu")  # (no FBGEMM float16 here)
    monkeypatch.setattr(compute, "native_bf16", native_bf16)
    monkeypatch.setattr(compute, "float16_weights_supported", float16_weights_supported)
    assert resolve_compute_type("auto", "cuda") == "float32"
    with pytest.raises(ComputeTypeError, match="CPU only"):
        resolve_compute_type("bfloat16_encoder", "cuda")
    with pytest.raises(ComputeTypeError, match="needs CUDA"):
        resolve_compute_type("float16", "cpu")
    for compute_type in ("float32_shortlist", "float16_decoder", "bfloat16_encoder_float16_decoder"):
        with pytest.raises(ComputeTypeError, match="CPU only"):
            resolve_compute_type(compute_type, "cuda")
    with pytest.raises(ComputeTypeError, match="unknown compute type"):
        resolve_compute_type("int4", "cpu")
    if not native_bf16()[0]:
        for compute_type in ("bfloat16", "bfloat16_encoder", "bfloat16_encoder_float16_decoder"):
            with pytest.raises(ComputeTypeError, match="emulated"):
                resolve_compute_type(compute_type, "cpu")


def test_shortlist_gives_float32_logits_where_the_search_looks(cache):
    """Against the naive product x @ table.T in float64: the shortlisted text tokens and every
    special token carry float32 logits, the rest int8 approximations within the quantisation
    error, and the float32 argmax is kept; greedy transcripts of the sample audio are float32's."""
    from asr.inference.shortlist import SHORTLIST_SIZE, FileRows

    model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type="float32_shortlist")
    projection = model.model.decoder.output_projection
    assert isinstance(projection.table, FileRows)  # rows read from the file, not mapped in
    from safetensors import safe_open

    with safe_open(str(model.path / "model.safetensors"), framework="pt") as f:
        table = f.get_tensor("decoder.token_embedding.weight").double()
    n_text = model.tokenizer.n_text
    x = torch.randn(3, 2, table.shape[1], generator=torch.Generator().manual_seed(0)) * 2
    x[1] = x[0] * 1.01  # rows whose shortlists overlap, as beam hypotheses' do
    with torch.inference_mode():
        logits = projection(x)
    want = x.double() @ table.T
    # the decoder's input tokens are looked up by pread too (a lookup in the mapped table maps
    # the cached pages around it: +46 MB resident on a 302 s file), with the table's values
    embedding = model.model.decoder.token_embedding
    assert embedding.table is projection.table
    tokens = torch.tensor([[0, 50256, 17], [n_text, table.shape[0] - 1, 17]])
    assert torch.equal(embedding(tokens).double(), table[tokens])
    assert logits.shape == (3, 2, table.shape[0]) and logits.dtype == torch.float32
    error = (logits.double() - want).abs()
    exact = error <= 1e-4 * want.abs().clamp(min=1)
    assert exact[..., n_text:].all()  # special and timestamp tokens
    assert (exact[..., :n_text].sum(-1) >= SHORTLIST_SIZE).all()  # the shortlist at least
    assert exact[..., :n_text].float().mean() < 0.5  # ...and not the whole vocabulary
    step = table.abs().amax(dim=1) / 127.5
    assert (error <= x.abs().sum(-1, keepdim=True).double() * step * 2 + 0.5).all()  # int8 error scale
    assert torch.equal(logits.argmax(-1), want.argmax(-1))
    assert transcripts(model) == transcripts(asr.load_model("tiny.en", device="cpu", quiet=True,
                                                            compute_type="float32"))


def test_file_rows_read_the_rows_of_the_table(tmp_path):
    from safetensors.torch import save_file

    from asr.inference.shortlist import FileRows

    table = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    save_file({"other": torch.zeros(3), "t": table, "half": table.half()}, tmp_path / "w.safetensors")
    index = torch.tensor([[3, 49, 3], [0, 7, 7]])
    assert torch.equal(FileRows(tmp_path / "w.safetensors", "t", (50, 8)).rows(index), table[index])
    assert torch.equal(FileRows(tmp_path / "w.safetensors", "half", (50, 8)).rows(index), table.half()[index].float())
    for one_row in (index[:1], index[0], torch.tensor([[5]]), torch.tensor(9)):  # read without deduplicating
        assert torch.equal(FileRows(tmp_path / "w.safetensors", "t", (50, 8)).rows(one_row), table[one_row])


def test_file_rows_keep_the_last_rows_read_and_still_return_the_table(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from asr.inference.shortlist import FileRows

    table = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    save_file({"t": table}, tmp_path / "w.safetensors")
    rows = FileRows(tmp_path / "w.safetensors", "t", (40, 6), cache_rows=4)
    preads = []
    real_preadv = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: preads.append(offset) or real_preadv(fd, buffers, offset))
    row_bytes = 6 * 4
    calls = [[1, 2, 1], [2, 1, 3], [4, 5, 6, 7, 8, 4], [8, 7], [1, 8, 9], [0, 39, 0, 39, 1]]
    kept = []  # the ring by hand: the last 4 distinct rows read, oldest first
    for call in calls:
        preads.clear()
        index = torch.tensor([call])
        assert torch.equal(rows.rows(index), table[index])
        want_read = sorted({t for t in call if t not in kept})
        assert sorted(offset - rows.offset for offset in preads) == [t * row_bytes for t in want_read]
        kept = (kept + want_read)[-4:]
    generator = torch.Generator().manual_seed(3)
    for _ in range(50):  # random calls, some rows repeated: always the table's rows
        index = torch.randint(0, 40, (2, 5), generator=generator)
        assert torch.equal(rows.rows(index), table[index])


def test_cli_refuses_float16_on_cpu_in_one_line(cache, capsys):
    status = cli_main(["transcribe", str(DATA / "goforward.flac"), "--compute-type", "float16", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1 and "float16" in err and "CUDA" in err


# ----------------------------------------------------------------------------- loading


def mapped_ranges(path) -> list[tuple[int, int]]:
    """Address ranges of this process mapped from `path` (/proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path):
            lo, hi = (int(v, 16) for v in fields[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def test_float32_weights_are_memory_mapped_from_the_checkpoint(cache):
    model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type="float32")
    weights = (model.path / "model.safetensors").resolve()
    ranges = mapped_ranges(weights)
    assert ranges, "model.safetensors is not mapped"
    params = dict(model.model.named_parameters())
    for name in ("encoder.blocks.0.attn.qkv.weight", "encoder.conv1.weight", "decoder.blocks.0.cross_attn.kv.weight"):
        ptr = params[name].data_ptr()
        assert any(lo <= ptr < hi for lo, hi in ranges), name
    # the decoder's widening per-step linear weights are read into transposed storage (not mapped)
    for name in ("decoder.blocks.0.mlp.0.weight", "decoder.blocks.3.attn.qkv.weight"):
        ptr = params[name].data_ptr()
        assert params[name].t().is_contiguous() and not any(lo <= ptr < hi for lo, hi in ranges), name
    # the embedding alone is read into the transposed layout the logits product wants (one
    # copy, not mapped): see the next test
    ptr = params["decoder.token_embedding.weight"].data_ptr()
    assert not any(lo <= ptr < hi for lo, hi in ranges)


def test_inference_layouts_hold_the_same_weights_and_give_the_same_logits(cache):
    """Loaded for inference, the tied embedding lives in [d, n_vocab]-contiguous storage and the
    decoder's output projection is that storage (no second copy), and the decoder's per-step
    linear layers are StepLinears with transposed weights (all but the cross-attention's
    key/value projection, which runs once per window); every weight equals the plainly loaded model's, and so do
    the logits, up to float32 rounding (the products sum in another order)."""
    import torch

    from asr.nn.step_linear import StepLinear
    from asr.store.checkpoint import load_checkpoint

    path = asr.load_model("tiny.en", device="cpu", quiet=True).path
    plain, _ = load_checkpoint(path)
    fast, _ = load_checkpoint(path, for_inference=True)
    table = fast.decoder.token_embedding.weight
    assert table.t().is_contiguous() and not plain.decoder.token_embedding.weight.t().is_contiguous()
    assert torch.equal(table, plain.decoder.token_embedding.weight)
    with torch.no_grad():
        assert fast.decoder.output_weight(torch.float32).data_ptr() == table.data_ptr()
        mel = torch.randn(1, plain.dims.n_mels, 2 * plain.dims.n_audio_ctx, generator=torch.Generator().manual_seed(0))
        tokens = torch.tensor([[50257, 50362, 440, 1049, 318]])
        fast_logits, plain_logits = fast(mel, tokens), plain(mel, tokens)
    torch.testing.assert_close(fast_logits, plain_logits, rtol=1e-5, atol=1e-4)
    assert torch.equal(fast_logits.argmax(-1), plain_logits.argmax(-1))
    fast_params, plain_params = dict(fast.named_parameters()), dict(plain.named_parameters())
    assert fast_params.keys() == plain_params.keys()
    assert all(torch.equal(fast_params[name], plain_params[name]) for name in plain_params)
    transposed = [name for name, p in fast_params.items() if p.dim() == 2 and p.t().is_contiguous()]
    step = [f"decoder.blocks.{i}.{layer}" for i in range(len(fast.decoder.blocks))
            for layer in ("attn.qkv", "attn.out", "cross_attn.query", "cross_attn.out", "mlp.0", "mlp.2")]
    assert sorted(transposed) == sorted(["decoder.token_embedding.weight"] + [f"{name}.weight" for name in step])
    assert all(type(fast.get_submodule(name)) is StepLinear for name in step)
    assert type(fast.get_submodule("decoder.blocks.0.cross_attn.kv")) is torch.nn.Linear


def test_int8_load_refuses_a_checkpoint_that_does_not_match_in_one_line(cache, tmp_path):
    import shutil

    from asr.store.checkpoint import CheckpointError, load_checkpoint
    from asr.inference.compute import loading_converter
    from safetensors.torch import load_file, save_file

    source = asr.load_model("tiny.en", device="cpu", quiet=True).path
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    state = load_file(broken / "model.safetensors")
    del state["decoder.ln.bias"]
    save_file(state, broken / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(broken, convert=loading_converter("int8"))
    assert "decoder.ln.bias" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_heap_retention_limit_applies_on_glibc_unless_the_user_tunes_malloc(monkeypatch):
    import ctypes.util
    import sys as _sys

    from asr.cli.malloc import limit_heap_retention

    for key in [k for k in __import__("os").environ if k.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(key, raising=False)
    glibc = _sys.platform.startswith("linux") and "libc.so" in (ctypes.util.find_library("c") or "")
    # the user's own thresholds win, set either way
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert limit_heap_retention() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=0:glibc.malloc.trim_threshold=4096")
    assert limit_heap_retention() is False
    # settings that leave glibc's dynamic threshold on (a container's arena limit) do not stop it
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=0")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert limit_heap_retention() is glibc


def test_int8_weights_are_cached_and_a_rewritten_checkpoint_is_requantised(tmp_path, monkeypatch):
    """The int8 cache gives the same packed weights as quantising afresh (checked against
    torch's own per-channel quantisation of the float weights), and a checkpoint rewritten with
    other weights is quantised again rather than served stale int8 weights."""
    from asr.config import ModelDimensions
    from asr.inference.compute import Int8Cache, loading_converter
    from asr.nn.model import ASRModel
    from asr.store.checkpoint import load_checkpoint, save_checkpoint

    monkeypatch.setenv("ASR_CACHE_DIR", str(tmp_path / "cache"))
    dims = ModelDimensions(n_mels=80, n_audio_ctx=20, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=300, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1)

    def expected_int8(model, name):  # torch's per-channel symmetric quantisation, independent of asr
        w = model.state_dict()[name]
        scales = (w.abs().amax(dim=1).double() / 127.5)
        return torch.quantize_per_channel(w, scales, torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8)

    def loaded_int8(directory):
        model, _ = load_checkpoint(directory, convert=loading_converter("int8", directory / "model.safetensors"))
        return model.decoder.blocks[0].mlp[0].weight()

    name = "decoder.blocks.0.mlp.0.weight"
    for seed in (0, 1):  # the second rewrites the same checkpoint with other weights
        torch.manual_seed(seed)
        model = ASRModel(dims)
        directory = save_checkpoint(model, tmp_path / "ckpt", tokenizer={"kind": "test"})
        cold = loaded_int8(directory)
        assert Int8Cache.for_weights(directory / "model.safetensors").path.is_file()
        warm = loaded_int8(directory)
        want = expected_int8(model, name)
        for got in (cold, warm):
            assert torch.equal(got.int_repr(), want.int_repr())
            assert torch.allclose(got.q_per_channel_scales(), want.q_per_channel_scales(), rtol=1e-6)
    assert len(list((tmp_path / "cache" / "int8").iterdir())) == 2  # one entry per version of the file


def perturbed_seed_model() -> torch.nn.Module:
    """A small seed model (rotary with Givens rotations and the orthogonal matrix in both stacks)
    whose learned rotations have moved away from the identity they start at, as after training."""
    from asr.config import ModelDimensions
    from asr.nn.model import ASRModel
    from asr.nn.presets import seed_options
    from asr.nn.rotary import RotaryEmbeddingWithRotation

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                           n_vocab=300, n_text_ctx=64, n_text_state=64, n_text_head=2, n_text_layer=2)
    model = ASRModel(dims, seed_options()).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, RotaryEmbeddingWithRotation):
                module.thetas.uniform_(-1.0, 1.0)
                module.basis.original.add_(0.3 * torch.randn_like(module.basis.original))
    return model


@pytest.mark.parametrize("compute_type", ["bfloat16", "float16"])
def test_half_types_of_a_seed_model_follow_float32(compute_type):
    """A trained seed model in bfloat16 or float16 once decoded nothing but unknown tokens (NaN out
    of the orthogonal matrix's matrix_exp in 16 bits, on an H200 and on the CPU alike). Its
    logits over a 30-s window must stay close to the float32 model's. Run on the CPU, where these
    types are slow (emulated) but compute the same formats; the CLI refuses them here."""
    from asr.inference.compute import apply_compute_type

    reference = perturbed_seed_model()
    half = apply_compute_type(perturbed_seed_model(), compute_type)
    dtype = getattr(torch, compute_type)
    torch.manual_seed(1)
    mel = torch.randn(1, 80, 3000)
    tokens = torch.randint(0, 300, (1, 40))
    with torch.no_grad():
        expected = reference(mel, tokens)
        got = half(mel.to(dtype), tokens).float()
    assert torch.isfinite(got).all()
    assert (got - expected).norm() / expected.norm() < 0.05
    # the top choice is what greedy decoding takes: it must rarely change
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


def test_bfloat16_linear_rounds_inputs_and_weights_and_sums_in_float32():
    """Against a float64 product of the bfloat16-rounded input and weight: within one bfloat16
    rounding of the output (a float32 sum of the rounded products; bf16 sums would be far off)."""
    from asr.inference.compute import Bfloat16Linear

    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(384, 1536)
    x = torch.randn(3, 50, 384, generator=generator)
    layer = Bfloat16Linear(linear)
    y = layer(x)
    assert y.dtype == torch.float32 and y.shape == (3, 50, 1536)
    rounded = x.to(torch.bfloat16).double() @ linear.weight.detach().to(torch.bfloat16).double().T
    want = rounded + linear.bias.detach().double()
    tolerance = rounded.abs() * 2.0 ** -8 + 1e-6  # half a bfloat16 step of the product, plus the sum's
    assert ((y.double() - want).abs() <= tolerance).all()
    exact = x.double() @ linear.weight.detach().double().T + linear.bias.detach().double()
    assert (y.double() - exact).abs().max() > 1e-4  # it did round: not a float32 product


@pytest.mark.skipif(not native_bf16()[0], reason="bfloat16_encoder needs a CPU with AVX512-BF16 or AMX")
def test_bfloat16_encoder_converts_the_encoder_linears_only(cache):
    from asr.inference.compute import Bfloat16Linear
    from asr.inference.shortlist import ShortlistProjection

    model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type="bfloat16_encoder").model
    dims = model.dims
    assert sum(isinstance(m, Bfloat16Linear) for m in model.encoder.modules()) == 4 * dims.n_audio_layer
    assert not quantizable_linears(model.encoder)  # none left in float32
    assert not any(isinstance(m, Bfloat16Linear) for m in model.decoder.modules())
    assert isinstance(model.decoder.output_projection, ShortlistProjection)
    # the bfloat16 weights are the file's float32 ones rounded (read from the file, not mapped)
    from safetensors import safe_open

    with safe_open(str(asr.load_model("tiny.en", quiet=True).path / "model.safetensors"), framework="pt") as f:
        for name in ("blocks.0.attn.qkv", f"blocks.{dims.n_audio_layer - 1}.mlp.2"):
            stored = f.get_tensor(f"encoder.{name}.weight")
            assert torch.equal(model.encoder.get_submodule(name).weight, stored.to(torch.bfloat16))


def test_shortlist_prepack_runs_beside_the_caller_and_reports_its_failure_there():
    """The int8 table is packed in a thread started at load; its result is what torch.ao's own
    dynamic int8 Linear computes, and a failure there surfaces in the caller at first use."""
    import warnings

    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from asr.inference.shortlist import BackgroundPrepack

    weight = torch.randn(300, 16, generator=torch.Generator().manual_seed(2))
    scales = weight.abs().amax(dim=1).double() / 127
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_channel(weight, scales, torch.zeros(300, dtype=torch.long), 0, torch.qint8)
        reference = DynamicLinear(16, 300, bias_=False, dtype=torch.qint8)
        reference.set_weight_bias(quantized, None)
    packed = BackgroundPrepack(quantized)
    assert packed.thread is not None and not packed.thread.daemon
    x = torch.randn(4, 16)
    assert torch.equal(torch.ops.quantized.linear_dynamic(x, packed.get(), reduce_range=True), reference(x))
    assert packed.thread is None  # joined once

    broken = BackgroundPrepack(weight)  # a float tensor, not a quantised one
    with pytest.raises(RuntimeError):
        broken.get()


@pytest.mark.skipif(not float16_weights_supported(), reason="FBGEMM's float16 kernel needs an x86 CPU with AVX2")
def test_float16_weight_linear_rounds_the_weight_only_and_sums_in_float32():
    """Against a float64 product of the float32 input and the float16-rounded weight: within
    float32 rounding of the sum (no rounding of the input or output to float16, which would be
    ~1e-3 off), for one row, a few rows and a non-contiguous input."""
    from asr.inference.compute import Float16WeightLinear

    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(1536, 384)
    layer = Float16WeightLinear.from_linear(linear)
    rounded_weight = linear.weight.detach().half().double()
    for x in (torch.randn(1, 1, 1536, generator=generator), torch.randn(5, 1536, generator=generator),
              torch.randn(1536, 7, generator=generator).t()):
        y = layer(x)
        assert y.dtype == torch.float32 and y.shape == (*x.shape[:-1], 384)
        want = x.double() @ rounded_weight.T + linear.bias.detach().double()
        scale = x.double().abs() @ rounded_weight.abs().T
        assert ((y.double() - want).abs() <= scale * 2.0 ** -20 + 1e-6).all()
    exact = x.double() @ linear.weight.detach().double().T + linear.bias.detach().double()
    assert (y.double() - exact).abs().max() > 1e-5  # the weight was rounded: not a float32 product


@pytest.mark.skipif(not float16_weights_supported(), reason="FBGEMM's float16 kernel needs an x86 CPU with AVX2")
def test_float16_decoder_converts_the_decoder_step_linears_only(cache):
    from asr.inference.compute import Float16WeightLinear
    from asr.inference.shortlist import ShortlistProjection
    from safetensors import safe_open

    model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type="float16_decoder").model
    dims = model.dims
    converted = [m for m in model.decoder.blocks.modules() if isinstance(m, Float16WeightLinear)]
    assert len(converted) == 6 * dims.n_text_layer  # qkv, out; query, out; two MLP layers
    assert not any(isinstance(m, Float16WeightLinear) for m in model.encoder.modules())
    assert type(model.decoder.blocks[0].cross_attn.kv) is torch.nn.Linear  # once a window: float32
    assert isinstance(model.decoder.output_projection, ShortlistProjection)
    with safe_open(str(asr.load_model("tiny.en", quiet=True).path / "model.safetensors"), framework="pt") as f:
        name = f"{dims.n_text_layer - 1}.mlp.2"
        stored = f.get_tensor(f"decoder.blocks.{name}.weight")
        bias = f.get_tensor(f"decoder.blocks.{name}.bias")
        table = f.get_tensor("decoder.token_embedding.weight")
    x = torch.randn(2, stored.shape[1], generator=torch.Generator().manual_seed(1))
    want = x.double() @ stored.half().double().T + bias.double()
    assert torch.allclose(model.decoder.blocks.get_submodule(name)(x).double(), want, atol=1e-5)
    # the special tokens' logits from float16 rows of the table too; the text tokens' float32
    # logits where the search looks are tested for every shortlist type above
    projection, n_text = model.decoder.output_projection, model.decoder.output_projection.n_text
    states = torch.randn(5, 1, table.shape[1], generator=torch.Generator().manual_seed(2))
    special = table[n_text:].half().double()
    assert torch.allclose(projection(states)[:, 0, n_text:].double(), states[:, 0].double() @ special.T, atol=1e-5)
    assert isinstance(projection.special_linear, Float16WeightLinear)  # (Whisper's weights are float16 values)


@pytest.mark.skipif(not native_bf16()[0], reason="the int4 ranking runs where the CPU computes bfloat16 natively")
def test_int4_ranking_matches_a_naive_group_wise_int4_product():
    """Against a float64 product with the table quantised by a naive loop (per row and group of
    INT4_GROUP inputs: 16 levels from the group's min to its max): within the bfloat16 rounding
    of the state and of the output; and within the int4 error of the float32 product."""
    import numpy as np

    from asr.inference.shortlist import INT4_GROUP, Int4Ranking

    generator = torch.Generator().manual_seed(3)
    table = torch.randn(37, 384, generator=generator)  # rows not a multiple of 16: padded inside
    x = torch.randn(1, 384, generator=generator)
    ranking = Int4Ranking(*Int4Ranking.quantize(table), n_text=37)
    got = ranking.logits(x)
    assert got.shape == (1, 37) and got.dtype == torch.float32
    naive = np.empty((37, 384))
    worst = 0.0
    for r in range(37):
        for start in range(0, 384, INT4_GROUP):
            group = table[r, start:start + INT4_GROUP].double().numpy()
            step = (group.max() - group.min()) / 15
            naive[r, start:start + INT4_GROUP] = np.round((group - group.min()) / step) * step + group.min()
            worst = max(worst, step / 2)
    x_bf16 = x.to(torch.bfloat16).double().numpy()
    want = x_bf16 @ naive.T
    scale = np.abs(x_bf16) @ np.abs(naive).T
    assert np.all(np.abs(got.double().numpy() - want) <= scale * 2.0 ** -7 + 1e-4)
    exact = x.double().numpy() @ table.double().numpy().T
    assert np.all(np.abs(got.double().numpy() - exact) <= np.abs(x.double().numpy()).sum() * worst * 1.01 + scale * 2.0 ** -7)


@pytest.mark.skipif(not native_bf16()[0], reason="the int4 ranking runs where the CPU computes bfloat16 natively")
def test_shortlist_of_one_row_ranked_in_int4_keeps_float32_logits_where_the_search_looks(cache):
    from safetensors import safe_open

    from asr.inference.shortlist import SHORTLIST_SIZE

    model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type="float32_shortlist")
    projection = model.model.decoder.output_projection
    assert projection.int4 is not None
    with safe_open(str(model.path / "model.safetensors"), framework="pt") as f:
        table = f.get_tensor("decoder.token_embedding.weight").double()
    n_text = model.tokenizer.n_text
    for seed in range(3):
        x = torch.randn(1, 1, table.shape[1], generator=torch.Generator().manual_seed(seed)) * 2
        with torch.inference_mode():
            logits = projection(x)[0, 0]
        want = (x.double() @ table.T)[0, 0]
        exact = (logits.double() - want).abs() <= 1e-4 * want.abs().clamp(min=1)
        assert exact[n_text:].all()
        assert exact[:n_text].sum() >= SHORTLIST_SIZE and exact[:n_text].float().mean() < 0.5
        assert logits.argmax() == want.argmax()
