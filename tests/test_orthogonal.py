"""The rotary basis R as a plain module computes what torch's orthogonal parametrisation computed
from the same tensors, and checkpoints written under the parametrisation's names still load."""
from __future__ import annotations

import functools

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrizations

from asr.config import ModelDimensions
from asr.inference.compute import quantize_int8
from asr.nn.model import ASRModel
from asr.nn.orthogonal import LEGACY_SUFFIXES, OrthogonalMatrix, current_name
from asr.nn.presets import seed_options
from asr.nn.rotary import RotaryEmbeddingWithRotation
from asr.store.checkpoint import load_checkpoint, save_checkpoint
from asr.store.layout import WEIGHTS_FILE

SIZE = 8


def torch_parametrised(seed: int) -> nn.Linear:
    """The layout R had before: an identity nn.Linear weight under torch's matrix_exp
    orthogonal parametrisation, then moved off the identity as training would."""
    linear = nn.Linear(SIZE, SIZE, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(SIZE))
    parametrizations.orthogonal(linear, "weight", orthogonal_map="matrix_exp")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        original = linear.parametrizations.weight.original
        original.add_(0.4 * torch.randn(original.shape, generator=generator))
        # a base other than I, as an assignment of a new orthogonal weight leaves
        linear.parametrizations.weight[0].base.copy_(torch.linalg.qr(torch.randn(SIZE, SIZE, generator=generator))[0])
    return linear


def test_equals_torchs_orthogonal_parametrisation_on_the_same_tensors():
    for seed in range(3):
        reference = torch_parametrised(seed)
        ours = OrthogonalMatrix(SIZE)
        state = {current_name("x.basis." + name).removeprefix("x.basis."): tensor
                 for name, tensor in reference.state_dict().items()}
        ours.load_state_dict(state, strict=True)
        torch.testing.assert_close(ours(), reference.weight, rtol=0, atol=1e-6)


def test_identity_at_init_orthogonal_after_training_and_reset():
    module = OrthogonalMatrix(SIZE)
    assert torch.equal(module(), torch.eye(SIZE))
    optimiser = torch.optim.AdamW(module.parameters(), lr=0.05)
    target = torch.randn(SIZE, SIZE)
    for _ in range(50):
        optimiser.zero_grad()
        ((module() - target) ** 2).sum().backward()
        optimiser.step()
    r = module().detach().double()
    assert (r - torch.eye(SIZE, dtype=torch.float64)).abs().max() > 0.1
    torch.testing.assert_close(r @ r.T, torch.eye(SIZE, dtype=torch.float64), rtol=0, atol=1e-5)
    module.reset_to(torch.eye(SIZE))
    assert torch.equal(module(), torch.eye(SIZE))


def legacy_name(name: str) -> str:
    """The name R's tensors had under torch's parametrisation (the rest unchanged)."""
    for old, new in LEGACY_SUFFIXES.items():
        if name.endswith(new):
            return name[: -len(new)] + old
    return name


def legacy_named(weights_file) -> int:
    """Rewrite a checkpoint's weights file with R's tensors under the parametrisation's names;
    return how many were renamed."""
    state = {legacy_name(name): tensor for name, tensor in load_file(weights_file).items()}
    save_file(state, weights_file)
    return sum(name.endswith(tuple(LEGACY_SUFFIXES)) for name in state)


def test_a_checkpoint_with_the_parametrisations_names_loads(tmp_path):
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=100, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=120, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1)
    model = ASRModel(dims, seed_options()).eval()
    rotaries = [m for m in model.modules() if isinstance(m, RotaryEmbeddingWithRotation)]
    with torch.no_grad():
        for rotary in rotaries:
            rotary.basis.original.normal_(std=0.3)
    save_checkpoint(model, tmp_path / "ckpt")
    assert legacy_named(tmp_path / "ckpt" / WEIGHTS_FILE) == 2 * len(rotaries) > 0
    expected = [r.basis().detach() for r in rotaries]

    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    converted, _ = load_checkpoint(tmp_path / "ckpt", convert=functools.partial(quantize_int8, cache=None))
    for model in (loaded, converted):
        got = [m.basis().detach() for m in model.modules() if isinstance(m, RotaryEmbeddingWithRotation)]
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_running_average_saved_under_the_parametrisations_names_resumes():
    from asr.train.average import AVERAGE_PREFIX, RunningAverage

    torch.manual_seed(1)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=100, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=120, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1)
    model = ASRModel(dims, seed_options())
    average = RunningAverage(model)
    with torch.no_grad():
        for rotary in (m for m in model.modules() if isinstance(m, RotaryEmbeddingWithRotation)):
            rotary.basis.original.normal_(std=0.3)
    average.update(model)
    saved = {legacy_name(name): tensor.clone() for name, tensor in average.state_tensors().items()}
    assert any(name.endswith(".parametrizations.weight.original") for name in saved)

    resumed = RunningAverage(ASRModel(dims, seed_options()))
    resumed.load_state_tensors(saved, count=1)
    for name, tensor in average.tensors.items():
        assert torch.equal(resumed.tensors[name], tensor), AVERAGE_PREFIX + name
