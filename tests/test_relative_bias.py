"""T5-style relative position buckets and bias, against hand-computed tables and a plain loop."""

import math

import pytest
import torch

from asr.nn.relative_bias import RelativeBias, RelativePositionBias, relative_position_bucket, toeplitz_gather

# relative position (key - query) -> bucket, worked out by hand.
# bidirectional, 8 buckets, max_distance 16: 4 buckets per direction, 2 exact (0, 1), then
# 2 + floor(log(d / 2) / log(8) * 2): d = 2..5 -> 2, d >= 6 -> 3; keys after the query + 4.
HAND_BIDIRECTIONAL_8_16 = {
    -20: 3, -16: 3, -7: 3, -6: 3, -5: 2, -4: 2, -3: 2, -2: 2, -1: 1, 0: 0,
    1: 5, 2: 6, 3: 6, 4: 6, 5: 6, 6: 7, 7: 7, 16: 7, 20: 7,
}
# causal, 8 buckets, max_distance 16: 4 exact (0..3), then 4 + floor(log(d / 4) / log(4) * 4):
# d = 4, 5 -> 4; 6, 7 -> 5; 8..11 -> 6; >= 12 -> 7. Keys after the query share bucket 0.
HAND_CAUSAL_8_16 = {
    -20: 7, -16: 7, -12: 7, -11: 6, -9: 6, -8: 6, -7: 5, -6: 5, -5: 4, -4: 4,
    -3: 3, -2: 2, -1: 1, 0: 0, 1: 0, 2: 0, 9: 0,
}
# bidirectional, 4 buckets, max_distance 4: 2 per direction, exact 0, then log bucket 1
HAND_BIDIRECTIONAL_4_4 = {-9: 1, -2: 1, -1: 1, 0: 0, 1: 3, 2: 3, 9: 3}


@pytest.mark.parametrize("bidirectional,num_buckets,max_distance,table", [
    (True, 8, 16, HAND_BIDIRECTIONAL_8_16),
    (False, 8, 16, HAND_CAUSAL_8_16),
    (True, 4, 4, HAND_BIDIRECTIONAL_4_4),
])
def test_buckets_match_hand_table(bidirectional, num_buckets, max_distance, table):
    relative = torch.tensor(list(table))
    buckets = relative_position_bucket(relative, bidirectional=bidirectional,
                                       num_buckets=num_buckets, max_distance=max_distance)
    assert buckets.tolist() == list(table.values())


def loop_bucket(relative: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """Straightforward scalar version of the T5 rule."""
    if bidirectional:
        per_direction = num_buckets // 2
        start = per_direction if relative > 0 else 0
        distance = abs(relative)
    else:
        per_direction = num_buckets
        start = 0
        distance = max(-relative, 0)
    exact = per_direction // 2
    if distance < exact:
        return start + distance
    log_buckets = per_direction - exact
    steps = int(math.log(distance / exact) / math.log(max_distance / exact) * log_buckets)
    return start + min(exact + steps, per_direction - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 64), (64, 256)])
def test_buckets_match_loop(bidirectional, num_buckets, max_distance):
    relative = torch.arange(-400, 401)
    buckets = relative_position_bucket(relative, bidirectional=bidirectional,
                                       num_buckets=num_buckets, max_distance=max_distance)
    expected = [loop_bucket(r, bidirectional, num_buckets, max_distance) for r in range(-400, 401)]
    assert buckets.tolist() == expected
    assert buckets.min() >= 0 and buckets.max() == num_buckets - 1


def test_causal_future_keys_share_bucket_zero():
    future = torch.arange(1, 300)
    buckets = relative_position_bucket(future, bidirectional=False, num_buckets=32,
                                       max_distance=128)
    assert (buckets == 0).all()


def randomised(bias: RelativePositionBias) -> RelativePositionBias:
    with torch.no_grad():
        bias.embedding.weight.normal_()
    return bias


def test_bias_is_zero_at_init():
    bias = RelativePositionBias(4, bidirectional=True)
    assert torch.equal(bias(7, 9).dense(), torch.zeros(1, 4, 7, 9))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_bias_matches_per_entry_lookup(bidirectional):
    n_head, num_buckets, max_distance = 3, 16, 20
    bias = randomised(RelativePositionBias(n_head, bidirectional=bidirectional,
                                           num_buckets=num_buckets, max_distance=max_distance))
    queries, keys, offset = 4, 40, 30
    out = bias(queries, keys, offset).dense()
    assert out.shape == (1, n_head, queries, keys)
    assert out.dtype == bias.embedding.weight.dtype
    weight = bias.embedding.weight.detach()
    for q in range(queries):
        for k in range(keys):
            bucket = loop_bucket(k - (q + offset), bidirectional, num_buckets, max_distance)
            assert torch.equal(out[0, :, q, k], weight[bucket])


def test_offset_gives_the_cached_decoder_row():
    bias = randomised(RelativePositionBias(2, bidirectional=False))
    full = bias(10, 10).dense()
    step = bias(1, 10, offset=9).dense()
    assert step.shape == (1, 2, 1, 10)
    assert torch.equal(step, full[:, :, -1:, :])


