"""DynamicConvAttention against a naive loop reference: "same" and causal padding, odd and even
kernel widths, softmax-normalised kernels, zero-initialised branch, padding masks, incremental
decoding through the cache, bf16 autocast, and the layer inside the whole model."""
import json

import pytest
import torch
import torch.nn.functional as F

from asr.nn.attention import AttentionInputs, MultiHeadAttention
from asr.store.checkpoint import load_checkpoint, save_checkpoint
from asr.config import ModelDimensions, ModelOptions, StackOptions
import asr.nn.dynconv as dynconv
from asr.nn.dynconv import DynamicConvAttention, conv_padding, dynamic_conv
from asr.nn.kv_cache import LayerCache
from asr.nn.model import ASRModel
from asr.convert.warm_start import load_vanilla_weights

N_STATE, N_HEAD = 8, 2  # two channel blocks of four channels

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=64, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                       n_vocab=50, n_text_ctx=16, n_text_state=32, n_text_head=4, n_text_layer=2)


def make_layer(kernel_width, causal, seed=0, n_state=N_STATE, n_head=N_HEAD, dtype=torch.float64):
    """A layer with every parameter random, the output projection included (the branch on), and
    kernel logits large enough that the kernels are far from uniform."""
    torch.manual_seed(seed)
    layer = DynamicConvAttention(n_state, n_head, None, kernel_width=kernel_width, causal=causal).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        layer.kernel.weight.mul_(5.0)
    return layer


@pytest.fixture(params=[None, 1, 5])
def chunk(request, monkeypatch):
    """dynamic_conv's chunk of output steps: the default, one step, and one that leaves a
    partial last chunk."""
    if request.param is not None:
        monkeypatch.setattr(dynconv, "CHUNK", request.param)
    return request.param


def encoder_inputs(key_mask=None):
    return AttentionInputs(key_mask=key_mask, causal=False)


def decoder_inputs(offset=0):
    return AttentionInputs(causal=True, offset=offset)


# ---------------------------------------------------------------------------------------------
# Naive reference: loops over batch, time, channel and kernel tap, one scalar at a time.

def scalars(t):
    """A [time, n] tensor as nested lists of 0-d tensors (one unbind node each, so the loops
    below stay differentiable without thousands of indexing nodes)."""
    return [list(row.unbind(0)) for row in t.unbind(0)]


def attention_part(layer, x, inputs):
    """The layer without its branch: the plain MultiHeadAttention forward on the same weights."""
    return MultiHeadAttention.forward(layer, x, inputs)


