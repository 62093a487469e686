"""StepLinear (asr/nn/step_linear.py): a decoding step's linear layer split across threads must
compute what a plain linear layer computes, checked against a float64 product."""
import pytest
import torch
from torch import nn

from asr.nn.step_linear import MIN_SLICE, SPLIT_MAX_ROWS, StepLinear, slices


def transposed_step_linear(linear: nn.Linear) -> StepLinear:
    weight = linear.weight.detach().t().contiguous().t()  # [in, out] storage, [out, in] view
    return StepLinear.from_linear(linear, weight)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("in_features,out_features", [(384, 1152), (1536, 384), (384, 384), (200, 130)])
@pytest.mark.parametrize("rows", [1, 3, SPLIT_MAX_ROWS + 5])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_step_linear_matches_a_float64_product(threads, in_features, out_features, rows, n_threads):
    threads(n_threads)
    generator = torch.Generator().manual_seed(rows * 7 + n_threads)
    linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(out_features, in_features, generator=generator) * 0.05)
        linear.bias.copy_(torch.randn(out_features, generator=generator))
    step = transposed_step_linear(linear)
    x = torch.randn(2, rows, in_features, generator=generator)[:1]  # [1, rows, in], a leading batch dim
    want = x.double() @ linear.weight.double().t() + linear.bias.double()
    with torch.inference_mode():
        got = step(x)
    assert got.shape == (1, rows, out_features) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_step_linear_without_bias_and_with_gradients_is_a_plain_linear(threads):
    threads(2)
    linear = nn.Linear(384, 768, bias=False)
    step = transposed_step_linear(linear)
    x = torch.randn(1, 384)
    with torch.inference_mode():
        torch.testing.assert_close(step(x), x @ linear.weight.t(), rtol=1e-5, atol=1e-5)
    x.requires_grad_(True)
    step.weight.requires_grad_(True)
    step(x).sum().backward()  # the plain path, which has gradients
    torch.testing.assert_close(x.grad[0], linear.weight.detach().sum(0), rtol=1e-5, atol=1e-5)


def test_slices_divide_evenly_into_parts_of_at_least_the_minimum():
    assert slices(384, 1) == 1
    assert slices(384, 2) == 2
    assert slices(384, 4) == 4
    assert slices(384, 8) == 6  # 384 / 64: no more slices than MIN_SLICE allows
    assert slices(130, 2) == 2 and slices(130, 3) == 2  # 130 = 2 x 65; 3 does not divide it
    assert slices(127, 4) == 1  # prime: no even split
    for size in (384, 1152, 1536, 1000):
        for n in range(1, 20):
            parts = slices(size, n)
            assert 1 <= parts <= max(n, 1) and size % parts == 0
            assert parts == 1 or size // parts >= MIN_SLICE


def test_step_linear_follows_its_parameters_changed_in_place(threads):
    """The per-thread slices are kept between calls: they must be views of the parameters, so that
    load_state_dict (which copies in place) changes what the layer computes."""
    threads(2)
    linear = nn.Linear(384, 384)
    step = transposed_step_linear(linear)
    generator = torch.Generator().manual_seed(5)
    for rows in (1, 5):
        x = torch.randn(rows, 384, generator=generator)
        with torch.inference_mode():
            step(x)  # the slices for this shape are made here
        state = {"weight": torch.randn(384, 384, generator=generator) * 0.05,
                 "bias": torch.randn(384, generator=generator)}
        step.load_state_dict(state)
        want = x.double() @ state["weight"].double().t() + state["bias"].double()
        with torch.inference_mode():
            torch.testing.assert_close(step(x).double(), want, rtol=1e-5, atol=1e-5)
