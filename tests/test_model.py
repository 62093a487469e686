"""The vanilla encoder-decoder against a reference written out with torch.nn.functional, plus the
KV cache, padding masks and checkpoint round trip."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr.store.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from asr.config import ModelDimensions, ModelOptions, StackOptions
from asr.nn.model import ASRModel

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=64, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                       n_vocab=50, n_text_ctx=16, n_text_state=32, n_text_head=4, n_text_layer=2)


def make_model(options=None, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = ASRModel(DIMS, options or ModelOptions()).to(dtype).eval()
    # default init leaves learned positions tiny; make every parameter matter
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


# ---------------------------------------------------------------------------------------------
# An independent reference: Whisper's computation written out with functional primitives,
# reading the weights by name, with explicit softmax attention (no SDPA).

def ref_attention(q, k, v, n_head, mask=None):
    b, tq, d = q.shape
    h = d // n_head
    q = q.view(b, tq, n_head, h).permute(0, 2, 1, 3)
    k = k.view(b, -1, n_head, h).permute(0, 2, 1, 3)
    v = v.view(b, -1, n_head, h).permute(0, 2, 1, 3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(h)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, dim=-1)
    return (w @ v).permute(0, 2, 1, 3).reshape(b, tq, d)


def ref_block(sd, prefix, x, n_head, self_mask=None, audio=None, cross_mask=None):
    d = x.shape[-1]
    ln = lambda name, t: F.layer_norm(t, (d,), sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"])
    lin = lambda name, t: F.linear(t, sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"])
    h = ln("attn_ln", x)
    q, k, v = lin("attn.qkv", h).split(d, dim=-1)
    x = x + lin("attn.out", ref_attention(q, k, v, n_head, self_mask))
    if audio is not None:
        h = ln("cross_attn_ln", x)
        q = lin("cross_attn.query", h)
        k, v = lin("cross_attn.kv", audio).split(d, dim=-1)
        x = x + lin("cross_attn.out", ref_attention(q, k, v, n_head, cross_mask))
    h = ln("mlp_ln", x)
    h = F.gelu(lin("mlp.0", h))
    return x + lin("mlp.2", h)


def ref_sinusoids(length, channels):
    inc = np.log(10000) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return torch.tensor(np.concatenate([np.sin(t), np.cos(t)], axis=1))


def ref_forward(model, mel, tokens, first_stride=1):
    sd = model.state_dict()
    d = DIMS.n_audio_state
    x = F.gelu(F.conv1d(mel, sd["encoder.conv1.weight"], sd["encoder.conv1.bias"], stride=first_stride, padding=1))
    x = F.gelu(F.conv1d(x, sd["encoder.conv2.weight"], sd["encoder.conv2.bias"], stride=2, padding=1))
    x = x.transpose(1, 2)
    x = x + ref_sinusoids(x.shape[1], d).to(x.dtype)
    for i in range(DIMS.n_audio_layer):
        x = ref_block(sd, f"encoder.blocks.{i}", x, DIMS.n_audio_head)
    audio = F.layer_norm(x, (d,), sd["encoder.ln_post.weight"], sd["encoder.ln_post.bias"])

    n = tokens.shape[1]
    y = sd["decoder.token_embedding.weight"][tokens] + sd["decoder.positions.absolute"][:n]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    for i in range(DIMS.n_text_layer):
        y = ref_block(sd, f"decoder.blocks.{i}", y, DIMS.n_text_head, causal, audio)
    y = F.layer_norm(y, (d,), sd["decoder.ln.weight"], sd["decoder.ln.bias"])
    return y @ sd["decoder.token_embedding.weight"].t()


def test_forward_matches_functional_reference():
    model = make_model()
    mel = torch.randn(2, 80, 40, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 7))
    with torch.no_grad():
        got = model(mel, tokens)
        want = ref_forward(model, mel, tokens)
    assert got.dtype == torch.float32  # logits always float32
    assert got.shape == (2, 7, DIMS.n_vocab)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_forward_with_audio_stride_four_matches_functional_reference():
    """audio_stride 4: both stem convolutions have stride 2 (40 ms encoder positions)."""
    model = make_model(ModelOptions(audio_stride=4))
    mel = torch.randn(2, 80, 43, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 7))
    with torch.no_grad():
        got = model(mel, tokens)
        want = ref_forward(model, mel, tokens, first_stride=2)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def conv_output_length(n, stride, kernel=3, padding=1):
    """torch.nn.Conv1d's documented output length."""
    return (n + 2 * padding - kernel) // stride + 1