def naive_branch(layer, x, causal, key_mask=None):
    """The ungated branch conv_out(DynamicConv(conv_in(x))) with zero padding outside [0, T)."""
    batch, time, channels = x.shape
    width, blocks = layer.kernel_width, layer.channel_blocks
    per_block = channels // blocks
    offset = width - 1 if causal else width // 2  # even widths: one more tap in the past
    values = F.linear(x, layer.conv_in.weight, layer.conv_in.bias)
    if key_mask is not None:
        values = values * key_mask[:, :, None].to(values.dtype)
    logits = F.linear(x, layer.kernel.weight, layer.kernel.bias)  # [batch, time, blocks * width]
    rows = []
    for b in range(batch):
        v, logit = scalars(values[b]), scalars(logits[b])
        steps = []
        for t in range(time):
            kernels = []  # softmax over the width, one kernel per channel block
            for b in range(blocks):
                exp = [torch.exp(logit[t][b * width + k]) for k in range(width)]
                total = sum(exp)
                kernels.append([e / total for e in exp])
            outputs = []
            for c in range(channels):
                acc = torch.zeros((), dtype=x.dtype)
                for k in range(width):
                    source = t + k - offset
                    if 0 <= source < time:
                        acc = acc + kernels[c // per_block][k] * v[source][c]
                outputs.append(acc)
            steps.append(torch.stack(outputs))
        rows.append(torch.stack(steps))
    return F.linear(torch.stack(rows), layer.conv_out.weight, layer.conv_out.bias)


def naive_layer(layer, x, inputs):
    gate = torch.sigmoid(F.linear(x, layer.gate.weight, layer.gate.bias))
    return attention_part(layer, x, inputs) + gate * naive_branch(layer, x, inputs.causal, inputs.key_mask)


def output_and_grads(layer, x, inputs, forward):
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    y = forward(layer, x, inputs)
    # a fixed random weighting so every output element contributes its own gradient
    torch.manual_seed(123)
    (y * torch.randn_like(y)).sum().backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    grads["x"] = x.grad.clone()
    return y.detach(), grads


@pytest.mark.parametrize("causal", [False, True], ids=["same", "causal"])
@pytest.mark.parametrize("kernel_width", [3, 4, 15])
@pytest.mark.parametrize("time", [2, 16])  # shorter and longer than every kernel
def test_matches_naive_reference_forward_and_gradients(causal, kernel_width, time, chunk):
    layer = make_layer(kernel_width, causal)
    x = torch.randn(2, time, N_STATE, dtype=torch.float64)
    inputs = AttentionInputs(causal=causal)
    got, got_grads = output_and_grads(layer, x, inputs, lambda m, v, i: m(v, i))
    want, want_grads = output_and_grads(layer, x, inputs, naive_layer)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    for name in ("x", "conv_in.weight", "conv_in.bias", "kernel.weight", "kernel.bias",
                 "conv_out.weight", "conv_out.bias", "gate.weight", "gate.bias", "qkv.weight"):
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-10, rtol=1e-10, msg=name)
        assert got_grads[name].abs().max() > 0, name


@pytest.mark.parametrize("causal", [False, True], ids=["same", "causal"])
@pytest.mark.parametrize("kernel_width", [1, 3, 4, 5])
def test_one_hot_kernels_shift_the_sequence(causal, kernel_width, chunk):
    """All weight on tap k picks input t + k - offset (zero outside): pins down the centring,
    in particular for even widths (width 4 "same": taps t-2, t-1, t, t+1)."""
    offset = kernel_width - 1 if causal else kernel_width // 2
    time = 7
    values = torch.randn(1, time, 4, dtype=torch.float64)
    for k in range(kernel_width):
        kernels = torch.zeros(1, time, 1, kernel_width, dtype=torch.float64)
        kernels[..., k] = 1.0
        out = dynamic_conv(values, kernels, conv_padding(kernel_width, causal))
        want = torch.zeros_like(values)
        for t in range(time):
            if 0 <= t + k - offset < time:
                want[0, t] = values[0, t + k - offset]
        torch.testing.assert_close(out, want, atol=0, rtol=0)
    if kernel_width == 4 and not causal:
        assert conv_padding(4, causal=False) == (2, 1)


def windowed_reference(values, kernels, padding):
    """Multiply each step's window of padded inputs by its kernel and sum over the width."""
    batch, time_out, blocks, width = kernels.shape
    windows = F.pad(values, (0, 0, *padding)).unfold(1, width, 1)  # [B, T, C, width]
    windows = windows.unflatten(2, (blocks, -1))
    return (windows * kernels[:, :, :, None, :]).sum(-1).flatten(2)


@pytest.mark.parametrize("time", [1, 15, 64, 65, 150])
@pytest.mark.parametrize("kernel_width,padding", [(15, (14, 0)), (15, (7, 7)), (4, (2, 1)), (5, (0, 0))])
def test_dynamic_conv_chunks_match_windowed_sum(time, kernel_width, padding, chunk):
    torch.manual_seed(time)
    time_in = time + kernel_width - 1 - sum(padding)  # (0, 0): a cache already holds the past
    values = torch.randn(2, time_in, 12, dtype=torch.float64, requires_grad=True)
    kernels = torch.randn(2, time, 3, kernel_width, dtype=torch.float64, requires_grad=True)
    got, want = dynamic_conv(values, kernels, padding), windowed_reference(values, kernels, padding)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    weight = torch.randn_like(got)
    got_grads = torch.autograd.grad((got * weight).sum(), [values, kernels])
    want_grads = torch.autograd.grad((want * weight).sum(), [values, kernels])
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_dynamic_conv_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="kernels for 5 steps"):
        dynamic_conv(torch.zeros(1, 5, 4), torch.zeros(1, 5, 1, 3), (1, 0))


