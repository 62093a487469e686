"""Where the seed extras start, with and without function_preserving_init (asr/nn/extras_init.py):
each extra's starting value checked against the table in that module, the two settings differing
only in the rotary scale, and hybrid layers that could not start as plain attention refused."""
from dataclasses import replace

import pytest
import torch

from asr.config import ModelDimensions, ModelOptions, StackOptions
from asr.nn.dynconv import DynamicConvAttention
from asr.nn.hybrid_attention import HybridAttention
from asr.nn.model import ASRModel
from asr.nn.presets import vanilla_options
from asr.nn.relative_bias import RelativePositionBias
from asr.nn.rotary import RotaryEmbeddingWithRotation
from asr.convert.warm_start import load_vanilla_weights

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=32, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                       n_vocab=50, n_text_ctx=16, n_text_state=32, n_text_head=4, n_text_layer=2)


def every_extra(function_preserving: bool) -> ModelOptions:
    """Whisper's positions with every extra in both stacks, hybrid windows over the whole context."""
    audio = StackOptions(positions="sinusoidal", rotary=True, relative_bias=True, attention=["hybrid", "dynconv"],
                         window=DIMS.n_audio_ctx - 1)
    text = StackOptions(positions="learned", rotary=True, relative_bias=True, attention=["dynconv", "hybrid"],
                        window=DIMS.n_text_ctx - 1)
    return ModelOptions(audio=audio, text=text, function_preserving_init=function_preserving)


def build(function_preserving: bool, seed: int = 0) -> ASRModel:
    torch.manual_seed(seed)
    return ASRModel(DIMS, every_extra(function_preserving)).double().eval()


def of_type(model, cls):
    found = [m for m in model.modules() if isinstance(m, cls)]
    assert found, cls
    return found


@pytest.mark.parametrize("function_preserving,rotary_scale", [(True, 0.0), (False, 1.0)])
def test_each_extra_starts_where_the_policy_says(function_preserving, rotary_scale):
    model = build(function_preserving)
    for rotary in of_type(model, RotaryEmbeddingWithRotation):
        assert rotary.scale.item() == rotary_scale
        assert torch.equal(rotary.thetas.detach(), torch.zeros_like(rotary.thetas))
        torch.testing.assert_close(rotary.basis().detach(), torch.eye(rotary.head_dim, dtype=torch.float64),
                                   atol=0, rtol=0)
    for bias in of_type(model, RelativePositionBias):
        assert torch.count_nonzero(bias.embedding.weight) == 0
    for layer in of_type(model, HybridAttention):
        assert layer.gate_logits.tolist() == [0.0, 0.0]
    for layer in of_type(model, DynamicConvAttention):
        assert torch.count_nonzero(layer.conv_out.weight) == 0 and torch.count_nonzero(layer.conv_out.bias) == 0
        # the rest of the branch keeps torch's random init: it is not an extra's output
        assert layer.gate.weight.abs().max() > 0 and layer.kernel.weight.abs().max() > 0


def test_the_two_settings_differ_only_in_the_rotary_scale():
    preserving, scratch = build(True).state_dict(), build(False).state_dict()
    assert preserving.keys() == scratch.keys()
    different = {name for name in preserving if not torch.equal(preserving[name], scratch[name])}
    scales = {name for name in preserving if name.endswith(".rotary.scale")}
    assert different == scales and len(scales) == DIMS.n_audio_layer + DIMS.n_text_layer


def test_with_the_option_vanilla_weights_give_the_vanilla_outputs_and_without_they_do_not():
    torch.manual_seed(1)
    vanilla = ASRModel(DIMS, vanilla_options()).double().eval()
    with torch.no_grad():
        for p in vanilla.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    mel = torch.randn(2, 80, 2 * DIMS.n_audio_ctx, dtype=torch.float64)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 7))
    with torch.no_grad():
        want = vanilla(mel, tokens)
        for function_preserving in (True, False):
            model = build(function_preserving, seed=2)
            load_vanilla_weights(model, vanilla.state_dict())
            got = model(mel, tokens)
            if function_preserving:  # the rotary layers compute in float32 (see rotary.py)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            else:  # from scratch the position rotation is on: not Whisper's function any more
                assert (got - want).abs().max() > 1e-3


@pytest.mark.parametrize("stack,change", [
    ("audio", dict(window=8)),
    ("audio", dict(global_stride=2)),
    ("text", dict(window=DIMS.n_text_ctx - 2)),
])
def test_hybrid_layers_that_are_not_plain_attention_are_refused_with_the_option(stack, change):
    options = every_extra(True)
    options = replace(options, **{stack: replace(getattr(options, stack), **change)})
    name = "encoder" if stack == "audio" else "decoder"
    with pytest.raises(ValueError, match=rf"function_preserving_init: {name} layer \d is hybrid attention"):
        ASRModel(DIMS, options)
    # from scratch the same layers are fine
    ASRModel(DIMS, replace(options, function_preserving_init=False))


def test_all_global_or_all_local_heads_need_only_their_own_condition():
    # all heads global: the window does not matter; all heads local: the stride does not matter
    all_global = StackOptions(attention="hybrid", window=2, local_heads=0)
    all_local = StackOptions(attention="hybrid", window=DIMS.n_audio_ctx - 1, local_heads=DIMS.n_audio_head,
                             global_stride=4)
    for audio in (all_global, all_local):
        ASRModel(DIMS, ModelOptions(audio=audio, function_preserving_init=True))


def test_reset_extras_to_identity_returns_to_the_function_preserving_start():
    model = build(False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.reset_extras_to_identity()
    reference = build(True).state_dict()
    for name, tensor in model.state_dict().items():
        extra = any(part in name for part in ("rotary.", "relative_bias.", "gate_logits", "conv_out."))
        if extra:
            torch.testing.assert_close(tensor, reference[name], atol=1e-12, rtol=0, msg=name)
