"""Self-attention with a dynamic convolution branch beside it (Wu et al. 2019, "Pay less
attention with lightweight and dynamic convolutions").

    y = attention(x) + sigmoid(gate(x)) * conv_out(DynamicConv(conv_in(x)))

The convolution is depthwise per channel group: the channels are split into `n_conv_heads`
groups (n_head by default), the channels of a group share one kernel, and that kernel is
predicted from the input at every time step and softmax-normalised over its width, so each
output is a convex combination of its neighbours' values:

    out[t, c] = sum_k w[t, g(c), k] * v[t + k - offset, c]      (v = 0 outside the sequence)

Padding along time:
- encoder ("same"): offset = kernel_width // 2. For an even width the window is not centred:
  it reaches one step further into the past than into the future (width 4: t-2 .. t+1).
- decoder (causal): offset = kernel_width - 1, only the present and the past. Incremental
  decoding keeps the last kernel_width - 1 projected inputs in `LayerCache.conv_state`.

`conv_out` starts at zero, so a freshly built layer (or one warm-started from Whisper weights,
which land on `self.attention`) computes exactly its attention; the branch opens in training.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionInputs, MultiHeadAttention
from .kv_cache import LayerCache
from .rotary import RotaryEmbeddingWithRotation

# half-precision softmax over a few taps is coarse; normalise the kernels in float32 at least
MIN_SOFTMAX_DTYPE = torch.float32


def conv_padding(kernel_width: int, causal: bool) -> tuple[int, int]:
    """(past, future) zero padding along time that keeps the output as long as the input."""
    if causal:
        return kernel_width - 1, 0
    past = kernel_width // 2  # even widths: one more tap in the past than in the future
    return past, kernel_width - 1 - past


def softmax_kernels(logits: Tensor) -> Tensor:
    """Softmax over the last (kernel width) axis, computed in at least float32 and returned in
    the logits' dtype."""
    compute_dtype = torch.promote_types(logits.dtype, MIN_SOFTMAX_DTYPE)
    return torch.softmax(logits.to(compute_dtype), dim=-1).to(logits.dtype)


