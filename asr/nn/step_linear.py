"""A linear layer for decoding steps: its few rows multiplied on every CPU thread.

At a decoding step each of the decoder's linear layers multiplies a handful of rows (one per
hypothesis) by its weight, a product bound by reading the weight from memory. torch hands a
one-row product to a single matrix-vector call that runs on one thread whatever
torch.get_num_threads() says: Whisper tiny's 24 step linears took 2.5-2.8 ms a step on one
thread and on two alike (2-core AMD EPYC, weights evicted from the cache between steps as a
real step's other reads evict them, scripts/bench_transcribe.py --kernels), while the second
core idled. Written as a batched product over one slice of the weight per thread, every thread
streams its own slice, and the same 24 took 1.5-1.6 ms on two threads.

How the weight is sliced depends on the rows, as measured at 2 threads:
- one row: along the inputs (rows of the [in, out] storage, contiguous views), each thread
  multiplies its share of the row's inputs, and the partial outputs are added (1.6 ms, against
  1.9 ms sliced along the outputs);
- several rows (beam search, batches of files): along the outputs (strided views), each thread
  computes whole outputs for every row (2.4 ms at 5 rows against 2.9 ms unsplit and 2.9 ms along
  the inputs; 3.3 against 5.0 ms at 16 rows).
Above SPLIT_MAX_ROWS rows the matrix product parallelises by itself. The weight must be held
transposed ([in, out] contiguous, asr.store.checkpoint.decoder_linears_in_step_layout); a sum
split along the inputs adds in another order, so results differ from F.linear's by float32
rounding only.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SPLIT_MAX_ROWS = 32  # more rows than this: one matrix product, parallel on its own
MIN_SLICE = 64  # fewest inputs or outputs a thread's slice may hold


def slices(size: int, threads: int) -> int:
    """The most slices (at most `threads`) that divide `size` into equal parts of at least
    MIN_SLICE."""
    for parts in range(min(threads, size // MIN_SLICE), 1, -1):
        if size % parts == 0:
            return parts
    return 1


def split_product(flat: Tensor, storage: Tensor) -> Optional[Tensor]:
    """flat [rows, in] @ storage [in, out] (contiguous) as one slice of `storage` per thread
    (module docstring), or None where that does not apply (one thread, more than
    SPLIT_MAX_ROWS rows, gradients, not on a CPU, mixed dtypes, sizes without an even split)."""
    rows, (inputs, outputs) = flat.shape[0], storage.shape
    threads = torch.get_num_threads()
    if (threads < 2 or rows > SPLIT_MAX_ROWS or torch.is_grad_enabled() or flat.device.type != "cpu"
            or flat.dtype != storage.dtype or not storage.is_contiguous()):
        return None
    if rows == 1:
        parts = slices(inputs, threads)
        if parts == 1:
            return None
        # [parts, 1, in/parts] @ [parts, in/parts, out] -> partial sums [parts, 1, out]
        return torch.bmm(flat.reshape(parts, 1, -1), storage.view(parts, -1, outputs)).sum(0)
    parts = slices(outputs, threads)
    if parts == 1:
        return None
    width = outputs // parts
    columns = storage.as_strided((parts, inputs, width), (width, outputs, 1))
    # [parts, rows, in] @ [parts, in, out/parts] -> [parts, rows, out/parts] -> [rows, out]
    return torch.bmm(flat.expand(parts, rows, -1), columns).transpose(0, 1).reshape(rows, -1)


class StepLinear(nn.Linear):
    """nn.Linear whose products of up to SPLIT_MAX_ROWS rows, without gradients on a CPU, run
    as one slice of the weight per thread (module docstring); everything else is F.linear."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight: Tensor) -> "StepLinear":
        """Takes `linear`'s bias and `weight` [out, in], which should be a view of [in, out]
        contiguous storage."""
        step = cls(linear.in_features, linear.out_features, bias=False, device="meta")  # nothing allocated
        step.weight = nn.Parameter(weight, requires_grad=False)
        step.bias = linear.bias
        return step

    def forward(self, x: Tensor) -> Tensor:
        y = split_product(x.reshape(-1, self.in_features), self.weight.t())
        if y is None:
            return F.linear(x, self.weight, self.bias)
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1], self.out_features)
