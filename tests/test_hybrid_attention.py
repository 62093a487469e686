"""Hybrid (local sliding-window + global) attention against a naive T x T reference written out
here, through every code path (full / slice / blocked local heads, pooled global heads), plus the
KV cache, the function-preserving init, linear memory and the whole model."""
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

import asr.nn.hybrid_attention as hybrid
from asr.nn.attention import AttentionInputs, MultiHeadAttention
from asr.store.checkpoint import load_checkpoint, save_checkpoint
from asr.config import ModelDimensions, ModelOptions, StackOptions
from asr.nn.hybrid_attention import HybridAttention
from asr.nn.kv_cache import LayerCache
from asr.nn.model import ASRModel
from asr.nn.relative_bias import RelativeBias, RelativePositionBias, relative_position_bucket
from asr.nn.rotary import RotaryEmbeddingWithRotation, RotaryFrequencies

N_STATE, N_HEAD, LOCAL_HEADS, WINDOW = 16, 4, 2, 5
GATE_LOGITS = (0.3, -0.7)  # not at init, so a wrong gate formula shows
LENGTHS = (1, WINDOW - 1, WINDOW, WINDOW + 1, 3 * WINDOW + 5)


# ---------------------------------------------------------------------------------------------
# Naive reference: explicit float64 softmax over the full [Tq, Tk] grid with a per-head mask.

def ref_head(q, k, v, allowed, bias):
    """q [Tq, h], k/v [Tk, h], allowed [Tq, Tk] bool, bias [Tq, Tk] or None."""
    scores = q @ k.T / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    # a query whose every key is masked sees itself (only padded queries can be in that case)
    empty = ~allowed.any(dim=-1, keepdim=True)
    allowed = allowed | (empty & torch.eye(*allowed.shape, dtype=torch.bool))
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    return weights @ v


def ref_pool(k, v, bias, valid, stride):
    """Masked mean over slots of `stride` keys: a slot is real if it has a real member."""
    slots_k, slots_v, slots_b, slots_ok = [], [], [], []
    for start in range(0, k.shape[0], stride):
        members = [j for j in range(start, min(start + stride, k.shape[0])) if valid[j]]
        slots_ok.append(bool(members))
        members = members or [start]  # a placeholder, masked anyway
        slots_k.append(k[members].mean(0))
        slots_v.append(v[members].mean(0))
        if bias is not None:
            slots_b.append(bias[:, members].mean(1))
    pooled_bias = None if bias is None else torch.stack(slots_b, dim=1)
    return torch.stack(slots_k), torch.stack(slots_v), pooled_bias, torch.tensor(slots_ok)


def reference(module, x, key_mask=None, causal=False, bias=None, offset=0):
    """The hybrid layer written out head by head (no rotary)."""
    batch, n_query, d = x.shape
    n_head, h = module.n_head, d // module.n_head
    q, k, v = F.linear(x, module.qkv.weight, module.qkv.bias).split(d, dim=-1)
    query_pos = torch.arange(offset, offset + n_query)[:, None]
    key_pos = torch.arange(n_query)[None, :]
    scale = 2 * torch.sigmoid(module.gate_logits) if module.gate_logits is not None else torch.ones(2)
    rows = []
    for b in range(batch):
        valid = key_mask[b] if key_mask is not None else torch.ones(n_query, dtype=torch.bool)
        heads = []
        for i in range(n_head):
            cols = slice(i * h, (i + 1) * h)
            qi, ki, vi = q[b, :, cols], k[b, :, cols], v[b, :, cols]
            bi = None if bias is None else bias[0, i]
            allowed = valid[None, :].expand(n_query, -1)
            if causal:
                allowed = allowed & (key_pos <= query_pos)
            if i < module.local_heads:
                allowed = allowed & ((query_pos - key_pos).abs() <= module.window)
                heads.append(ref_head(qi, ki, vi, allowed, bi) * scale[0])
            elif module.global_stride > 1:
                kp, vp, bp, ok = ref_pool(ki, vi, bi, valid, module.global_stride)
                heads.append(ref_head(qi, kp, vp, ok[None, :].expand(n_query, -1), bp) * scale[1])
            else:
                heads.append(ref_head(qi, ki, vi, allowed, bi) * scale[1])
        rows.append(torch.cat(heads, dim=-1))
    return F.linear(torch.stack(rows), module.out.weight, module.out.bias)


# ---------------------------------------------------------------------------------------------