def test_causal_bias_same_for_all_future_keys():
    bias = randomised(RelativePositionBias(2, bidirectional=False))
    out = bias(6, 6).dense()
    for q in range(6):
        for k in range(q, 6):
            assert torch.equal(out[0, :, q, k], out[0, :, q, q])


def test_bias_gets_gradient():
    bias = RelativePositionBias(2, bidirectional=True)
    (bias(5, 7).dense() * torch.randn(1, 2, 5, 7)).sum().backward()
    assert bias.embedding.weight.grad.abs().max() > 0


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        RelativePositionBias(2, bidirectional=True, num_buckets=2)
    with pytest.raises(ValueError):
        RelativePositionBias(2, bidirectional=False, num_buckets=32, max_distance=10)


# ---------------------------------------------------------------------------------------------
# RelativeBias: per-distance values and the grids built from them

def lookup(bias: RelativeBias, query: int, key: int):
    """The value for one (query position, key position) pair; zero where the forward has none."""
    index = key - query - bias.lowest
    if 0 <= index < bias.values.shape[0]:
        return bias.values[index]
    return torch.zeros(bias.n_head, dtype=bias.values.dtype)


@pytest.mark.parametrize("n_query,n_key,offset", [(5, 5, 0), (1, 9, 8), (3, 12, 9), (7, 4, 0)])
def test_grids_match_per_entry_lookup(n_query, n_key, offset):
    values = torch.randn(n_query + n_key - 1, 3, dtype=torch.float64)
    bias = RelativeBias(values, n_query, n_key, offset)
    assert bias.lowest == -(offset + n_query - 1)
    cases = [(offset, n_query, 0, n_key, 1),  # the dense grid
             (offset - 2, 4, offset - 5, 11, 1),  # a band reaching past both ends
             (offset, n_query, 1, 4, 3),  # keys 1, 4, 7, 10: a pooled slot's member
             (50, 2, -40, 3, 2)]  # wholly outside: zeros
    for query_start, rows, key_start, cols, step in cases:
        got = bias.grid(query_start, rows, key_start, cols, key_step=step)
        assert got.shape == (3, rows, cols)
        for i in range(rows):
            for j in range(cols):
                assert torch.equal(got[:, i, j], lookup(bias, query_start + i, key_start + j * step))
    heads = bias.grid(offset, n_query, 0, n_key, heads=range(1, 3))
    assert torch.equal(heads, bias.grid(offset, n_query, 0, n_key)[1:])
    assert torch.equal(bias.dense(), bias.grid(offset, n_query, 0, n_key)[None])


def test_grid_gradient_accumulates_into_the_values():
    values = torch.randn(9, 2, dtype=torch.float64, requires_grad=True)
    bias = RelativeBias(values, 4, 6, 0)
    weight = torch.randn(2, 4, 6, dtype=torch.float64)
    (bias.grid(0, 4, 0, 6) * weight).sum().backward()
    want = torch.zeros_like(values)
    for q in range(4):
        for k in range(6):
            want[k - q - bias.lowest] += weight[:, q, k]
    torch.testing.assert_close(values.grad, want)


def test_values_must_cover_every_relative_position():
    with pytest.raises(ValueError, match="have 9 relative positions"):
        RelativeBias(torch.zeros(8, 2), 4, 6)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_attention_with_a_learnable_bias_equals_the_fused_kernel(device):
    """scaled_dot_product writes the attention out on the CPU when the mask holds the learnable
    bias (faster there) and hands it to SDPA on a GPU: values and every gradient must equal
    F.scaled_dot_product_attention's, a padded key masked with -inf included."""
    from asr.nn.attention import scaled_dot_product

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(1, 3, 5, 5, generator=g, dtype=torch.float64)
    q, k, v, bias = (t.to(device).requires_grad_() for t in (q, k, v, bias))
    padded = torch.zeros(2, 1, 1, 5, dtype=torch.bool, device=device)
    padded[1, ..., 4] = True  # the second utterance's last key is padding

    def run(attend):
        mask = bias.masked_fill(padded, float("-inf"))
        out = attend(q, k, v, mask)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype,
                                                          device=device).view_as(out)).sum(), (q, k, v, bias))
        return out, grads

    out, grads = run(scaled_dot_product)
    ref_out, ref_grads = run(lambda q, k, v, mask: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert torch.allclose(out, ref_out, atol=1e-10)
    for got, expected in zip(grads, ref_grads):
        assert torch.allclose(got, expected, atol=1e-10)


@pytest.mark.parametrize("n_query,n_key,key_step", [(5, 7, 1), (1, 9, 1), (6, 4, 3), (8, 8, 2)])
def test_toeplitz_gather_equals_the_naive_grid(n_query, n_key, key_step):
    # the indexing form torch.compile traces, against entry-by-entry reading of the line
    line = torch.randn(3, (n_key - 1) * key_step + n_query, dtype=torch.float64)
    naive = torch.empty(3, n_query, n_key, dtype=torch.float64)
    for i in range(n_query):
        for j in range(n_key):
            naive[:, i, j] = line[:, (n_query - 1 - i) + j * key_step]
    torch.testing.assert_close(toeplitz_gather(line, n_query, n_key, key_step), naive, rtol=0, atol=0)
