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

from typing import NamedTuple, Optional

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


class Split(NamedTuple):
    """How one StepLinear's product is split at one thread count: `weight`, views of the
    [in, out] storage, one slice per thread, [parts, in/parts, out] for one row or [parts, in,
    out/parts] for several; `bias`, a view of the bias shaped to add to each partial product
    ([1, 1, out] for one row, [parts, 1, out/parts] for several), or None, multiplied by
    `bias_scale` there. Views, not copies, so that an in-place change to the layer's parameters
    (load_state_dict) shows."""
    parts: int
    weight: Tensor
    bias: Optional[Tensor]
    bias_scale: float


def make_split(storage: Tensor, bias: Optional[Tensor], threads: int, one_row: bool) -> Optional[Split]:
    """The Split of `storage` [in, out] (contiguous) for `threads` (module docstring), or None
    where there is no even split."""
    inputs, outputs = storage.shape
    if one_row:
        parts = slices(inputs, threads)
        if parts == 1:
            return None
        weight = storage.view(parts, -1, outputs)
        # the partial sums are added up afterwards, so each takes bias / parts (exact for 2 and
        # 4 parts, within float32 rounding otherwise): one operation fewer than adding the bias
        # to the sum
        return Split(parts, weight, None if bias is None else bias.view(1, 1, outputs), 1.0 / parts)
    parts = slices(outputs, threads)
    if parts == 1:
        return None
    width = outputs // parts
    weight = storage.as_strided((parts, inputs, width), (width, outputs, 1))
    return Split(parts, weight, None if bias is None else bias.view(parts, 1, width), 1.0)


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

    def split(self, threads: int, one_row: bool) -> Optional[Split]:
        """The Split for this thread count, made once (the views cost a few microseconds a step
        otherwise); made anew if the parameters move to new storage (module.to())."""
        splits = self.__dict__.setdefault("_splits", {})
        key = (threads, one_row, self.weight.data_ptr(), None if self.bias is None else self.bias.data_ptr())
        if key not in splits:
            storage = self.weight.t()
            bias = None if self.bias is None else self.bias.detach()
            splits.clear()
            splits[key] = make_split(storage, bias, threads, one_row) if storage.is_contiguous() else None
        return splits[key]

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        threads = torch.get_num_threads()
        if (threads < 2 or rows > SPLIT_MAX_ROWS or torch.is_grad_enabled() or x.device.type != "cpu"
                or x.dtype != self.weight.dtype):
            return F.linear(x, self.weight, self.bias)
        split = self.split(threads, rows == 1)
        if split is None:
            return F.linear(x, self.weight, self.bias)
        if rows == 1:
            # [parts, 1, in/parts] @ [parts, in/parts, out] -> partial sums [parts, 1, out]
            flat = x.reshape(split.parts, 1, -1)
            partial = (torch.bmm(flat, split.weight) if split.bias is None
                       else torch.baddbmm(split.bias, flat, split.weight, beta=split.bias_scale))
            return partial.sum(0).view(*x.shape[:-1], self.out_features)
        # [parts, rows, in] @ [parts, in, out/parts] -> [parts, rows, out/parts] -> [rows, out]
        flat = x.reshape(1, rows, self.in_features).expand(split.parts, rows, -1)
        y = (torch.bmm(flat, split.weight) if split.bias is None
             else torch.baddbmm(split.bias, flat, split.weight))
        return y.transpose(0, 1).reshape(*x.shape[:-1], self.out_features)