def make_layer(window=WINDOW, local_heads=LOCAL_HEADS, stride=1, gate=True, seed=0, rotary=None):
    torch.manual_seed(seed)
    layer = HybridAttention(N_STATE, N_HEAD, rotary, window=window, local_heads=local_heads,
                            global_stride=stride, gate=gate).double()
    if gate:
        with torch.no_grad():
            layer.gate_logits.copy_(torch.tensor(GATE_LOGITS))
    return layer


def padding_mask(n):
    """Batch of 2: one full row, one about half as long (at least one real frame)."""
    lengths = torch.tensor([n, max(1, n // 2)])
    return torch.arange(n)[None, :] < lengths[:, None]


def random_bias(n_query, n_key, seed=1, offset=0, dtype=torch.float64, requires_grad=True):
    """Random per-distance bias values (one per head and relative position), as a stack hands
    them to its layers."""
    torch.manual_seed(seed)
    values = torch.randn(n_query + n_key - 1, N_HEAD, dtype=dtype, requires_grad=requires_grad)
    return RelativeBias(values, n_query, n_key, offset)


def naive_dense(bias):
    """[1, H, Tq, Tk] written out entry by entry: values[key - query - lowest]."""
    rows = []
    for q in range(bias.n_query):
        rows.append(torch.stack([bias.values[k - (q + bias.offset) - bias.lowest] for k in range(bias.n_key)]))
    return torch.stack(rows).permute(2, 0, 1)[None]  # [Tq, Tk, H] -> [1, H, Tq, Tk]


@pytest.fixture(params=["auto", "dense", "slice", "blocked"])
def local_path(request, monkeypatch):
    """Force each local-head code path (each is valid for any length), or let the layer choose."""
    if request.param != "auto":
        monkeypatch.setattr(hybrid, "_choose_local_path", lambda *args: request.param)
    return request.param


@pytest.fixture(params=[1, hybrid.MIN_BLOCK])
def min_block(request, monkeypatch):
    """Blocks of exactly `window` rows, and the default minimum block."""
    monkeypatch.setattr(hybrid, "MIN_BLOCK", request.param)
    return request.param


def check_against_reference(layer, n, *, key_mask, causal, with_bias):
    torch.manual_seed(2)
    x = torch.randn(2, n, N_STATE, dtype=torch.float64, requires_grad=True)
    bias = random_bias(n, n) if with_bias else None
    weight = torch.randn(2, n, N_STATE, dtype=torch.float64)  # a loss that reaches every output
    inputs = AttentionInputs(key_mask=key_mask, causal=causal, bias=bias)
    got = layer(x, inputs)
    want = reference(layer, x, key_mask, causal, None if bias is None else naive_dense(bias))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    tensors = [layer.qkv.weight, layer.qkv.bias, layer.out.weight, x, layer.gate_logits]
    if bias is not None:
        tensors.append(bias.values)  # the bias table's gradient flows through these
    got_grads = torch.autograd.grad((got * weight).sum(), tensors)
    want_grads = torch.autograd.grad((want * weight).sum(), tensors)
    for name, a, b in zip(["qkv.weight", "qkv.bias", "out.weight", "x", "gate", "bias"], got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("stride", [1, 3])
def test_encoder_matches_reference(n, with_bias, stride, local_path, min_block):
    layer = make_layer(stride=stride)
    check_against_reference(layer, n, key_mask=padding_mask(n), causal=False, with_bias=with_bias)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("with_bias", [False, True])
def test_decoder_matches_reference(n, with_bias, local_path, min_block):
    layer = make_layer()
    check_against_reference(layer, n, key_mask=None, causal=True, with_bias=with_bias)


@pytest.mark.parametrize("causal,stride", [(False, 1), (False, 3), (True, 1)])  # pooling: encoder only
def test_bias_table_gradient_matches_reference(causal, stride, local_path, min_block):
    """Through RelativePositionBias: the bucket table gets the reference's gradient."""
    n = 3 * WINDOW + 5
    layer = make_layer(stride=stride)
    table = RelativePositionBias(N_HEAD, bidirectional=not causal, num_buckets=8, max_distance=16).double()
    torch.manual_seed(3)
    with torch.no_grad():
        table.embedding.weight.normal_()
    x = torch.randn(2, n, N_STATE, dtype=torch.float64)
    key_mask = None if causal else padding_mask(n)
    weight = torch.randn(2, n, N_STATE, dtype=torch.float64)
    got = layer(x, AttentionInputs(key_mask=key_mask, causal=causal, bias=table(n, n)))
    (got_grad,) = torch.autograd.grad((got * weight).sum(), [table.embedding.weight])
    relative = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    buckets = relative_position_bucket(relative, bidirectional=not causal, num_buckets=8, max_distance=16)
    dense = table.embedding.weight[buckets].permute(2, 0, 1)[None]  # [1, H, T, T] by lookup
    want = reference(layer, x, key_mask, causal, dense)
    (want_grad,) = torch.autograd.grad((want * weight).sum(), [table.embedding.weight])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("window", [0, 1, 2 * WINDOW])
def test_other_windows_and_head_splits_match_reference(window, local_path):
    for local_heads in (0, 1, N_HEAD):
        layer = make_layer(window=window, local_heads=local_heads, stride=2)
        check_against_reference(layer, 23, key_mask=padding_mask(23), causal=False, with_bias=True)
    layer = make_layer(window=window, gate=False)
    x = torch.randn(2, 23, N_STATE, dtype=torch.float64)
    torch.testing.assert_close(layer(x, AttentionInputs(causal=True)), reference(layer, x, causal=True),
                               atol=1e-6, rtol=1e-6)


def test_padded_queries_stay_finite_when_their_window_is_all_padding(local_path):
    layer = make_layer(window=2)
    n = 40
    key_mask = torch.arange(n)[None, :] < torch.tensor([n, 3])[:, None]  # row 1: 3 real frames
    x = torch.randn(2, n, N_STATE, dtype=torch.float64, requires_grad=True)
    y = layer(x, AttentionInputs(key_mask=key_mask))
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------
# Decoder KV cache

def decoder_inputs(frequencies, relative_bias, offset, n):
    return AttentionInputs(causal=True, offset=offset, rope_angles=frequencies.angles(offset, n),
                           bias=relative_bias(n, offset + n, offset))


@pytest.mark.parametrize("chunks", [[1] * 12, [3] + [1] * 9, [7, 5, 1, 1]])
def test_kv_cache_steps_equal_full_causal_forward(chunks, min_block, local_path):
    head_dim = N_STATE // N_HEAD
    torch.manual_seed(0)
    rotary = RotaryEmbeddingWithRotation(head_dim).double()
    frequencies = RotaryFrequencies(head_dim)
    relative_bias = RelativePositionBias(N_HEAD, bidirectional=False, num_buckets=8, max_distance=16).double()
    with torch.no_grad():
        rotary.thetas.normal_()
        relative_bias.embedding.weight.normal_()
    layer = make_layer(window=3, rotary=rotary)
    n = sum(chunks)
    x = torch.randn(2, n, N_STATE, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x, decoder_inputs(frequencies, relative_bias, 0, n))
        cache, steps, offset = LayerCache(), [], 0
        for size in chunks:
            steps.append(layer(x[:, offset:offset + size], decoder_inputs(frequencies, relative_bias, offset, size),
                               cache))
            offset += size
    assert cache.self_key.shape[2] == n
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-6)


def test_pooled_globals_refuse_the_decoder():
    layer = make_layer(stride=3)
    with pytest.raises(ValueError, match="global_stride > 1 is for the encoder"):
        layer(torch.randn(1, 4, N_STATE, dtype=torch.float64), AttentionInputs(causal=True))


def test_constructor_checks():
    for kwargs in (dict(local_heads=N_HEAD + 1), dict(window=-1), dict(global_stride=0)):
        options = dict(window=WINDOW, local_heads=LOCAL_HEADS) | kwargs
        with pytest.raises(ValueError):
            HybridAttention(N_STATE, N_HEAD, None, **options)


# ---------------------------------------------------------------------------------------------
# Function-preserving init

@pytest.mark.parametrize("causal", [False, True])
def test_whole_context_window_with_closed_gates_is_plain_attention(causal):
    n = 30
    torch.manual_seed(0)
    plain = MultiHeadAttention(N_STATE, N_HEAD).double()
    layer = make_layer(window=n)
    layer.reset_to_identity()
    assert layer.gate_logits.tolist() == [0.0, 0.0]
    result = layer.load_state_dict(plain.state_dict(), strict=False)
    assert result.missing_keys == ["gate_logits"] and not result.unexpected_keys
    key_mask = None if causal else padding_mask(n)
    inputs = AttentionInputs(key_mask=key_mask, causal=causal, bias=random_bias(n, n, requires_grad=False))
    x = torch.randn(2, n, N_STATE, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, inputs), plain(x, inputs), atol=1e-12, rtol=1e-12)
        # and this can fail: a smaller window is no longer plain attention
        layer.window = 4
        assert (layer(x, inputs) - plain(x, inputs)).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Linear memory: record the size of every tensor any aten op produces, forward and backward.

class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def largest_intermediate(n, window, local_heads, n_head=2, head_dim=8, with_bias=False, stride=1):
    """Elements of the largest tensor made in a forward + backward (relative bias lookup
    included). SDPA's math backend writes the scores out (fused kernels hide them), so the count
    includes every score matrix."""
    torch.manual_seed(0)
    layer = HybridAttention(n_head * head_dim, n_head, None, window=window, local_heads=local_heads,
                            global_stride=stride)
    table = RelativePositionBias(n_head, bidirectional=True)
    with torch.no_grad():
        table.embedding.weight.normal_()
    x = torch.randn(1, n, n_head * head_dim, requires_grad=True)
    key_mask = torch.arange(n)[None, :] < n - 100
    with sdpa_kernel(SDPBackend.MATH), LargestTensor() as probe:
        bias = table(n, n) if with_bias else None
        layer(x, AttentionInputs(key_mask=key_mask, bias=bias)).sum().backward()
    if with_bias:
        assert table.embedding.weight.grad.abs().max() > 0
    return probe.numel


@pytest.mark.parametrize("with_bias", [False, True])
def test_local_heads_cost_linear_memory(with_bias):
    n, window, n_head = 8192, 16, 2
    largest = largest_intermediate(n, window, local_heads=n_head, with_bias=with_bias)
    # the blocked scores [heads, T, 3 * block] are the largest thing, nowhere near T x T
    assert largest <= n_head * n * hybrid.BLOCKS_PER_SPAN * window < n * n // 50
    assert largest_intermediate(2 * n, window, local_heads=n_head, with_bias=with_bias) <= 2.1 * largest
    # the probe does see T x T tensors when there are any: one global head builds its scores
    assert largest_intermediate(2048, window, local_heads=1, with_bias=with_bias) >= 2048 * 2048


def test_pooled_global_heads_with_bias_never_build_a_full_grid():
    n, stride = 2048, 8
    largest = largest_intermediate(n, 16, local_heads=1, with_bias=True, stride=stride)
    # one pooled head: its scores (and its bias) are [T, T / s]
    assert largest <= n * n // stride


class DenseGridCounter:
    """Counts RelativeBias.dense calls (the only builder of a [Tq, Tk] bias grid)."""

    def __init__(self, monkeypatch, forbid=False):
        self.calls = []
        dense = RelativeBias.dense

        def counted(bias, heads=None):
            if forbid:
                raise AssertionError(f"dense bias grid built for {bias.n_query} x {bias.n_key}")
            self.calls.append(heads)
            return dense(bias, heads)

        monkeypatch.setattr(RelativeBias, "dense", counted)


def local_stack_options(attention="hybrid", **audio):
    return ModelOptions(audio=StackOptions(positions="none", rotary=True, relative_bias=True, attention=attention,
                                           window=8, local_heads=DIMS.n_audio_head, **audio),
                        text=StackOptions(positions="learned", rotary=True, relative_bias=True, attention="hybrid",
                                          window=3, local_heads=DIMS.n_text_head))


def test_purely_local_stack_with_bias_never_builds_a_dense_grid(monkeypatch):
    dims = replace(DIMS, n_audio_ctx=1 << 14, n_text_ctx=512)
    torch.manual_seed(0)
    model = ASRModel(dims, local_stack_options())
    with torch.no_grad():
        for stack in (model.encoder, model.decoder):
            stack.positions.relative_bias.embedding.weight.normal_()
    n_frames = 6000  # 3000 encoder positions, window 8
    mel = torch.randn(1, 80, n_frames)
    # more tokens than the local heads attend to densely: blocked in the decoder too
    tokens = torch.randint(0, DIMS.n_vocab, (1, hybrid.DENSE_MAX_KEYS + 60))
    DenseGridCounter(monkeypatch, forbid=True)
    with LargestTensor() as probe:
        model(mel, tokens).sum().backward()
    t, block = n_frames // 2, hybrid.MIN_BLOCK
    # the largest tensors are the blocked scores / masks [heads, T, 3 * block], linear in T
    blocked = DIMS.n_audio_head * math.ceil(t / block) * block * hybrid.BLOCKS_PER_SPAN * block
    assert probe.numel <= blocked < t * t // 15
    for stack in (model.encoder, model.decoder):
        assert stack.positions.relative_bias.embedding.weight.grad.abs().max() > 0


def test_dense_grid_is_built_once_per_stack_forward(monkeypatch):
    counter = DenseGridCounter(monkeypatch)
    # local heads blocked even at this short length (they would attend densely otherwise)
    monkeypatch.setattr(hybrid, "_choose_local_path", lambda *args: "blocked")
    options = local_stack_options(attention=["hybrid", "mha"], global_stride=1)
    options = replace(options, audio=replace(options.audio, local_heads=1),
                      text=replace(options.text, attention="mha"))
    torch.manual_seed(0)
    model = ASRModel(replace(DIMS, n_audio_layer=2, n_text_layer=2), options)
    model(torch.randn(2, 80, 40), torch.randint(0, DIMS.n_vocab, (2, 5))).sum().backward()
    # encoder: the hybrid layer's global heads 1..3 and the plain layer's 0..3; decoder: 0..3 once
    assert sorted(counter.calls, key=str) == sorted([range(1, DIMS.n_audio_head), None, None], key=str)


# ---------------------------------------------------------------------------------------------
# dtypes

def test_bf16_autocast_matches_float32():
    layer = make_layer(stride=3).float()
    n = 50
    x = torch.randn(2, n, N_STATE, requires_grad=True)
    inputs = AttentionInputs(key_mask=padding_mask(n), bias=random_bias(n, n, dtype=torch.float32,
                                                                        requires_grad=False))
    want = layer(x, inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x, inputs)
        unpadded = layer(x, replace(inputs, key_mask=None))
    assert got.dtype == unpadded.dtype == torch.bfloat16 and torch.isfinite(unpadded).all()
    torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=5e-2)
    got.float().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.gate_logits.grad).all()


