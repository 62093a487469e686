"""Absolute position embeddings: Whisper's sinusoid table, and a learnable version of it."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

DEFAULT_MAX_TIMESCALE = 10000


def sinusoids(length: int, channels: int, max_timescale: float = DEFAULT_MAX_TIMESCALE) -> Tensor:
    """Whisper's table [length, channels]: sin in the first half of the channels, cos in the second,
    timescales geometric from 1 to max_timescale.

    Computed in float64 and rounded once to float32 (Whisper computes in float32; the two differ
    by less than 1e-4 at 1500 positions, and imported Whisper checkpoints carry their own table).
    """
    if channels % 2 != 0 or channels < 4:
        raise ValueError(f"sinusoids need an even number of channels >= 4; got {channels}")
    half = channels // 2
    log_timescale_increment = math.log(max_timescale) / (half - 1)
    inv_timescales = np.exp(-log_timescale_increment * np.arange(half, dtype=np.float64))
    scaled_time = np.arange(length, dtype=np.float64)[:, None] * inv_timescales[None, :]
    table = np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1)
    return torch.from_numpy(table).to(torch.float32)


class LearnedSinusoidalEmbeddings(nn.Module):
    """A learnable [n_ctx, n_state] table, initialised to the sinusoids; each looked-up row is
    L2-normalised and multiplied by a learnable scalar gain."""

    def __init__(self, n_ctx: int, n_state: int, *, checkpoint: bool = False):
        super().__init__()
        self.n_ctx = n_ctx
        self.n_state = n_state
        self.checkpoint = checkpoint
        self.table = nn.Parameter(sinusoids(n_ctx, n_state))
        # Every sinusoid row has norm sqrt(n_state / 2) (sin^2 + cos^2 = 1 per frequency), so this
        # gain makes the output at init exactly the plain sinusoid table; unit rows alone would be
        # tiny next to the token embeddings. Learning it lets the model choose the scale.
        # (a 1-element vector, not a 0-d scalar: FSDP cannot shard 0-d parameters)
        self.gain = nn.Parameter(torch.full((1,), math.sqrt(n_state / 2)))

    def _unit_rows(self, positions: Tensor) -> Tensor:
        return F.normalize(self.table[positions], dim=-1)

    def _check_positions(self, positions: Tensor) -> None:
        dtype = positions.dtype
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise TypeError(f"positions must be an integer tensor; got {dtype}")
        if positions.numel() == 0 or torch.compiler.is_compiling():
            # the range check reads values back (a graph break under torch.compile); compiled
            # training feeds positions it built itself, from an arange bounded by the context
            return
        lowest, highest = torch.stack(torch.aminmax(positions)).tolist()  # one device sync
        if highest >= self.n_ctx:
            raise ValueError(
                f"position {highest} exceeds the maximum context of {self.n_ctx} positions "
                f"(valid positions are 0 .. {self.n_ctx - 1})"
            )
        if lowest < 0:
            raise ValueError(f"position {lowest} is negative; positions start at 0")

    def forward(self, positions: Tensor) -> Tensor:
        """positions: integer tensor of any shape -> [*positions.shape, n_state]."""
        self._check_positions(positions)
        if self.checkpoint and torch.is_grad_enabled():
            # Recompute the gather + normalise in backward instead of storing it. It must be the
            # non-reentrant variant: the reentrant one only backpropagates into inputs that
            # require grad, and the only input here is an integer index, so the table would
            # silently get no gradient.
            rows = checkpoint(self._unit_rows, positions, use_reentrant=False)
        else:
            rows = self._unit_rows(positions)
        return rows * self.gain

    def extra_repr(self) -> str:
        return f"n_ctx={self.n_ctx}, n_state={self.n_state}, checkpoint={self.checkpoint}"


__all__ = ["LearnedSinusoidalEmbeddings", "sinusoids"]