@pytest.mark.parametrize("audio_stride,first_stride", [(2, 1), (4, 2)])
def test_encoder_output_length_follows_the_stem(audio_stride, first_stride):
    model = make_model(ModelOptions(audio_stride=audio_stride))
    assert model.window_frames == audio_stride * DIMS.n_audio_ctx
    for frames in range(5, 14):
        features, mask = model.embed_audio(torch.randn(1, 80, frames, dtype=torch.float64),
                                           torch.tensor([frames]))
        want = conv_output_length(conv_output_length(frames, first_stride), 2)
        assert features.shape[1] == want == int(mask.sum()) == int(model.encoder_lengths(torch.tensor(frames)))


def test_audio_stride_must_be_one_the_stem_can_make():
    with pytest.raises(ValueError, match="audio_stride must be one of"):
        ModelOptions(audio_stride=3)
    with pytest.raises(ValueError, match="fixed_audio_window"):
        ModelOptions(audio_stride=4, fixed_audio_window=True)


def test_kv_cache_incremental_equals_full_forward():
    model = make_model()
    mel = torch.randn(2, 80, 30, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 9))
    with torch.no_grad():
        audio, mask = model.embed_audio(mel)
        full = model.logits(tokens, audio, mask)
        cache = model.new_cache()
        # a 3-token prompt, then one token at a time
        steps = [model.logits(tokens[:, :3], audio, mask, cache)]
        for i in range(3, 9):
            steps.append(model.logits(tokens[:, i:i + 1], audio, mask, cache))
    assert cache.offset == 9
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    # cross-attention keys were computed once and kept
    assert cache.layers[0].cross_key.shape == (2, DIMS.n_text_head, 15, DIMS.n_text_state // DIMS.n_text_head)


def test_cache_reorder_follows_beams():
    model = make_model()
    mel = torch.randn(3, 80, 20, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (3, 5))
    with torch.no_grad():
        audio, _ = model.embed_audio(mel)
        cache = model.new_cache()
        model.logits(tokens[:, :4], audio, None, cache)
        order = torch.tensor([2, 0, 0])
        cache.reorder(order)
        got = model.logits(tokens[order, 4:], audio[order], None, cache)
        want = model.logits(tokens[order], audio[order])[:, -1:]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("audio_stride", [2, 4])
def test_padded_batch_equals_one_by_one(audio_stride):
    model = make_model(ModelOptions(audio_stride=audio_stride))
    lengths = [37, 20, 8, 7]
    mels = [torch.randn(80, n, dtype=torch.float64) for n in lengths]
    batch = torch.zeros(len(lengths), 80, max(lengths), dtype=torch.float64)
    for i, m in enumerate(mels):
        batch[i, :, :m.shape[1]] = m
    tokens = torch.randint(0, DIMS.n_vocab, (len(lengths), 6))
    with torch.no_grad():
        audio, mask = model.embed_audio(batch, torch.tensor(lengths))
        logits = model.logits(tokens, audio, mask)
        for i, m in enumerate(mels):
            alone, alone_mask = model.embed_audio(m[None])
            assert alone_mask is None
            n = alone.shape[1]
            assert int(mask[i].sum()) == n
            torch.testing.assert_close(audio[i, :n], alone[0], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(logits[i], model.logits(tokens[i:i + 1], alone)[0], atol=1e-6, rtol=1e-6)


def test_fixed_window_option_requires_full_windows():
    options = ModelOptions(fixed_audio_window=True)
    model = make_model(options)
    with pytest.raises(ValueError, match="fixed windows of 128 frames"):
        model.embed_audio(torch.randn(1, 80, 100, dtype=torch.float64))
    features, mask = model.embed_audio(torch.randn(1, 80, 128, dtype=torch.float64), torch.tensor([50]))
    assert features.shape[1] == 64 and mask is None  # Whisper attends to its padding


def test_positions_past_context_raise_clear_error():
    model = make_model()
    audio, _ = model.embed_audio(torch.randn(1, 80, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="maximum context of 16"):
        model.logits(torch.zeros(1, 17, dtype=torch.long), audio)
    with pytest.raises(ValueError, match="maximum context of 64"):
        model.embed_audio(torch.randn(1, 80, 130, dtype=torch.float64))


def test_save_load_round_trip(tmp_path):
    options = ModelOptions(audio=StackOptions(positions="sinusoidal"), text=StackOptions(positions="learned"),
                           audio_stride=4)
    model = make_model(options, dtype=torch.float32)
    save_checkpoint(model, tmp_path / "ckpt", tokenizer={"kind": "test", "n_vocab": 50})
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["dims"]["n_text_ctx"] == 16 and config["tokenizer"]["kind"] == "test"
    loaded, loaded_config = load_checkpoint(tmp_path / "ckpt")
    assert loaded.dims == model.dims and loaded.options == model.options
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    mel = torch.randn(1, 80, 24)
    tokens = torch.randint(0, 50, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(mel, tokens), loaded(mel, tokens), atol=0, rtol=0)
    # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]


def test_load_rejects_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        load_checkpoint(tmp_path / "missing")
    model = make_model(dtype=torch.float32)
    save_checkpoint(model, tmp_path / "c")
    # a pickle where the safetensors file should be is refused without being unpickled
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    (tmp_path / "c" / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_checkpoint(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable config"):
        load_checkpoint(tmp_path / "c")


def test_grouped_cross_attention_equals_repeated_audio():
    """Beam search keeps one copy of each utterance's cross keys for its group of hypotheses."""
    model = make_model()
    mel = torch.randn(2, 80, 30, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (6, 5))  # 2 utterances x 3 hypotheses
    with torch.no_grad():
        audio, _ = model.embed_audio(mel, torch.tensor([30, 17]))
        mask = torch.arange(audio.shape[1])[None, :] < torch.tensor([15, 9])[:, None]
        want = model.logits(tokens, audio.repeat_interleave(3, 0), mask.repeat_interleave(3, 0))
        cache = model.new_cache(group_size=3)
        got = torch.cat([model.logits(tokens[:, :2], audio, mask, cache),
                         model.logits(tokens[:, 2:], audio, mask, cache)], dim=1)
    assert cache.layers[0].cross_key.shape[0] == 2
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_encoding_in_slices_equals_encoding_each_window_alone():
    """Transcription encodes a batch of windows ENCODER_SLICE at a time (faster per window and
    less memory than all at once); each window's features and mask must be what encoding that
    window alone gives, padded like the batch, for windows of different lengths."""
    from asr.inference.transcribe import ENCODER_SLICE, encode_in_slices

    model = make_model()
    frames = 2 * DIMS.n_audio_ctx
    n_frames = torch.tensor([frames, 40, frames - 3, 17, 90])
    assert len(n_frames) > 2 * ENCODER_SLICE  # more than two slices, the last one short
    mels = torch.randn(len(n_frames), DIMS.n_mels, frames, dtype=torch.float64)
    for i, n in enumerate(n_frames):
        mels[i, :, n:] = 0
    features, mask = encode_in_slices(model, mels, n_frames)
    with torch.no_grad():
        for i, n in enumerate(n_frames):
            alone, alone_mask = model.embed_audio(mels[i:i + 1, :, :n], n_frames[i:i + 1])
            kept = alone_mask[0].sum()
            assert mask[i].sum() == kept and mask[i, :kept].all()
            torch.testing.assert_close(features[i, :kept], alone[0, :kept], rtol=1e-9, atol=1e-9)