# ---------------------------------------------------------------------------------------------
# The whole model

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=64, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                       n_vocab=50, n_text_ctx=16, n_text_state=32, n_text_head=4, n_text_layer=2)
MODEL_OPTIONS = {
    "plain": ModelOptions(audio=StackOptions(attention="hybrid", window=4),
                          text=StackOptions(positions="learned", attention="hybrid", window=3)),
    "extras": ModelOptions(audio=StackOptions(attention="hybrid", window=4, rotary=True, relative_bias=True,
                                              global_stride=3, local_heads=1),
                           text=StackOptions(positions="learned", attention="hybrid", window=3, rotary=True,
                                             relative_bias=True)),
}


def hybrid_model(name):
    torch.manual_seed(0)
    model = ASRModel(DIMS, MODEL_OPTIONS[name]).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("name", MODEL_OPTIONS)
def test_model_cache_equals_full_forward(name, local_path):
    model = hybrid_model(name)
    assert all(type(b.attn) is HybridAttention for b in [*model.encoder.blocks, *model.decoder.blocks])
    mel = torch.randn(2, 80, 50, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 12))
    with torch.no_grad():
        audio, mask = model.embed_audio(mel, torch.tensor([50, 33]))
        full = model.logits(tokens, audio, mask)
        cache = model.new_cache()
        steps = [model.logits(tokens[:, :3], audio, mask, cache)]
        steps += [model.logits(tokens[:, i:i + 1], audio, mask, cache) for i in range(3, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODEL_OPTIONS)
def test_model_padded_batch_equals_one_by_one(name, local_path):
    model = hybrid_model(name)
    lengths = [61, 37, 8]  # 31, 19 and 4 encoder positions; 4 is within the window
    batch = torch.zeros(3, 80, max(lengths), dtype=torch.float64)
    for i, n in enumerate(lengths):
        batch[i, :, :n] = torch.randn(80, n, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (3, 6))
    with torch.no_grad():
        audio, mask = model.embed_audio(batch, torch.tensor(lengths))
        logits = model.logits(tokens, audio, mask)
        for i, n in enumerate(lengths):
            alone, _ = model.embed_audio(batch[i:i + 1, :, :n])
            m = alone.shape[1]
            torch.testing.assert_close(audio[i, :m], alone[0], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(logits[i], model.logits(tokens[i:i + 1], alone)[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("local_heads,expected", [(None, DIMS.n_audio_head // 2), (0, 0), (1, 1),
                                                   (DIMS.n_audio_head, DIMS.n_audio_head)])
def test_local_heads_option_none_is_half_and_zero_is_all_global(tmp_path, local_heads, expected):
    options = ModelOptions(audio=StackOptions(attention="hybrid", window=4, local_heads=local_heads),
                           text=StackOptions(positions="learned", attention="hybrid", window=3,
                                             local_heads=local_heads))
    torch.manual_seed(0)
    model = ASRModel(DIMS, options)
    assert [b.attn.local_heads for b in [*model.encoder.blocks, *model.decoder.blocks]] == [expected] * 4
    save_checkpoint(model, tmp_path / "c")
    loaded, config = load_checkpoint(tmp_path / "c")
    assert config["options"]["audio"]["local_heads"] == local_heads  # None stays null, 0 stays 0
    assert loaded.options == model.options
    assert [b.attn.local_heads for b in [*loaded.encoder.blocks, *loaded.decoder.blocks]] == [expected] * 4
