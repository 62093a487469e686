"""Rotary embedding with Givens rotations and an orthogonal matrix, checked against naive
references built here (dense matrices, explicit 2x2 rotations, float64)."""

import math

import numpy as np
import pytest
import torch

from asr.nn.rotary import RotaryEmbeddingWithRotation, RotaryFrequencies

HEAD_DIM = 8
BASE = 10000.0


def naive_inv_freq(base: float, head_dim: int) -> np.ndarray:
    return np.array([base ** (-2.0 * i / head_dim) for i in range(head_dim // 2)])


def naive_givens_matrix(thetas, pairs_i, pairs_j, head_dim) -> torch.Tensor:
    """Product of explicit h x h Givens matrices, row-vector convention (x' = x @ G):
    x_i' = cos x_i - sin x_j, x_j' = sin x_i + cos x_j."""
    total = torch.eye(head_dim, dtype=torch.float64)
    for theta, i, j in zip(thetas.tolist(), pairs_i.tolist(), pairs_j.tolist()):
        g = torch.eye(head_dim, dtype=torch.float64)
        g[i, i] = math.cos(theta)
        g[j, i] = -math.sin(theta)
        g[i, j] = math.sin(theta)
        g[j, j] = math.cos(theta)
        total = total @ g
    return total


def naive_basis(module: RotaryEmbeddingWithRotation) -> torch.Tensor:
    """Dense Q = (prod G) @ R in float64."""
    q = torch.eye(module.head_dim, dtype=torch.float64)
    if module.givens:
        q = naive_givens_matrix(module.thetas.detach(), module.givens_i, module.givens_j,
                                module.head_dim)
    if module.rotation:
        q = q @ module.basis().detach().double()
    return q


def naive_forward(module: RotaryEmbeddingWithRotation, x: torch.Tensor, positions, base=BASE):
    """x [..., T, h] -> (x @ Q), then plane (i, i + h/2) at position p turned by
    scale * p * inv_freq_i with an explicit 2x2 rotation matrix."""
    h = module.head_dim
    y = x.double() @ naive_basis(module)
    out = y.clone()
    inv_freq = naive_inv_freq(base, h)
    scale = module.scale.item()
    for t, p in enumerate(positions):
        for i in range(h // 2):
            angle = scale * p * inv_freq[i]
            rot = torch.tensor([[math.cos(angle), -math.sin(angle)],
                                [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
            pair = torch.stack([y[..., t, i], y[..., t, i + h // 2]], dim=-1)
            turned = pair @ rot.T
            out[..., t, i] = turned[..., 0]
            out[..., t, i + h // 2] = turned[..., 1]
    return out


def randomise(module: RotaryEmbeddingWithRotation, seed: int = 0, scale: float = 0.7):
    """Non-trivial thetas, R and scale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if module.givens:
            module.thetas.copy_(torch.randn(module.thetas.shape, generator=generator))
        if module.rotation:
            original = module.basis.original
            original.add_(0.5 * torch.randn(original.shape, generator=generator))
        module.scale.fill_(scale)
    return module


def test_identity_at_init():
    module = RotaryEmbeddingWithRotation(HEAD_DIM)
    assert torch.equal(module.thetas.detach(), torch.zeros(HEAD_DIM // 2))
    assert torch.equal(module.basis().detach(), torch.eye(HEAD_DIM))
    assert module.scale.item() == 1.0


def test_reset_to_identity_is_exact_identity():
    module = randomise(RotaryEmbeddingWithRotation(HEAD_DIM))
    module.reset_to_identity()
    assert torch.equal(module.basis().detach(), torch.eye(HEAD_DIM))
    assert module.scale.item() == 0.0
    angles = RotaryFrequencies(HEAD_DIM).angles(100, 6)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 3, 6, HEAD_DIM).to(dtype)
        assert torch.equal(module(x, angles), x)


def test_givens_pairing_is_disjoint_and_not_the_rotary_planes():
    module = RotaryEmbeddingWithRotation(HEAD_DIM)
    i, j = module.givens_i.tolist(), module.givens_j.tolist()
    assert module.givens_i.dtype == torch.long and not module.givens_i.is_floating_point()
    assert sorted(i + j) == list(range(HEAD_DIM))
    rotary_planes = {(k, k + HEAD_DIM // 2) for k in range(HEAD_DIM // 2)}
    assert not any((min(a, b), max(a, b)) in rotary_planes for a, b in zip(i, j))


def test_givens_matches_dense_product_of_2x2_rotations():
    module = randomise(RotaryEmbeddingWithRotation(HEAD_DIM, rotation=False))
    x = torch.randn(4, 5, HEAD_DIM)
    expected = x.double() @ naive_givens_matrix(module.thetas.detach(), module.givens_i,
                                                module.givens_j, HEAD_DIM)
    got = x @ module.basis_change()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("givens,rotation", [(True, True), (True, False), (False, True),
                                             (False, False)])
def test_forward_matches_naive_reference(givens, rotation):
    module = randomise(RotaryEmbeddingWithRotation(HEAD_DIM, givens=givens, rotation=rotation))
    assert hasattr(module, "thetas") == givens
    assert hasattr(module, "basis") == rotation
    offset, length = 37, 5
    x = torch.randn(2, 3, length, HEAD_DIM)
    angles = RotaryFrequencies(HEAD_DIM).angles(offset, length)
    expected = naive_forward(module, x, range(offset, offset + length))
    torch.testing.assert_close(module(x, angles).double(), expected, rtol=0, atol=1e-5)


def scores(module, q, k, angles):
    return module(q, angles) @ module(k, angles).transpose(-1, -2)


def test_scores_depend_only_on_relative_position():
    module = randomise(RotaryEmbeddingWithRotation(HEAD_DIM))
    frequencies = RotaryFrequencies(HEAD_DIM)
    q, k = torch.randn(2, 6, HEAD_DIM), torch.randn(2, 6, HEAD_DIM)
    near = scores(module, q, k, frequencies.angles(0, 6))
    far = scores(module, q, k, frequencies.angles(123, 6))
    torch.testing.assert_close(near, far, rtol=1e-4, atol=1e-4)
    # ... and the basis change does matter (it would cancel if applied after the rotation)
    plain = RotaryEmbeddingWithRotation(HEAD_DIM, givens=False, rotation=False)
    with torch.no_grad():
        plain.scale.fill_(module.scale.item())
    assert (near - scores(plain, q, k, frequencies.angles(0, 6))).abs().max() > 1e-2


def test_givens_alone_change_the_scores():
    """Guards the pairing: Givens rotations in the rotary planes would commute with the position
    rotation and cancel out of every score."""
    module = randomise(RotaryEmbeddingWithRotation(HEAD_DIM, rotation=False))
    plain = RotaryEmbeddingWithRotation(HEAD_DIM, givens=False, rotation=False)
    with torch.no_grad():
        plain.scale.fill_(module.scale.item())
    angles = RotaryFrequencies(HEAD_DIM).angles(0, 6)
    q, k = torch.randn(6, HEAD_DIM), torch.randn(6, HEAD_DIM)
    assert (scores(module, q, k, angles) - scores(plain, q, k, angles)).abs().max() > 1e-2


def test_scale_zero_is_basis_change_only():
    module = randomise(RotaryEmbeddingWithRotation(HEAD_DIM), scale=0.0)
    x = torch.randn(3, 7, HEAD_DIM)
    expected = x.double() @ naive_basis(module)
    for offset in (0, 1000):
        angles = RotaryFrequencies(HEAD_DIM).angles(offset, 7)
        torch.testing.assert_close(module(x, angles).double(), expected, rtol=0, atol=1e-5)


def test_gradients_reach_thetas_scale_and_rotation():
    module = RotaryEmbeddingWithRotation(HEAD_DIM)
    x = torch.randn(2, 6, HEAD_DIM)
    target = torch.randn(2, 6, HEAD_DIM)
    angles = RotaryFrequencies(HEAD_DIM).angles(3, 6)
    (module(x, angles) * target).sum().backward()
    for parameter in (module.thetas, module.scale, module.basis.original):
        assert parameter.grad is not None and parameter.grad.abs().max() > 0


def test_rotation_stays_orthogonal_under_adamw():
    torch.manual_seed(0)
    module = RotaryEmbeddingWithRotation(HEAD_DIM)
    optimiser = torch.optim.AdamW(module.parameters(), lr=1e-2)
    angles = RotaryFrequencies(HEAD_DIM).angles(0, 6)
    x = torch.randn(4, 6, HEAD_DIM)
    target = torch.randn(4, 6, HEAD_DIM)
    for _ in range(100):
        optimiser.zero_grad()
        torch.nn.functional.mse_loss(module(x, angles), target).backward()
        optimiser.step()
    r = module.basis().detach().double()
    assert (r - torch.eye(HEAD_DIM, dtype=torch.float64)).abs().max() > 1e-2  # it did train
    torch.testing.assert_close(r @ r.T, torch.eye(HEAD_DIM, dtype=torch.float64),
                               rtol=0, atol=1e-5)


def test_set_base_updates_buffers_in_place():
    frequencies = RotaryFrequencies(HEAD_DIM, base=BASE)
    np.testing.assert_allclose(frequencies.inv_freq.numpy(), naive_inv_freq(BASE, HEAD_DIM),
                               rtol=1e-7)
    inv_freq, base = frequencies.inv_freq, frequencies.base
    pointer = inv_freq.data_ptr()
    frequencies.set_base(500000.0)
    assert frequencies.inv_freq is inv_freq and frequencies.inv_freq.data_ptr() == pointer
    assert frequencies.base is base and base.dtype == torch.float64
    assert base.item() == 500000.0
    assert inv_freq.dtype == torch.float32
    np.testing.assert_allclose(inv_freq.numpy(), naive_inv_freq(500000.0, HEAD_DIM), rtol=1e-7)
    assert dict(frequencies.named_buffers())["inv_freq"] is inv_freq
    # the new base reaches the angles
    np.testing.assert_allclose(frequencies.angles(3, 1)[0].numpy(),
                               3 * naive_inv_freq(500000.0, HEAD_DIM), rtol=1e-6)


def test_angles_are_float32_and_exact_under_autocast():
    frequencies = RotaryFrequencies(HEAD_DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        angles = frequencies.angles(1490, 4)
    assert angles.dtype == torch.float32
    assert angles[0, 0].item() == 1490.0  # inv_freq[0] = 1; bf16 would give 1488
    expected = np.arange(1490, 1494)[:, None] * naive_inv_freq(BASE, HEAD_DIM)[None, :]
    np.testing.assert_allclose(angles.numpy(), expected, rtol=1e-6)


def test_forward_under_autocast_keeps_input_dtype_and_precision():
    module = randomise(RotaryEmbeddingWithRotation(HEAD_DIM))
    frequencies = RotaryFrequencies(HEAD_DIM)
    x = torch.randn(2, 5, HEAD_DIM).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x, frequencies.angles(1490, 5))
    assert out.dtype == torch.bfloat16
    expected = naive_forward(module, x.float(), range(1490, 1495))
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
    # a float32 input keeps float32 precision: autocast must not push the basis change or the
    # rotation into bfloat16
    x = torch.randn(2, 5, HEAD_DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x, frequencies.angles(1490, 5))
    assert out.dtype == torch.float32
    expected = naive_forward(module, x, range(1490, 1495))
    # float32 angles near 1000 rad carry ~1e-4 absolute error; bfloat16 would be ~1e-2 off
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-3)


def test_angles_offset_matches_rows_of_longer_table():
    frequencies = RotaryFrequencies(HEAD_DIM)
    assert frequencies.angles(0, 8).shape == (8, HEAD_DIM // 2)
    torch.testing.assert_close(frequencies.angles(5, 3), frequencies.angles(0, 8)[5:8],
                               rtol=0, atol=0)


def test_odd_head_dim_is_rejected():
    with pytest.raises(ValueError):
        RotaryFrequencies(7)
    with pytest.raises(ValueError):
        RotaryEmbeddingWithRotation(7)