def test_predicted_kernels_are_softmax_over_the_width():
    layer = make_layer(kernel_width=7, causal=False)
    x = torch.randn(3, 11, N_STATE, dtype=torch.float64)
    kernels = layer.predict_kernels(x)
    assert kernels.shape == (3, 11, N_HEAD, 7)
    assert (kernels > 0).all()
    torch.testing.assert_close(kernels.sum(-1), torch.ones(3, 11, N_HEAD, dtype=torch.float64))
    # kernels really vary from step to step (dynamic, not one shared kernel)
    assert (kernels[:, 1:] - kernels[:, :-1]).abs().max() > 0.1
    # and they are what the convolution uses: a hook on the kernel predictor sees its own logits
    seen = {}
    layer.kernel.register_forward_hook(lambda m, i, o: seen.setdefault("logits", o))
    layer(x, encoder_inputs())
    logits = seen["logits"].unflatten(-1, (N_HEAD, 7))
    torch.testing.assert_close(torch.softmax(logits, dim=-1), kernels)


def test_kernels_normalised_in_float32_under_bf16():
    layer = make_layer(kernel_width=15, causal=False, dtype=torch.float32)
    x = torch.randn(2, 9, N_STATE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kernels = layer.predict_kernels(x)
    assert kernels.dtype == torch.bfloat16
    torch.testing.assert_close(kernels.float().sum(-1), torch.ones(2, 9, N_HEAD), atol=2e-2, rtol=0)


def test_causal_outputs_do_not_see_the_future():
    layer = make_layer(kernel_width=5, causal=True)
    x = torch.randn(2, 12, N_STATE, dtype=torch.float64)
    base = layer(x, decoder_inputs())
    for t in (0, 4, 11):
        changed = x.clone()
        changed[:, t] += torch.randn(2, N_STATE, dtype=torch.float64)
        y = layer(changed, decoder_inputs())
        torch.testing.assert_close(y[:, :t], base[:, :t], atol=0, rtol=0)
        assert (y[:, t] - base[:, t]).abs().max() > 1e-3
        # the branch alone reaches exactly kernel_width - 1 steps ahead
        branch = layer.convolve(changed, decoder_inputs()) - layer.convolve(x, decoder_inputs())
        moved = branch.abs().amax(dim=(0, 2)) > 0
        assert moved.nonzero().flatten().tolist() == list(range(t, min(t + 5, 12)))


def test_same_padding_branch_has_centred_receptive_field():
    layer = make_layer(kernel_width=4, causal=False)
    x = torch.randn(1, 12, N_STATE, dtype=torch.float64)
    changed = x.clone()
    changed[:, 6] += 1.0
    moved = (layer.convolve(changed, encoder_inputs()) - layer.convolve(x, encoder_inputs())).abs().amax(dim=(0, 2)) > 0
    # output t reads t-2 .. t+1, so input 6 reaches outputs 5 .. 8
    assert moved.nonzero().flatten().tolist() == [5, 6, 7, 8]


# ---------------------------------------------------------------------------------------------
# Zero-initialised branch

def test_fresh_layer_is_exactly_its_attention_and_the_branch_opens_after_one_step():
    torch.manual_seed(0)
    layer = DynamicConvAttention(N_STATE, N_HEAD, None, kernel_width=5, causal=False).double()
    x = torch.randn(2, 10, N_STATE, dtype=torch.float64)
    inputs = encoder_inputs()
    assert torch.equal(layer(x, inputs), attention_part(layer, x, inputs))
    assert torch.equal(layer.conv_out.weight, torch.zeros_like(layer.conv_out.weight))

    target = torch.randn(2, 10, N_STATE, dtype=torch.float64)
    (layer(x, inputs) - target).pow(2).sum().backward()
    assert layer.conv_out.weight.grad.abs().max() > 0
    # behind a zero output projection the rest of the branch gets nothing yet
    assert layer.gate.weight.grad.abs().max() == 0 and layer.kernel.weight.grad.abs().max() == 0
    # one plain SGD step, written out (torch.optim's first use costs ~1.5 s of imports)
    with torch.no_grad():
        for p in layer.parameters():
            p -= 0.1 * p.grad
            p.grad = None

    assert (layer(x, inputs) - attention_part(layer, x, inputs)).abs().max() > 1e-4
    (layer(x, inputs) - target).pow(2).sum().backward()
    for module in (layer.gate, layer.kernel, layer.conv_in, layer.conv_out):
        assert module.weight.grad.abs().max() > 0


def test_reset_to_identity_silences_the_branch():
    layer = make_layer(kernel_width=5, causal=True)
    x = torch.randn(2, 6, N_STATE, dtype=torch.float64)
    assert not torch.equal(layer(x, decoder_inputs()), attention_part(layer, x, decoder_inputs()))
    layer.reset_to_identity()
    assert torch.equal(layer.conv_out.bias, torch.zeros_like(layer.conv_out.bias))
    assert torch.equal(layer(x, decoder_inputs()), attention_part(layer, x, decoder_inputs()))


# ---------------------------------------------------------------------------------------------
# Padding and incremental decoding

def test_padded_batch_equals_one_by_one():
    layer = make_layer(kernel_width=5, causal=False)
    lengths = [11, 6, 2]
    seqs = [torch.randn(1, n, N_STATE, dtype=torch.float64) for n in lengths]
    # garbage, not zeros, past the ends: the mask must keep it out
    batch = torch.randn(3, max(lengths), N_STATE, dtype=torch.float64) * 10
    for i, s in enumerate(seqs):
        batch[i, :lengths[i]] = s[0]
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    got = layer(batch, encoder_inputs(mask))
    for i, s in enumerate(seqs):
        torch.testing.assert_close(got[i, :lengths[i]], layer(s, encoder_inputs())[0], atol=1e-12, rtol=1e-12)
    # and the branch alone against the naive reference with the mask
    torch.testing.assert_close(layer.convolve(batch, encoder_inputs(mask)),
                               naive_branch(layer, batch, causal=False, key_mask=mask), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kernel_width", [1, 4, 15])
def test_incremental_decoding_through_layer_cache_equals_full_forward(kernel_width, chunk):
    layer = make_layer(kernel_width, causal=True)
    x = torch.randn(2, 10, N_STATE, dtype=torch.float64)
    full = layer(x, decoder_inputs())
    cache = LayerCache()
    # a 3-token prompt, single tokens, a 2-token chunk, single tokens
    bounds = [0, 3, 4, 5, 7, 8, 9, 10]
    steps = [layer(x[:, a:b], decoder_inputs(offset=a), cache) for a, b in zip(bounds, bounds[1:])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-12, rtol=1e-12)
    # the state holds the last kernel_width - 1 projected inputs; attention's KV cache grew too
    assert cache.conv_state.shape == (2, kernel_width - 1, N_STATE)
    history = torch.cat([torch.zeros(2, kernel_width - 1, N_STATE, dtype=torch.float64), layer.conv_in(x)], 1)
    torch.testing.assert_close(cache.conv_state, history[:, history.shape[1] - (kernel_width - 1):])
    assert cache.self_key.shape[2] == 10


def test_cache_is_refused_by_an_encoder_layer():
    layer = make_layer(kernel_width=3, causal=False)
    with pytest.raises(ValueError, match="causal"):
        layer(torch.randn(1, 4, N_STATE, dtype=torch.float64), encoder_inputs(), LayerCache())


# ---------------------------------------------------------------------------------------------
# bf16 autocast

def test_bf16_autocast_forward_backward_and_cache():
    layer = make_layer(kernel_width=15, causal=True, dtype=torch.float32)
    x = torch.randn(2, 20, N_STATE)
    reference = layer(x, decoder_inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, decoder_inputs())
        cache = LayerCache()
        steps = [layer(x[:, :3], decoder_inputs(0), cache)]
        steps += [layer(x[:, i:i + 1], decoder_inputs(i), cache) for i in range(3, 20)]
    assert y.dtype == torch.bfloat16 and cache.conv_state.dtype == torch.bfloat16
    scale = reference.abs().max()
    assert (y.float() - reference).abs().max() < 0.05 * scale
    assert (torch.cat(steps, 1).float() - reference).abs().max() < 0.05 * scale
    y.float().pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ---------------------------------------------------------------------------------------------
# Inside the whole model

def dynconv_options(text_positions="learned", **text):
    return ModelOptions(audio=StackOptions(attention="dynconv", kernel_width=5),
                        text=StackOptions(positions=text_positions, attention="dynconv", kernel_width=4, **text))


def make_model(options, seed=0):
    torch.manual_seed(seed)
    model = ASRModel(DIMS, options).double().eval()
    with torch.no_grad():  # noise on everything: the zero-initialised branches become active
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_model_builds_dynconv_layers_and_branches_matter():
    model = make_model(dynconv_options())
    layers = [b.attn for b in (*model.encoder.blocks, *model.decoder.blocks)]
    assert all(isinstance(layer, DynamicConvAttention) for layer in layers)
    assert [layer.causal for layer in layers] == [False, False, True, True]
    assert [layer.kernel_width for layer in layers] == [5, 5, 4, 4]
    mel = torch.randn(1, 80, 20, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (1, 6))
    with torch.no_grad():
        active = model(mel, tokens)
        model.reset_extras_to_identity()
        silent = model(mel, tokens)
    assert (active - silent).abs().max() > 1e-3


@pytest.mark.parametrize("text", [{}, {"text_positions": "none", "rotary": True, "relative_bias": True}],
                         ids=["learned", "rotary+bias"])
def test_model_incremental_decoding_equals_full_forward(text):
    model = make_model(dynconv_options(**text))
    mel = torch.randn(2, 80, 30, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 9))
    with torch.no_grad():
        audio, mask = model.embed_audio(mel)
        full = model.logits(tokens, audio, mask)
        cache = model.new_cache()
        steps = [model.logits(tokens[:, :3], audio, mask, cache)]
        steps += [model.logits(tokens[:, i:i + 1], audio, mask, cache) for i in range(3, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.layers[0].conv_state.shape == (2, 3, DIMS.n_text_state)


def test_model_cache_reorder_follows_beams():
    model = make_model(dynconv_options())
    mel = torch.randn(3, 80, 20, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (3, 7))
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        audio, _ = model.embed_audio(mel)
        cache = model.new_cache()
        model.logits(tokens[:, :4], audio, None, cache)
        cache.reorder(order)
        got = [model.logits(tokens[order, i:i + 1], audio[order], None, cache) for i in range(4, 7)]
        want = model.logits(tokens[order], audio[order])[:, 4:]
    torch.testing.assert_close(torch.cat(got, dim=1), want, atol=1e-5, rtol=1e-5)


def test_model_padded_encoder_batch_equals_one_by_one():
    model = make_model(dynconv_options())
    lengths = [37, 20, 8]
    mels = [torch.randn(80, n, dtype=torch.float64) for n in lengths]
    batch = torch.zeros(3, 80, max(lengths), dtype=torch.float64)
    for i, m in enumerate(mels):
        batch[i, :, :m.shape[1]] = m
    tokens = torch.randint(0, DIMS.n_vocab, (3, 6))
    with torch.no_grad():
        audio, mask = model.embed_audio(batch, torch.tensor(lengths))
        logits = model.logits(tokens, audio, mask)
        for i, m in enumerate(mels):
            alone, _ = model.embed_audio(m[None])
            n = alone.shape[1]
            torch.testing.assert_close(audio[i, :n], alone[0], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(logits[i], model.logits(tokens[i:i + 1], alone)[0], atol=1e-6, rtol=1e-6)


def test_vanilla_weights_give_the_vanilla_model():
    """Whisper-shaped weights land under their own names (attn.qkv, attn.out: a dynconv layer is a
    MultiHeadAttention); with the branch silent the dynconv model computes exactly the vanilla one."""
    vanilla = make_model(ModelOptions(), seed=1)
    torch.manual_seed(2)
    model = ASRModel(DIMS, dynconv_options()).double().eval()
    extras = load_vanilla_weights(model, vanilla.state_dict())
    branch = ("conv_in", "kernel", "conv_out", "gate")
    assert extras and all(name.split(".")[4] in branch for name in extras)
    assert len(extras) == 2 * len(branch) * (DIMS.n_audio_layer + DIMS.n_text_layer)  # weight + bias
    mel = torch.randn(2, 80, 24, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(mel, tokens), vanilla(mel, tokens), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(model.encoder.blocks[0].attn.qkv.weight, vanilla.encoder.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("channel_blocks,blocks", [(None, DIMS.n_text_head), (1, 1), (8, 8)])
def test_channel_blocks_option_sets_kernels_and_survives_save_load(tmp_path, channel_blocks, blocks):
    options = ModelOptions(audio=StackOptions(attention="dynconv", kernel_width=5, channel_blocks=channel_blocks),
                           text=StackOptions(positions="learned", attention="dynconv", kernel_width=4,
                                             channel_blocks=channel_blocks))
    model = make_model(options).float()  # checkpoints load into float32 models
    for block, width in [(model.encoder.blocks[0], 5), (model.decoder.blocks[0], 4)]:
        assert block.attn.channel_blocks == blocks
        # one predicted kernel per channel block: the kernel projection's output is blocks x width
        assert block.attn.kernel.weight.shape == (blocks * width, DIMS.n_text_state)
    save_checkpoint(model, tmp_path / "c")
    loaded, config = load_checkpoint(tmp_path / "c")
    assert config["options"]["audio"]["channel_blocks"] == channel_blocks
    assert loaded.options == model.options
    assert loaded.decoder.blocks[1].attn.channel_blocks == blocks
    mel = torch.randn(1, 80, 20)
    tokens = torch.randint(0, DIMS.n_vocab, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel, tokens), model(mel, tokens), atol=0, rtol=0)


def test_config_with_the_old_field_name_still_loads(tmp_path):
    """config.json written before the rename spells channel_blocks n_conv_heads."""
    options = ModelOptions(audio=StackOptions(attention="dynconv", kernel_width=5, channel_blocks=2))
    save_checkpoint(make_model(options).float(), tmp_path / "c")
    path = tmp_path / "c" / "config.json"
    config = json.loads(path.read_text())
    for stack in ("audio", "text"):
        config["options"][stack]["n_conv_heads"] = config["options"][stack].pop("channel_blocks")
    path.write_text(json.dumps(config))
    loaded, _ = load_checkpoint(tmp_path / "c")
    assert loaded.options.audio.channel_blocks == 2 and loaded.encoder.blocks[0].attn.channel_blocks == 2
    assert loaded.options.text.channel_blocks is None


def test_channel_blocks_must_divide_the_width():
    with pytest.raises(ValueError, match="not divisible by channel_blocks=3"):
        ASRModel(DIMS, ModelOptions(audio=StackOptions(attention="dynconv", channel_blocks=3)))
    with pytest.raises(ValueError, match="channel_blocks must be >= 1"):
        DynamicConvAttention(N_STATE, N_HEAD, None, kernel_width=3, causal=False, channel_blocks=0)
