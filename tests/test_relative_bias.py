"""T5-style relative position buckets and bias, against hand-computed tables and a plain loop."""

import math

import pytest
import torch

from asr.relative_bias import RelativePositionBias, relative_position_bucket

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
    assert torch.equal(bias(7, 9), torch.zeros(1, 4, 7, 9))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_bias_matches_per_entry_lookup(bidirectional):
    n_head, num_buckets, max_distance = 3, 16, 20
    bias = randomised(RelativePositionBias(n_head, bidirectional=bidirectional,
                                           num_buckets=num_buckets, max_distance=max_distance))
    queries, keys, offset = 4, 40, 30
    out = bias(queries, keys, offset)
    assert out.shape == (1, n_head, queries, keys)
    assert out.dtype == bias.embedding.weight.dtype
    weight = bias.embedding.weight.detach()
    for q in range(queries):
        for k in range(keys):
            bucket = loop_bucket(k - (q + offset), bidirectional, num_buckets, max_distance)
            assert torch.equal(out[0, :, q, k], weight[bucket])


def test_offset_gives_the_cached_decoder_row():
    bias = randomised(RelativePositionBias(2, bidirectional=False))
    full = bias(10, 10)
    step = bias(1, 10, offset=9)
    assert step.shape == (1, 2, 1, 10)
    assert torch.equal(step, full[:, :, -1:, :])


def test_causal_bias_same_for_all_future_keys():
    bias = randomised(RelativePositionBias(2, bidirectional=False))
    out = bias(6, 6)
    for q in range(6):
        for k in range(q, 6):
            assert torch.equal(out[0, :, q, k], out[0, :, q, q])


def test_bias_gets_gradient():
    bias = RelativePositionBias(2, bidirectional=True)
    (bias(5, 7) * torch.randn(1, 2, 5, 7)).sum().backward()
    assert bias.embedding.weight.grad.abs().max() > 0


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        RelativePositionBias(2, bidirectional=True, num_buckets=2)
    with pytest.raises(ValueError):
        RelativePositionBias(2, bidirectional=False, num_buckets=32, max_distance=10)
