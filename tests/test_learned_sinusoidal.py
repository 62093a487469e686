"""Sinusoid table and learned sinusoidal embeddings, against the formula written out here."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch.utils.checkpoint import checkpoint

from asr.nn.learned_sinusoidal import LearnedSinusoidalEmbeddings, sinusoids

N_CTX, N_STATE = 50, 16


def formula(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Entry by entry: channel c < C/2 is sin(t * timescale_c^-1), channel C/2 + c is the cos,
    with timescales max_timescale^(c / (C/2 - 1))."""
    half = channels // 2
    table = np.zeros((length, channels))
    for t in range(length):
        for c in range(half):
            inv_timescale = max_timescale ** (-c / (half - 1))
            table[t, c] = math.sin(t * inv_timescale)
            table[t, half + c] = math.cos(t * inv_timescale)
    return table


def test_sinusoids_match_formula():
    for length, channels, timescale in [(N_CTX, N_STATE, 10000.0), (1500, 8, 10000.0),
                                        (10, 6, 100.0)]:
        table = sinusoids(length, channels, timescale)
        assert table.dtype == torch.float32 and table.shape == (length, channels)
        np.testing.assert_allclose(table.numpy(), formula(length, channels, timescale),
                                   rtol=0, atol=1e-6)


def test_table_and_output_at_init_are_the_sinusoids():
    module = LearnedSinusoidalEmbeddings(N_CTX, N_STATE)
    expected = formula(N_CTX, N_STATE)
    np.testing.assert_allclose(module.table.detach().numpy(), expected, rtol=0, atol=1e-6)
    assert module.gain.item() == pytest.approx(math.sqrt(N_STATE / 2))
    out = module(torch.arange(N_CTX))
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=1e-5)


def test_output_rows_have_norm_gain_and_any_index_shape():
    module = LearnedSinusoidalEmbeddings(N_CTX, N_STATE)
    with torch.no_grad():
        module.table.normal_()
        module.gain.fill_(2.5)
    positions = torch.tensor([[0, 3, 49], [7, 7, 1]])
    out = module(positions)
    assert out.shape == (2, 3, N_STATE)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((2, 3), 2.5))
    # direction of each row = the table row
    rows = module.table.detach()[positions]
    torch.testing.assert_close(out, 2.5 * rows / rows.norm(dim=-1, keepdim=True))


def gradients(checkpointed: bool):
    torch.manual_seed(0)
    module = LearnedSinusoidalEmbeddings(N_CTX, N_STATE, checkpoint=checkpointed)
    positions = torch.tensor([[1, 2, 3], [4, 4, 40]])
    target = torch.randn(2, 3, N_STATE)
    (module(positions) * target).sum().backward()
    return module.table.grad, module.gain.grad


def test_gradients_with_and_without_checkpointing_agree():
    plain_table, plain_gain = gradients(False)
    checkpointed_table, checkpointed_gain = gradients(True)
    for table_grad, gain_grad in [(plain_table, plain_gain),
                                  (checkpointed_table, checkpointed_gain)]:
        assert table_grad is not None and table_grad.abs().max() > 0
        assert gain_grad is not None and gain_grad.abs() > 0
    torch.testing.assert_close(checkpointed_table, plain_table, rtol=0, atol=0)
    torch.testing.assert_close(checkpointed_gain, plain_gain, rtol=0, atol=0)


def test_reentrant_checkpoint_would_starve_the_table():
    """Why the module uses use_reentrant=False: with an integer-only input the reentrant variant
    gives the table no gradient at all."""
    module = LearnedSinusoidalEmbeddings(N_CTX, N_STATE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = checkpoint(module._unit_rows, torch.tensor([1, 2]), use_reentrant=True)
    (rows * module.gain).sum().backward()
    assert module.table.grad is None


def test_positions_past_context_raise_clear_error():
    module = LearnedSinusoidalEmbeddings(N_CTX, N_STATE)
    with pytest.raises(ValueError, match=f"position {N_CTX} exceeds the maximum context of "
                                         f"{N_CTX} positions"):
        module(torch.tensor([0, N_CTX]))
    with pytest.raises(ValueError, match="negative"):
        module(torch.tensor([-1, 3]))
    with pytest.raises(TypeError):
        module(torch.tensor([0.0, 1.0]))
    module(torch.tensor([N_CTX - 1]))  # the last position is fine
