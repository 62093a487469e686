"""The per-forward mask cache (AttentionInputs.shared): keyed by the builder and its own
arguments, so requests that differ in any one argument get different (and correct) masks,
identical requests share one object, and the inputs a builder reads cannot change under it."""
import dataclasses
import math

import pytest
import torch

import asr.nn.hybrid_attention as hybrid
from asr.nn.attention import AttentionInputs, attention_mask
from asr.nn.relative_bias import RelativeBias

N_HEAD = 4
N_QUERY, N_KEY, OFFSET = 6, 12, 3  # queries at positions 3..8, keys at 0..11
LENGTHS = [12, 7]  # the second row has 5 padded keys


def make_inputs(causal=False, offset=OFFSET, seed=0):
    torch.manual_seed(seed)
    values = torch.randn(N_QUERY + N_KEY - 1, N_HEAD)
    key_mask = torch.arange(N_KEY)[None, :] < torch.tensor(LENGTHS)[:, None]
    return AttentionInputs(key_mask=key_mask, causal=causal, offset=offset,
                           bias=RelativeBias(values, N_QUERY, N_KEY, offset))


def naive_bias(inputs, head, query_pos, key_pos):
    index = key_pos - query_pos - inputs.bias.lowest
    inside = 0 <= index < inputs.bias.values.shape[0]
    return inputs.bias.values[index, head].item() if inside else 0.0


def naive_slice_mask(inputs, n_query, n_key, heads, window, dtype):
    """The local heads' mask over the keys the queries can reach, one entry at a time."""
    lo, hi = max(inputs.offset - window, 0), min(inputs.offset + n_query + window, n_key)
    batch = inputs.key_mask.shape[0]
    out = torch.full((batch, len(heads), n_query, hi - lo), -math.inf, dtype=torch.float64)
    for b in range(batch):
        for i in range(n_query):
            p = inputs.offset + i
            allowed = [abs(j - p) <= window and (j <= p or not inputs.causal) and bool(inputs.key_mask[b, j])
                       for j in range(lo, hi)]
            if not any(allowed):  # a padded query whose window is all padding sees itself
                allowed = [j == p for j in range(lo, hi)]
            for h_index, h in enumerate(heads):
                for column, j in enumerate(range(lo, hi)):
                    if allowed[column]:
                        out[b, h_index, i, column] = naive_bias(inputs, h, p, j)
    return out.to(dtype)


BASE = dict(n_query=N_QUERY, n_key=N_KEY, heads=range(0, 2), window=2, dtype=torch.float32)
# one change of each argument of the builder
CHANGES = [("n_query", 5), ("n_key", 10), ("heads", range(1, 3)), ("window", 3), ("dtype", torch.float64)]


def request(inputs, n_query, n_key, heads, window, dtype):
    return inputs.shared(hybrid._local_slice_mask, n_query, n_key, heads, window, dtype, torch.device("cpu"))


@pytest.mark.parametrize("name,value", CHANGES, ids=[name for name, _ in CHANGES])
def test_requests_differing_in_one_argument_get_their_own_correct_mask(name, value):
    inputs = make_inputs()
    changed = dict(BASE, **{name: value})
    base_mask = request(inputs, **BASE)
    other = request(inputs, **changed)
    assert other is not base_mask
    for args, mask in ((BASE, base_mask), (changed, other)):
        assert mask.dtype == args["dtype"]
        torch.testing.assert_close(mask, naive_slice_mask(inputs, **args), atol=1e-6, rtol=0)
    # the two masks really differ (the change matters), and asking again returns the cached ones
    want_base, want_other = naive_slice_mask(inputs, **BASE), naive_slice_mask(inputs, **changed)
    assert want_base.shape != want_other.shape or want_base.dtype != want_other.dtype or \
        not torch.equal(want_base, want_other)
    assert request(inputs, **BASE) is base_mask and request(inputs, **changed) is other


def test_identical_requests_share_one_object_and_build_once():
    inputs = make_inputs()
    calls = []

    def builder(inputs, *args):
        calls.append(args)
        return torch.zeros(1)

    def other_builder(inputs, *args):
        calls.append(("other", *args))
        return torch.zeros(1)

    first = inputs.shared(builder, 4, range(0, 2))
    assert inputs.shared(builder, 4, range(0, 2)) is first  # equal (not identical) arguments
    assert inputs.shared(builder, 5, range(0, 2)) is not first
    assert inputs.shared(other_builder, 4, range(0, 2)) is not first  # same arguments, other builder
    assert calls == [(4, range(0, 2)), (5, range(0, 2)), ("other", 4, range(0, 2))]


def test_every_local_and_global_builder_keys_on_its_arguments():
    """The blocked, pooled and both-kinds masks: one argument changed, a new mask."""
    # no padding mask: the blocked mask's batch is then free to change
    inputs = dataclasses.replace(make_inputs(offset=0, causal=False), key_mask=None)
    cpu = torch.device("cpu")
    requests = {
        hybrid._blocked_mask: ((N_QUERY, N_KEY, range(0, 2), 2, 16, 2, torch.float32, cpu), 5, 3),  # batch
        hybrid._pooled_mask: ((N_QUERY, N_KEY, range(2, 4), 2, torch.float32, cpu), 3, 3),  # stride
        hybrid._hybrid_dense_mask: ((N_QUERY, N_KEY, 2, N_HEAD, 1, torch.float32, cpu), 2, 1),  # local heads
    }
    for builder, (args, position, value) in requests.items():
        mask = inputs.shared(builder, *args)
        assert inputs.shared(builder, *args) is mask
        changed = args[:position] + (value,) + args[position + 1:]
        other = inputs.shared(builder, *changed)
        assert other is not mask
        assert other.shape != mask.shape or not torch.equal(other, mask), builder.__name__


def test_dense_mask_without_bias_is_one_for_every_head_range():
    with_bias = make_inputs(offset=0)
    n = N_QUERY
    with_bias = dataclasses.replace(with_bias, key_mask=with_bias.key_mask[:, :n],
                                    bias=RelativeBias(torch.randn(2 * n - 1, N_HEAD), n, n))
    masks = [attention_mask(with_bias, n, n, torch.float32, torch.device("cpu"), heads)
             for heads in (None, range(1, 4))]
    assert masks[0] is not masks[1] and masks[0].shape[1] == N_HEAD and masks[1].shape[1] == 3
    without = dataclasses.replace(with_bias, bias=None)
    plain = [attention_mask(without, n, n, torch.float32, torch.device("cpu"), heads)
             for heads in (None, range(1, 4))]
    assert plain[0] is plain[1] and plain[0].dtype == torch.bool  # the mask does not depend on heads


def test_autograd_mode_and_the_inputs_object_are_part_of_the_key():
    inputs = make_inputs()
    with_grad = request(inputs, **BASE)
    with torch.no_grad():
        assert request(inputs, **BASE) is not with_grad
    with torch.inference_mode():
        assert request(inputs, **BASE) is not with_grad
    # another field value is another AttentionInputs, with its own (empty) cache
    causal = dataclasses.replace(inputs, causal=True)
    mask = request(causal, **BASE)
    assert mask is not with_grad
    torch.testing.assert_close(mask, naive_slice_mask(causal, **BASE), atol=1e-6, rtol=0)
    assert not torch.equal(mask, with_grad)


def test_the_fields_a_mask_was_built_from_cannot_change_under_it():
    inputs = make_inputs()
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.causal = True
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.key_mask = None