def dynamic_conv(values: Tensor, kernels: Tensor, padding: tuple[int, int]) -> Tensor:
    """Depthwise convolution with a different kernel at every output step.

    values [batch, time_in, channels]; kernels [batch, time_out, groups, width], the kernel of
    output step t applied to padded inputs t .. t + width - 1; padding (past, future) zeros.
    Returns [batch, time_out, channels]. Channel c uses the kernel of group c // (channels / groups).
    """
    batch, time_out, groups, width = kernels.shape
    channels = values.shape[-1]
    past, future = padding
    padded = F.pad(values, (0, 0, past, future))  # zeros along time
    windows = padded.unfold(1, width, 1)  # [batch, time_out, channels, width], a strided view
    if windows.shape[1] != time_out:
        raise ValueError(f"{values.shape[1]} inputs with padding {padding} give {windows.shape[1]} "
                         f"windows of width {width}, but there are kernels for {time_out} steps")
    windows = windows.reshape(batch, time_out, groups, channels // groups, width)
    # multiply-and-sum over the width: measured faster on CPU than einsum, which first copies the
    # strided windows into a contiguous tensor for a batched matmul
    out = (windows * kernels.to(windows.dtype)[:, :, :, None, :]).sum(dim=-1)
    return out.reshape(batch, time_out, channels)


class DynamicConvAttention(nn.Module):
    """MultiHeadAttention plus a gated dynamic-convolution branch; same interface as
    MultiHeadAttention (forward(x, inputs, cache))."""

    def __init__(self, n_state: int, n_head: int, rotary: Optional[RotaryEmbeddingWithRotation] = None,
                 *, kernel_width: int, causal: bool, n_conv_heads: Optional[int] = None):
        super().__init__()
        n_conv_heads = n_head if n_conv_heads is None else n_conv_heads
        if n_conv_heads < 1:
            raise ValueError(f"n_conv_heads must be >= 1; got {n_conv_heads}")
        if kernel_width < 1:
            raise ValueError(f"kernel_width must be >= 1; got {kernel_width}")
        if n_state % n_conv_heads:
            raise ValueError(f"n_state={n_state} is not divisible by n_conv_heads={n_conv_heads}")
        self.kernel_width = kernel_width
        self.causal = causal
        self.n_conv_heads = n_conv_heads
        # the attention is a sub-module so Whisper's attention weights map onto attn.attention.*
        self.attention = MultiHeadAttention(n_state, n_head, rotary)
        self.conv_in = nn.Linear(n_state, n_state)
        self.kernel = nn.Linear(n_state, n_conv_heads * kernel_width)
        self.conv_out = nn.Linear(n_state, n_state)
        # one gate per channel (not one per step): the branch can open feature by feature
        self.gate = nn.Linear(n_state, n_state)
        self.reset_to_identity()

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Function-preserving init: a zero output projection silences the branch, so the layer
        computes exactly its attention. The gate and kernel predictor keep their init; they get
        gradients once conv_out has moved off zero."""
        self.conv_out.weight.zero_()
        self.conv_out.bias.zero_()

    def predict_kernels(self, x: Tensor) -> Tensor:
        """[batch, time, n_state] -> [batch, time, n_conv_heads, kernel_width], each kernel
        positive and summing to 1 over its width."""
        logits = self.kernel(x).unflatten(-1, (self.n_conv_heads, self.kernel_width))
        return softmax_kernels(logits)

    def conv_values(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        """The projected inputs the convolution mixes, zero at padded frames: zero is what an
        utterance encoded alone sees past its end, so padding never leaks into real frames."""
        values = self.conv_in(x)
        if inputs.key_mask is not None:
            mask = inputs.key_mask[:, inputs.offset:inputs.offset + x.shape[1]]
            values = values * mask[:, :, None].to(values.dtype)
        return values

    def with_conv_state(self, values: Tensor, inputs: AttentionInputs, cache: LayerCache) -> Tensor:
        """Prepend the cached last kernel_width - 1 inputs (zeros on the first step, the same as
        causal zero padding) and store the new last kernel_width - 1."""
        if not self.causal:
            raise ValueError("incremental decoding with a cache needs a causal (decoder) convolution")
        history = self.kernel_width - 1
        state = cache.conv_state
        if state is None:
            if inputs.offset != 0:
                raise ValueError(f"no convolution state in the cache at offset {inputs.offset}")
            state = values.new_zeros(values.shape[0], history, values.shape[2])
        extended = torch.cat([state.to(values.dtype), values], dim=1)
        # slice from an explicit start: [-0:] would keep everything when kernel_width == 1
        cache.conv_state = extended[:, extended.shape[1] - history:]
        return extended

    def convolve(self, x: Tensor, inputs: AttentionInputs, cache: Optional[LayerCache] = None) -> Tensor:
        """The branch before the gate: conv_out(DynamicConv(conv_in(x))), [batch, time, n_state]."""
        values = self.conv_values(x, inputs)
        kernels = self.predict_kernels(x)
        if cache is not None:
            values = self.with_conv_state(values, inputs, cache)
            padding = (0, 0)  # the state already supplies the past
        else:
            padding = conv_padding(self.kernel_width, self.causal)
        return self.conv_out(dynamic_conv(values, kernels, padding))

    def forward(self, x: Tensor, inputs: AttentionInputs, cache: Optional[LayerCache] = None) -> Tensor:
        y = self.attention(x, inputs, cache)
        return y + torch.sigmoid(self.gate(x)) * self.convolve(x, inputs, cache)

    def extra_repr(self) -> str:
        return f"kernel_width={self.kernel_width}, causal={self.causal}, n_conv_heads={self.n_conv_heads}"
