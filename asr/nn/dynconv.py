"""Self-attention with a dynamic convolution branch beside it (Wu et al. 2019, "Pay less
attention with lightweight and dynamic convolutions").

    y = attention(x) + sigmoid(gate(x)) * conv_out(DynamicConv(conv_in(x)))

The convolution is depthwise per channel block: the channels are split into `channel_blocks`
contiguous blocks (n_head by default), the channels of a block share one kernel, and that
kernel is predicted from the input at every time step and softmax-normalised over its width,
so each output is a convex combination of its neighbours' values:

    out[t, c] = sum_k w[t, b(c), k] * v[t + k - offset, c]      (v = 0 outside the sequence)

where b(c) = c // (channels / channel_blocks) is the block of channel c.

Padding along time:
- encoder ("same"): offset = kernel_width // 2. For an even width the window is not centred:
  it reaches one step further into the past than into the future (width 4: t-2 .. t+1).
- decoder (causal): offset = kernel_width - 1, only the present and the past. Incremental
  decoding keeps the last kernel_width - 1 projected inputs in `LayerCache.conv_state`.

The layer is a `MultiHeadAttention` with the branch added, so its attention weights have the
plain layer's names (`qkv`, `out`) and Whisper's attention weights load onto it unchanged.
`conv_out` starts at zero, so a freshly built layer (or one warm-started from Whisper weights)
computes exactly its attention; the branch opens in training.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import StackOptions
from .attention import AttentionInputs, MultiHeadAttention
from .kv_cache import LayerCache
from .rotary import RotaryEmbeddingWithRotation

# half-precision softmax over a few taps is coarse; normalise the kernels in float32 at least
MIN_SOFTMAX_DTYPE = torch.float32
# output steps per banded matrix product in dynamic_conv (measured: 32 and 64 are about equally
# fast on CPU, 128 slower at long lengths; 64 covers a typical decoder input in one product)
CHUNK = 64


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

    values [batch, time_in, channels]; kernels [batch, time_out, blocks, width], the kernel of
    output step t applied to padded inputs t .. t + width - 1; padding (past, future) zeros.
    Returns [batch, time_out, channels]. Channel c uses the kernel of block c // (channels / blocks).

    Computed as matrix products over chunks of CHUNK output steps: chunk j's outputs are a
    [chunk, chunk + width - 1] banded matrix (row r holds kernel j * chunk + r at columns
    r .. r + width - 1) times the chunk's padded inputs. Measured 2-5x faster on CPU, forward and
    backward, than multiplying strided windows by the kernels and summing, at 40 to 1500 steps,
    with O(time * (chunk + width)) memory per block instead of O(time * channels * width).
    """
    batch, time_out, blocks, width = kernels.shape
    channels = values.shape[-1]
    past, future = padding
    if values.shape[1] + past + future != time_out + width - 1:
        raise ValueError(f"{values.shape[1]} inputs with padding {padding} give "
                         f"{values.shape[1] + past + future - width + 1} windows of width {width}, "
                         f"but there are kernels for {time_out} steps")
    # A short input takes one chunk of its own length, but under torch.compile always CHUNK: a
    # traced min(CHUNK, time) would fix the length the graph is compiled for
    chunk = CHUNK if torch.compiler.is_compiling() else min(CHUNK, time_out)
    n_chunks = -(-time_out // chunk)  # integer ceiling: stays symbolic while tracing
    extra = n_chunks * chunk - time_out  # steps added to fill the last chunk, cut off at the end
    span = chunk + width - 1  # padded inputs one chunk reads
    line = F.pad(values, (0, 0, past, future + extra))  # zeros along time
    inputs = line.unfold(1, span, chunk)  # [batch, n, channels, span], a strided view
    inputs = inputs.unflatten(2, (blocks, channels // blocks)).transpose(-1, -2)  # [B, n, K, span, C/K]
    band = _banded(F.pad(kernels, (0, 0, 0, 0, 0, extra)).unflatten(1, (n_chunks, chunk)))
    out = torch.matmul(band.to(inputs.dtype), inputs)  # [B, n, K, chunk, C/K]
    return out.permute(0, 1, 3, 2, 4).reshape(batch, n_chunks * chunk, channels)[:, :time_out]


def _banded(kernels: Tensor) -> Tensor:
    """[B, n, chunk, K, width] -> [B, n, K, chunk, chunk + width - 1], row r = kernel r shifted
    right by r. The skew is a reshape: with `chunk` zeros after each row, row-major order puts
    row r's kernel r places later in each successive row of length chunk + width - 1."""
    kernels = kernels.transpose(2, 3)  # [B, n, K, chunk, width]
    chunk, width = kernels.shape[-2:]
    span = chunk + width - 1
    flat = F.pad(kernels, (0, chunk)).flatten(-2)  # rows of width + chunk, one after another
    return flat[..., :chunk * span].unflatten(-1, (chunk, span))


class DynamicConvAttention(MultiHeadAttention):
    """MultiHeadAttention plus a gated dynamic-convolution branch:
    forward(x) = attention(x) + sigmoid(gate(x)) * conv_out(DynamicConv(conv_in(x)))."""

    def __init__(self, n_state: int, n_head: int, rotary: Optional[RotaryEmbeddingWithRotation] = None,
                 *, kernel_width: int, causal: bool, channel_blocks: Optional[int] = None):
        super().__init__(n_state, n_head, rotary)
        channel_blocks = n_head if channel_blocks is None else channel_blocks
        if channel_blocks < 1:
            raise ValueError(f"channel_blocks must be >= 1; got {channel_blocks}")
        if kernel_width < 1:
            raise ValueError(f"kernel_width must be >= 1; got {kernel_width}")
        if n_state % channel_blocks:
            raise ValueError(f"n_state={n_state} is not divisible by channel_blocks={channel_blocks}")
        self.kernel_width = kernel_width
        self.causal = causal
        self.channel_blocks = channel_blocks
        self.conv_in = nn.Linear(n_state, n_state)
        self.kernel = nn.Linear(n_state, channel_blocks * kernel_width)
        self.conv_out = nn.Linear(n_state, n_state)
        # one gate per channel (not one per step): the branch can open feature by feature
        self.gate = nn.Linear(n_state, n_state)
        self.reset_to_identity()

    @classmethod
    def from_options(cls, n_state: int, n_head: int, rotary: Optional[RotaryEmbeddingWithRotation],
                     options: StackOptions, causal: bool) -> "DynamicConvAttention":
        return cls(n_state, n_head, rotary, kernel_width=options.kernel_width, causal=causal,
                   channel_blocks=options.channel_blocks)

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Function-preserving init: a zero output projection silences the branch, so the layer
        computes exactly its attention. The gate and kernel predictor keep their init; they get
        gradients once conv_out has moved off zero."""
        self.conv_out.weight.zero_()
        self.conv_out.bias.zero_()

    def predict_kernels(self, x: Tensor) -> Tensor:
        """[batch, time, n_state] -> [batch, time, channel_blocks, kernel_width], each kernel
        positive and summing to 1 over its width."""
        logits = self.kernel(x).unflatten(-1, (self.channel_blocks, self.kernel_width))
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
        y = super().forward(x, inputs, cache)
        return y + torch.sigmoid(self.gate(x)) * self.convolve(x, inputs, cache)

    def extra_repr(self) -> str:
        return (f"n_head={self.n_head}, kernel_width={self.kernel_width}, causal={self.causal}, "
                f"channel_blocks={self.channel_blocks}")
