"""T5-style relative position bias: a learned per-head scalar for each log-bucketed distance.

The bias is added to the attention logits. It is computed once per stack and forward and shared
by the stack's layers (the caller does the sharing), and it starts at zero so that adding it to a
pretrained model changes nothing.
"""

import math

import torch
from torch import Tensor, nn

DEFAULT_NUM_BUCKETS = 32
DEFAULT_MAX_DISTANCE = 128


def relative_position_bucket(
    relative_position: Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """Map relative positions (key_pos - query_pos, integers) to bucket ids in [0, num_buckets).

    Bidirectional: buckets [0, n/2) for keys at or before the query, [n/2, n) for keys after it.
    Causal: only keys at or before the query are told apart; every later key shares bucket 0
    (the causal mask hides them anyway). Within a direction, the first half of its buckets are
    exact distances 0, 1, ...; the rest grow logarithmically up to max_distance, and farther
    distances all land in the last bucket.
    """
    if bidirectional:
        num_buckets //= 2
        # keys after the query get the upper half of the buckets
        bucket_offset = (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        bucket_offset = torch.zeros_like(relative_position, dtype=torch.long)
        distance = (-relative_position).clamp(min=0)

    max_exact = num_buckets // 2
    if max_exact < 1 or max_distance <= max_exact:
        raise ValueError(
            f"need at least 2 buckets per direction and max_distance > {max_exact}; got "
            f"num_buckets={num_buckets * (2 if bidirectional else 1)}, max_distance={max_distance}"
        )
    num_log_buckets = num_buckets - max_exact
    # clamp keeps log() finite for the small distances; the where() below discards those values
    log_ratio = torch.log(distance.clamp(min=max_exact).float() / max_exact)
    log_steps = log_ratio / math.log(max_distance / max_exact) * num_log_buckets
    log_bucket = (max_exact + log_steps.long()).clamp(max=num_buckets - 1)
    return bucket_offset + torch.where(distance < max_exact, distance.long(), log_bucket)


class RelativePositionBias(nn.Module):
    """Per-head additive attention bias [1, n_head, queries, keys] from bucketed distances."""

    def __init__(
        self,
        n_head: int,
        *,
        bidirectional: bool,
        num_buckets: int = DEFAULT_NUM_BUCKETS,
        max_distance: int = DEFAULT_MAX_DISTANCE,
    ):
        super().__init__()
        self.n_head = n_head
        self.bidirectional = bidirectional
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        # fail at construction, not at the first forward
        relative_position_bucket(
            torch.zeros(1, dtype=torch.long),
            bidirectional=bidirectional,
            num_buckets=num_buckets,
            max_distance=max_distance,
        )
        self.embedding = nn.Embedding(num_buckets, n_head)
        # zero: a freshly added bias leaves the attention (and a pretrained model) unchanged
        nn.init.zeros_(self.embedding.weight)

    def forward(self, query_length: int, key_length: int, offset: int = 0) -> Tensor:
        """Bias for queries at positions offset .. offset + query_length - 1 (offset = KV-cache
        length in the decoder) against keys at positions 0 .. key_length - 1."""
        device = self.embedding.weight.device
        # The bias only depends on key - query, which takes query_length + key_length - 1 values:
        # look those up once, then spread them over the [queries, keys] grid.
        lowest = -(offset + query_length - 1)  # key 0 against the last query
        distinct = torch.arange(lowest, key_length - offset, device=device)
        buckets = relative_position_bucket(
            distinct,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        values = self.embedding(buckets)  # [distinct relative positions, n_head]
        # The grid is Toeplitz: with the distinct values reversed, row q (keys reversed too)
        # is the window starting at q, so one unfold builds it without a gather, whose
        # backward (a scattered accumulate) is slow on CPU.
        reversed_values = values.flip(0).t()  # [n_head, distinct], index = (Tq-1) + q - k
        grid = reversed_values.unfold(1, key_length, 1)  # [n_head, queries, keys reversed]
        return grid.flip(-1).unsqueeze(0)

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Function-preserving init: a zero bias leaves every attention score unchanged."""
        self.embedding.weight.zero_()

    def extra_repr(self) -> str:
        return (
            f"n_head={self.n_head}, bidirectional={self.bidirectional}, "
            f"num_buckets={self.num_buckets}, max_distance={self.max_distance}"
        )


__all__ = ["RelativePositionBias", "relative_position_bucket"]
