"""The seed components inside the whole model: switchable per stack, cache-exact, padding-exact,
function-preserving from vanilla weights, and one dynamic rotary base that survives save/load."""
from dataclasses import replace

import pytest
import torch

from asr.store.checkpoint import load_checkpoint, save_checkpoint
from asr.config import ModelDimensions, ModelOptions, StackOptions
from asr.nn.model import ASRModel
from asr.nn.presets import extras_on_whisper, preset, seed_options, vanilla_options
from asr.nn.rotary import RotaryEmbeddingWithRotation
from asr.convert.warm_start import load_vanilla_weights

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=64, n_audio_state=32, n_audio_head=4, n_audio_layer=3,
                       n_vocab=50, n_text_ctx=16, n_text_state=32, n_text_head=4, n_text_layer=3)


def small_seed_options() -> ModelOptions:
    options = seed_options()
    audio = replace(options.audio, window=3, kernel_width=5, attention=["hybrid", "dynconv", "mha"])
    text = replace(options.text, window=2, kernel_width=4, attention=["dynconv", "hybrid", "mha"])
    return replace(options, audio=audio, text=text)


def perturbed(model: ASRModel, seed: int = 1) -> ASRModel:
    """Noise on every parameter so that zero-initialised extras (bias tables, branch outputs,
    rotary angles) actually do something."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def seed_model(dtype=torch.float64) -> ASRModel:
    torch.manual_seed(0)
    return perturbed(ASRModel(DIMS, small_seed_options()).to(dtype).eval())


def test_options_switch_each_component_per_stack():
    model = ASRModel(DIMS, small_seed_options())
    enc, dec = model.encoder, model.decoder
    assert [type(b.attn).__name__ for b in enc.blocks] == ["HybridAttention", "DynamicConvAttention",
                                                          "MultiHeadAttention"]
    assert [type(b.attn).__name__ for b in dec.blocks] == ["DynamicConvAttention", "HybridAttention",
                                                          "MultiHeadAttention"]
    assert enc.positions.relative_bias is not None and dec.positions.relative_bias is not None
    assert sum(isinstance(m, RotaryEmbeddingWithRotation) for m in model.modules()) == 6
    vanilla = ASRModel(DIMS, vanilla_options())
    assert not any(isinstance(m, RotaryEmbeddingWithRotation) for m in vanilla.modules())
    assert vanilla.encoder.positions.relative_bias is None
    no_givens = ASRModel(DIMS, ModelOptions(audio=StackOptions(rotary=True, rotary_givens=False)))
    rotary = no_givens.encoder.blocks[0].attn.rotary
    assert not hasattr(rotary, "thetas") and hasattr(rotary, "basis")
    with pytest.raises(ValueError, match="unknown attention kind"):
        ASRModel(DIMS, ModelOptions(audio=StackOptions(attention="sparse")))


def test_seed_model_cache_equals_full_forward():
    model = seed_model()
    mel = torch.randn(2, 80, 30, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 10))
    with torch.no_grad():
        audio, mask = model.embed_audio(mel)
        full = model.logits(tokens, audio, mask)
        cache = model.new_cache()
        steps = [model.logits(tokens[:, :3], audio, mask, cache)]
        steps += [model.logits(tokens[:, i:i + 1], audio, mask, cache) for i in range(3, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_seed_model_padded_batch_equals_one_by_one():
    model = seed_model()
    lengths = [41, 23, 9]
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


def test_function_preserving_init_reproduces_vanilla_model():
    torch.manual_seed(0)
    vanilla = perturbed(ASRModel(DIMS, vanilla_options()).double().eval())
    options = extras_on_whisper(vanilla_options())
    # hybrid local heads equal global heads while their window covers the whole context
    options = replace(options, audio=replace(options.audio, window=DIMS.n_audio_ctx))
    extended = ASRModel(DIMS, options).double().eval()
    extras = load_vanilla_weights(extended, vanilla.state_dict())
    # the extras are really there (and would change outputs if they were not at identity)
    assert any("rotary" in k for k in extras) and any("relative_bias" in k for k in extras)
    assert any("gate" in k for k in extras)
    mel = torch.randn(2, 80, 40, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 8))
    with torch.no_grad():
        want = vanilla(mel, tokens, torch.tensor([40, 31]))
        got = extended(mel, tokens, torch.tensor([40, 31]))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # and the test can fail: opening one extra changes the outputs
    with torch.no_grad():
        extended.encoder.blocks[0].attn.rotary.scale.fill_(1.0)
        moved = extended(mel, tokens, torch.tensor([40, 31]))
    assert (moved - want).abs().max() > 1e-3


def test_set_base_changes_every_rotary_layer_and_survives_save_load(tmp_path):
    torch.manual_seed(0)
    model = ASRModel(DIMS, small_seed_options())
    frequencies = list(model.rotary_frequencies())
    assert len(frequencies) == 2
    buffers = [f.inv_freq for f in frequencies]
    model.set_rotary_base(25000.0)
    head_dim = DIMS.n_audio_state // DIMS.n_audio_head
    expected = torch.tensor([25000.0 ** (-2 * i / head_dim) for i in range(head_dim // 2)])
    for f, buf in zip(model.rotary_frequencies(), buffers):
        assert f.inv_freq is buf  # updated in place, not replaced
        torch.testing.assert_close(f.inv_freq, expected)
    # every rotary layer sees it: angles at position 3 use the new frequencies
    for stack in (model.encoder, model.decoder):
        angles = stack.positions.attention_inputs(5, 0, None).rope_angles
        torch.testing.assert_close(angles[3], 3 * expected)
    save_checkpoint(model, tmp_path / "c")
    loaded, config = load_checkpoint(tmp_path / "c")
    assert config["options"]["rotary_base"] == 25000.0 and loaded.rotary_base == 25000.0
    for f in loaded.rotary_frequencies():
        torch.testing.assert_close(f.inv_freq, expected)
        assert float(f.base) == 25000.0


def test_presets_build():
    for name in ("whisper-tiny", "seed-tiny"):
        dims, options = preset(name, n_vocab=100)
        model = ASRModel(dims, options)
        assert model.num_parameters() > 1e6
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
