"""T5-style relative position bias: a learned per-head scalar for each log-bucketed distance.

The bias is added to the attention logits. It starts at zero so that adding it to a pretrained
model changes nothing. Once per stack and forward, `RelativePositionBias` looks up one value per
head and distinct relative position (Tq + Tk - 1 of them) and hands them to the stack's layers
as a `RelativeBias`; each layer takes the part of the [queries, keys] bias it needs from those
values (a dense grid, a sliding-window band, pooled keys), so local attention never pays for a
T x T grid.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
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


class RelativeBias:
    """The relative position bias of one forward: `values[i, h]` is head h's bias for a key at
    relative position (key - query) `lowest + i`, for queries at positions offset ..
    offset + n_query - 1 and keys at 0 .. n_key - 1, so every relative position that occurs is
    there exactly once.

    Every grid built from it is Toeplitz (its entries depend on key - query only): a strided
    view of the values, then one copy. Gradients flow back into `values` through the view's
    backward, an accumulate over O(Tq + Tk) entries, never through a gather.
    """

    def __init__(self, values: Tensor, n_query: int, n_key: int, offset: int = 0):
        if values.shape[0] != n_query + n_key - 1:
            raise ValueError(f"{n_query} queries and {n_key} keys have {n_query + n_key - 1} relative "
                             f"positions, got values for {values.shape[0]}")
        self.values = values  # [n_query + n_key - 1, n_head]
        self.n_query = n_query
        self.n_key = n_key
        self.offset = offset

    @property
    def lowest(self) -> int:
        """Relative position of values[0]: key 0 against the last query."""
        return -(self.offset + self.n_query - 1)

    @property
    def n_head(self) -> int:
        return self.values.shape[1]

    def line(self, first: int, length: int, heads: Optional[range] = None) -> Tensor:
        """[heads, length]: the bias at relative positions first .. first + length - 1, zero
        outside the positions this forward has (callers mask those pairs anyway)."""
        values = self.values if heads is None else self.values[:, heads.start:heads.stop]
        start = first - self.lowest  # index of `first` in values (may lie outside them)
        # sym_max/sym_min: plain max/min on ints, and no guard on traced sizes under torch.compile
        inside = values[torch.sym_max(start, 0):torch.sym_max(start + length, 0)].t()  # the part that exists
        before = torch.sym_min(torch.sym_max(-start, 0), length)
        return F.pad(inside, (before, length - before - inside.shape[1]))

    def grid(self, query_start: int, n_query: int, key_start: int, n_key: int, key_step: int = 1,
             heads: Optional[range] = None) -> Tensor:
        """[heads, n_query, n_key]: the bias of queries at positions query_start + i against keys
        at positions key_start + j * key_step."""
        first = key_start - query_start - (n_query - 1)  # last query, first key
        line = self.line(first, (n_key - 1) * key_step + n_query, heads)
        if torch.compiler.is_compiling():
            return toeplitz_gather(line, n_query, n_key, key_step)
        # With the queries reversed (row r = query n_query - 1 - r), entry (r, j) is
        # line[r + j * key_step]: window j of an unfold, then one flip back.
        windows = line.unfold(1, n_query, key_step)  # [heads, n_key, n_query reversed]
        return windows.transpose(1, 2).flip(1)

    def dense(self, heads: Optional[range] = None) -> Tensor:
        """[1, heads, n_query, n_key], the whole grid: O(Tq * Tk). Only what attends densely
        (plain attention, unpooled global heads) asks for it, once per stack and forward (see
        AttentionInputs.shared)."""
        return self.grid(self.offset, self.n_query, 0, self.n_key, heads=heads).unsqueeze(0)


def toeplitz_gather(line: Tensor, n_query: int, n_key: int, key_step: int = 1) -> Tensor:
    """The grid of `RelativeBias.grid` from its line, by indexing: entry (i, j) is
    line[:, (n_query - 1 - i) + j * key_step]. For torch.compile, where the unfold there fixes
    the traced sizes to the first batch's (a recompile for every new length); eager mode keeps
    the strided view, whose backward is cheaper than the index's scatter-add."""
    query = torch.arange(n_query, device=line.device)
    key = torch.arange(n_key, device=line.device)
    index = (n_query - 1 - query)[:, None] + key[None, :] * key_step  # [n_query, n_key]
    return line[:, index]


class RelativePositionBias(nn.Module):
    """Learned per-head bias for each bucket of relative positions; forward gives a
    `RelativeBias` of one value per head and distinct relative position."""

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

    def forward(self, query_length: int, key_length: int, offset: int = 0) -> RelativeBias:
        """Bias for queries at positions offset .. offset + query_length - 1 (offset = KV-cache
        length in the decoder) against keys at positions 0 .. key_length - 1, as the values of
        the query_length + key_length - 1 relative positions that occur."""
        lowest = -(offset + query_length - 1)  # key 0 against the last query
        distinct = torch.arange(lowest, key_length - offset, device=self.embedding.weight.device)
        buckets = relative_position_bucket(
            distinct,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        return RelativeBias(self.embedding(buckets), query_length, key_length, offset)

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Function-preserving init: a zero bias leaves every attention score unchanged."""
        self.embedding.weight.zero_()

    def extra_repr(self) -> str:
        return (
            f"n_head={self.n_head}, bidirectional={self.bidirectional}, "
            f"num_buckets={self.num_buckets}, max_distance={self.max_distance}"
        )


__all__ = ["RelativeBias", "RelativePositionBias", "relative_position_bucket"]
