"""Hybrid attention: sliding-window (local) heads beside global heads in one attention layer.

Heads 0 .. local_heads - 1 are local: the query at position i sees the keys at positions j with
|i - j| <= window (and j <= i in the decoder). The other heads are global: every key, as in plain
attention, or keys/values average-pooled with stride s (`global_stride`) for long inputs.
One fused QKV projection in, one output projection out, as in `MultiHeadAttention`.

The local heads never build a T x T mask or score matrix on long inputs. Queries are cut into
blocks of b rows (b = max(window, MIN_BLOCK)); a block's keys all lie in a span of 3b keys (its
own block and one on each side), so each block does a [b, 3b] attention under one [b, 3b] band
shared by all blocks: O(T * b) time and memory. The relative bias of that band depends on
key - query only, so it is the same [b, 3b] for every block, taken straight from the stack's
per-distance bias values. Short inputs (up to DENSE_MAX_KEYS keys, or one span) attend densely
under a banded mask instead: fewer scores than the blocks' overlapping spans and no blocking
overhead.

Masks and biases are built once per stack and forward (`AttentionInputs.shared`) and shared by
every layer with the same window and number of local heads.

Positions follow `AttentionInputs`: queries at offset .. offset + Tq - 1, keys at 0 .. Tk - 1
(the decoder's KV cache holds every earlier key, so Tk = offset + Tq there).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import StackOptions
from .attention import (AttentionInputs, MultiHeadAttention, attention_mask, dense_allowed,
                        scaled_dot_product)
from .rotary import RotaryEmbeddingWithRotation

# Smallest query block of the local heads. Blocks of a few rows (window 2 or 3) would spend their
# time on per-block overhead; 16 rows keep the per-block matmuls reasonable while the cost stays
# O(T * max(window, MIN_BLOCK)).
MIN_BLOCK = 16
# Each query block attends to its own key block and one block on either side.
BLOCKS_PER_SPAN = 3
# Up to this many keys, or one span of keys, the local heads attend densely under a banded
# [Tq, Tk] mask instead of in blocks: fewer scores than the blocks' overlapping spans and no
# blocking overhead. Measured on CPU (2 threads, batch 8, 3 heads of 64, forward + backward):
# dense takes 0.4-0.8x the blocked time up to 192 keys for windows 16, 32 and 64, and 1.2-1.9x
# from 256-320 keys on. Either way the cost stays O(T * max(window, DENSE_MAX_KEYS)).
DENSE_MAX_KEYS = 224


# -- small tensor helpers ------------------------------------------------------------------------

def _slice_padded(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    """x[start : start + length] along `dim` (counted from the end, -1 or -2), zero/False where
    that range leaves x (start may be negative). One F.pad: negative pads crop."""
    front = -start
    back = start + length - x.shape[dim]
    trailing = (0, 0) * (-1 - dim)  # leave the dimensions after `dim` alone
    return F.pad(x, (*trailing, front, back))


def _key_valid(inputs: AttentionInputs, n_key: int, device: torch.device) -> Tensor:
    """[batch or 1, n_key] bool, True = a real key (not padding)."""
    if inputs.key_mask is not None:
        return inputs.key_mask[:, :n_key]
    return torch.ones(1, n_key, dtype=torch.bool, device=device)


def _band(distance: Tensor, window: int, causal: bool) -> Tensor:
    """True where key - query = `distance` lies in the window (and not ahead, if causal)."""
    band = distance.abs() <= window
    return band & (distance <= 0) if causal else band


def _with_fallback(allowed: Tensor, diagonal: Tensor) -> Tensor:
    """Let a query that may see no key at all see its own position.

    A real query always sees itself, so this only touches padded query rows whose whole window
    is padding. Their outputs are discarded, but they must stay finite: a fully masked row gives
    NaN on some SDPA backends, and the next layer would multiply that NaN by a zero weight.
    """
    empty = ~allowed.any(dim=-1, keepdim=True)
    return allowed | (empty & diagonal)


def _sdpa_mask(allowed: Tensor, bias: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """Boolean mask, or the bias with -inf where not allowed (SDPA wants the queries' dtype)."""
    if bias is None:
        return allowed
    return bias.to(dtype).masked_fill(~allowed, float("-inf"))


# -- local heads ---------------------------------------------------------------------------------

def _band_covers_all(n_query: int, n_key: int, offset: int, window: int) -> bool:
    """True when every query-key pair is within the window: the band is no restriction."""
    farthest = max(offset + n_query - 1, n_key - 1 - offset)
    return farthest <= window


def _choose_local_path(n_query: int, n_key: int, offset: int, window: int, block: int) -> str:
    """'dense' (one [Tq, Tk] banded mask: the band covers everything, or there are so few keys
    that blocking costs more than it saves), 'slice' (few queries: one band over the keys they
    can reach, e.g. a decoding step) or 'blocked'."""
    if torch.compiler.is_compiling() and offset == 0 and n_query == n_key:
        # Training's full-sequence pass under torch.compile: one size test, not three. Each test
        # of a traced size is a guard, and a batch on its other side compiles the block again.
        return "dense" if n_key <= DENSE_MAX_KEYS else "blocked"
    if _band_covers_all(n_query, n_key, offset, window):
        return "dense"
    if n_query <= block:
        return "slice"
    if n_key <= max(DENSE_MAX_KEYS, BLOCKS_PER_SPAN * block):
        return "dense"
    return "blocked"


def _local_dense_allowed(inputs: AttentionInputs, n_query: int, n_key: int, window: int,
                         device: torch.device) -> Tensor:
    """[B|1, 1, Tq, Tk] bool: the band, causal and padding masks of local heads."""
    query_pos = torch.arange(inputs.offset, inputs.offset + n_query, device=device)[:, None]
    distance = torch.arange(n_key, device=device)[None, :] - query_pos  # [Tq, Tk]
    allowed = _band(distance, window, inputs.causal)[None] & _key_valid(inputs, n_key, device)[:, None, :]
    return _with_fallback(allowed, (distance == 0)[None])[:, None]


def _local_dense_mask(inputs: AttentionInputs, n_query: int, n_key: int, heads: range, window: int,
                      dtype: torch.dtype, device: torch.device) -> Tensor:
    allowed = _local_dense_allowed(inputs, n_query, n_key, window, device)
    bias = None if inputs.bias is None else inputs.dense_bias(heads)
    return _sdpa_mask(allowed, bias, dtype)


def _local_dense(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, heads: range,
                 window: int) -> Tensor:
    """Every query against every key under a banded [Tq, Tk] mask: for short inputs only (the
    mask and scores are O(Tq * Tk)). While the window covers everything this is exactly plain
    attention."""
    mask = inputs.shared(_local_dense_mask, q.shape[2], k.shape[2], heads, window, q.dtype, q.device)
    return scaled_dot_product(q, k, v, mask)


def _slice_range(inputs: AttentionInputs, n_query: int, n_key: int, window: int) -> tuple[int, int]:
    """Key positions lo .. hi - 1: every key some query offset .. offset + Tq - 1 can reach."""
    return max(inputs.offset - window, 0), min(inputs.offset + n_query + window, n_key)


def _local_slice_mask(inputs: AttentionInputs, n_query: int, n_key: int, heads: range, window: int,
                      dtype: torch.dtype, device: torch.device) -> Tensor:
    lo, hi = _slice_range(inputs, n_query, n_key, window)
    query_pos = torch.arange(inputs.offset, inputs.offset + n_query, device=device)[:, None]
    distance = torch.arange(lo, hi, device=device)[None, :] - query_pos
    allowed = _band(distance, window, inputs.causal)[None] & _key_valid(inputs, n_key, device)[:, None, lo:hi]
    allowed = _with_fallback(allowed, (distance == 0)[None])[:, None]  # [B|1, 1, Tq, keys]
    bias = None
    if inputs.bias is not None:
        bias = inputs.bias.grid(inputs.offset, n_query, lo, hi - lo, heads=heads).unsqueeze(0)
    return _sdpa_mask(allowed, bias, dtype)


def _local_slice(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, heads: range,
                 window: int) -> Tensor:
    """Few queries (one block at most): attend to the keys any of them can reach, under a
    [Tq, <= Tq + 2 window] band. A decoding step (Tq = 1) takes the last window + 1 keys."""
    lo, hi = _slice_range(inputs, q.shape[2], k.shape[2], window)
    mask = inputs.shared(_local_slice_mask, q.shape[2], k.shape[2], heads, window, q.dtype, q.device)
    return scaled_dot_product(q, k[:, :, lo:hi], v[:, :, lo:hi], mask)


def _blocked_mask(inputs: AttentionInputs, n_query: int, n_key: int, heads: range, window: int,
                  block: int, batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[batch * n_blocks, 1 or heads, block, span]: block c's row r against key column j, which
    holds key position offset - window + c * block + j (see _local_blocked)."""
    span = BLOCKS_PER_SPAN * block
    n_blocks = -(-n_query // block)  # integer ceiling: stays symbolic under torch.compile
    start = inputs.offset - window
    # column - row = key - query + window, the same in every block
    distance = (torch.arange(span, device=device)[None, :] - torch.arange(block, device=device)[:, None]
                - window)
    length = (n_blocks - 1) * block + span
    valid_line = _slice_padded(_key_valid(inputs, n_key, device), -1, start, length)
    valid = valid_line.unfold(1, span, block)  # [B|1, n, span]
    allowed = _band(distance, window, inputs.causal) & valid[:, :, None, :]  # [B|1, n, block, span]
    allowed = _with_fallback(allowed, distance == 0)
    allowed = allowed.expand(batch, -1, -1, -1).reshape(batch * n_blocks, 1, block, span)
    if inputs.bias is None:
        return allowed
    # one [heads, block, span] band of the bias serves every block: it depends on key - query
    # only, and out-of-range pairs (zero there) are masked
    bias = inputs.bias.grid(inputs.offset, block, start, span, heads=heads)
    return _sdpa_mask(allowed, bias, dtype)


def _local_blocked(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, heads: range,
                   window: int, block: int) -> Tensor:
    """Sliding-window attention in O(T * block): query block c (rows c*b .. c*b + b - 1, b = block)
    attends to the 3b keys at positions offset - window + c*b + (0 .. 3b - 1), which hold its
    whole band because b >= window."""
    batch, n_head, n_query, head_dim = q.shape
    span = BLOCKS_PER_SPAN * block
    n_blocks = -(-n_query // block)
    start = inputs.offset - window  # key position of column 0 of block 0
    # Lay keys out so that query row i's own position sits at column i + window; pad with
    # zeros (masked) before position 0, after the last key and after the last block.
    length = (n_blocks - 1) * block + span
    k_line = _slice_padded(k, -2, start, length)
    v_line = _slice_padded(v, -2, start, length)

    # [B, H, n * block, h] -> [B * n, H, block, h]; key spans [B, H, n, h, span] -> [B * n, H, span, h]
    q_blocks = F.pad(q, (0, 0, 0, n_blocks * block - n_query)).unflatten(2, (n_blocks, block))
    q_blocks = q_blocks.transpose(1, 2).reshape(batch * n_blocks, n_head, block, head_dim)

    def spans(x: Tensor) -> Tensor:
        x = x.unfold(2, span, block).permute(0, 2, 1, 4, 3)  # [B, n, H, span, h]
        return x.reshape(batch * n_blocks, n_head, span, head_dim)

    mask = inputs.shared(_blocked_mask, n_query, k.shape[2], heads, window, block, batch, q.dtype,
                         q.device)
    y = scaled_dot_product(q_blocks, spans(k_line), spans(v_line), mask)
    y = y.unflatten(0, (batch, n_blocks)).transpose(1, 2).reshape(batch, n_head, n_blocks * block, head_dim)
    return y[:, :, :n_query]


def local_attention(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, heads: range,
                    window: int) -> Tensor:
    """Sliding-window attention: |query pos - key pos| <= window, plus causal and key padding.
    q, k, v hold the heads `heads` of the layer (they select the relative bias's heads)."""
    block = max(window, MIN_BLOCK)
    path = _choose_local_path(q.shape[2], k.shape[2], inputs.offset, window, block)
    if path == "dense":
        return _local_dense(q, k, v, inputs, heads, window)
    if path == "slice":
        return _local_slice(q, k, v, inputs, heads, window)
    return _local_blocked(q, k, v, inputs, heads, window, block)


# -- global heads --------------------------------------------------------------------------------

def _pool(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    """Weighted sum over runs of `stride` along dim 2 of [B, H, T_pad, h]; weight [B|1, T_pad]."""
    x = x * weight[:, None, :, None]
    return x.unflatten(2, (-1, stride)).sum(dim=3)


def _slot_weights(inputs: AttentionInputs, n_key: int, stride: int, dtype: torch.dtype,
                  device: torch.device) -> tuple[Tensor, Tensor]:
    """(weight [B|1, n_slot * stride]: 1 at real keys, 0 at padding and past the end;
    count [B|1, n_slot]: real keys per slot)."""
    n_slot = -(-n_key // stride)  # integer ceiling: stays symbolic under torch.compile
    weight = F.pad(_key_valid(inputs, n_key, device).to(dtype), (0, n_slot * stride - n_key))
    return weight, weight.unflatten(1, (n_slot, stride)).sum(dim=2)


def _pooled_bias(inputs: AttentionInputs, n_query: int, heads: range, weight: Tensor, count: Tensor,
                 stride: int) -> Tensor:
    """[B|1, heads, Tq, n_slot]: the bias of slot m is the mean of its real members' biases
    (members m*s + i, i < s). One strided [heads, Tq, n_slot] grid per member index i: never a
    [Tq, Tk] grid."""
    n_slot = count.shape[1]
    members = weight.unflatten(1, (n_slot, stride)).to(inputs.bias.values.dtype)  # [B|1, n_slot, s]
    total = 0
    for i in range(stride):
        grid = inputs.bias.grid(inputs.offset, n_query, i, n_slot, key_step=stride, heads=heads)
        total = total + grid[None] * members[:, None, None, :, i]
    return total / count.clamp(min=1.0).to(members.dtype)[:, None, None, :]


def _pooled_mask(inputs: AttentionInputs, n_query: int, n_key: int, heads: range, stride: int,
                 dtype: torch.dtype, device: torch.device) -> Tensor:
    weight, count = _slot_weights(inputs, n_key, stride, dtype, device)
    allowed = (count > 0)[:, None, None, :]  # [B|1, 1, 1, n_slot]: a slot without real keys is masked
    bias = None if inputs.bias is None else _pooled_bias(inputs, n_query, heads, weight, count, stride)
    return _sdpa_mask(allowed, bias, dtype)


def pooled_attention(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, heads: range,
                     stride: int) -> Tensor:
    """Attention to keys/values averaged over slots of `stride` consecutive positions (slot m
    holds positions m*s .. m*s + s - 1), in O(Tq * Tk / s).

    Only real frames are averaged; a slot without one is masked. The relative bias of a slot is
    the same masked average of its members' biases, so a pooled score is exactly the mean of
    its members' scores (q . mean k + mean bias). Encoder only: see HybridAttention.
    """
    if inputs.causal:
        raise ValueError("global_stride > 1 is for the encoder: in the decoder a pooled slot would "
                         "mix a token with later ones; use global_stride=1 there")
    n_key = k.shape[2]
    weight, count = _slot_weights(inputs, n_key, stride, q.dtype, q.device)
    scale = 1.0 / count.clamp(min=1.0)
    pad = weight.shape[1] - n_key
    k_pool = _pool(F.pad(k, (0, 0, 0, pad)), weight, stride) * scale[:, None, :, None]
    v_pool = _pool(F.pad(v, (0, 0, 0, pad)), weight, stride) * scale[:, None, :, None]
    mask = inputs.shared(_pooled_mask, q.shape[2], n_key, heads, stride, q.dtype, q.device)
    return scaled_dot_product(q, k_pool, v_pool, mask)


def global_attention(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, heads: range,
                     stride: int) -> Tensor:
    if stride > 1:
        return pooled_attention(q, k, v, inputs, heads, stride)
    mask = attention_mask(inputs, q.shape[2], k.shape[2], q.dtype, q.device, heads)
    return scaled_dot_product(q, k, v, mask)


# -- local and global heads in one call ---------------------------------------------------------

def _hybrid_dense_mask(inputs: AttentionInputs, n_query: int, n_key: int, local_heads: int,
                       n_head: int, window: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[B|1, n_head, Tq, Tk]: heads 0 .. local_heads - 1 under the local band, the others under
    the plain padding/causal mask, with the relative bias of all heads when there is one."""
    local = _local_dense_allowed(inputs, n_query, n_key, window, device)
    global_ = dense_allowed(inputs, n_query, n_key, device)
    if global_ is None:
        global_ = torch.ones(1, 1, 1, n_key, dtype=torch.bool, device=device)
    batch = max(local.shape[0], global_.shape[0])
    allowed = torch.cat([local.expand(batch, local_heads, n_query, n_key),
                         global_.expand(batch, n_head - local_heads, n_query, n_key)], dim=1)
    bias = None if inputs.bias is None else inputs.dense_bias()
    return _sdpa_mask(allowed, bias, dtype)


def hybrid_dense_attention(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, local_heads: int,
                           window: int) -> Tensor:
    """Local heads (0 .. local_heads - 1) and unpooled global heads in one attention call under
    one mask: what local_attention's dense path and global_attention compute, without slicing
    the heads apart and concatenating them again."""
    n_head = q.shape[1]
    mask = inputs.shared(_hybrid_dense_mask, q.shape[2], k.shape[2], local_heads, n_head, window,
                         q.dtype, q.device)
    return scaled_dot_product(q, k, v, mask)


# -- the layer -----------------------------------------------------------------------------------

class HybridAttention(MultiHeadAttention):
    """Self-attention whose first `local_heads` heads see a sliding window (|i - j| <= window,
    j <= i in the decoder) and whose other n_head - local_heads heads, the global heads, see
    every key (or, with global_stride s > 1, keys/values average-pooled over s positions;
    encoder only, a ValueError in the decoder).

    The relative position bias, when the stack has one, is added to both kinds of heads: the band
    part of it for local heads (gathered from the per-distance values, never a T x T grid), the
    whole grid for global heads, and for pooled global heads the masked mean of a slot's
    members' biases (a [Tq, Tk / s] grid).

    With `gate`, the local heads' outputs are scaled by 2 * sigmoid(g_local) and the global
    heads' by 2 * sigmoid(g_global) before the output projection, the two logits learnable and
    starting at 0, so both scales start at exactly 1.

    Function-preserving init: while the window covers the whole context, a local head is a global
    head. A hybrid layer given vanilla Whisper attention weights, window >= n_ctx - 1,
    global_stride 1 and both logits at 0 therefore computes exactly Whisper's multi-head
    attention (asr/nn/extras_init.py refuses other settings under that option). Fine-tuning then
    opens the hybrid by shrinking the window.
    """

    def __init__(self, n_state: int, n_head: int, rotary: Optional[RotaryEmbeddingWithRotation] = None, *,
                 window: int, local_heads: int, global_stride: int = 1, gate: bool = True):
        super().__init__(n_state, n_head, rotary)
        if not 0 <= local_heads <= n_head:
            raise ValueError(f"local_heads={local_heads} must be between 0 and n_head={n_head}")
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        if global_stride < 1:
            raise ValueError(f"global_stride must be >= 1, got {global_stride}")
        self.window = window
        self.local_heads = local_heads
        self.global_stride = global_stride
        # logits of the local heads' and the global heads' output scales, 2 * sigmoid(0) = 1
        self.gate_logits = nn.Parameter(torch.zeros(2)) if gate else None

    @classmethod
    def from_options(cls, n_state: int, n_head: int, rotary: Optional[RotaryEmbeddingWithRotation],
                     options: StackOptions, causal: bool) -> "HybridAttention":
        local_heads = n_head // 2 if options.local_heads is None else options.local_heads
        return cls(n_state, n_head, rotary, window=options.window, local_heads=local_heads,
                   global_stride=options.global_stride, gate=options.hybrid_gate)

    @property
    def global_heads(self) -> int:
        return self.n_head - self.local_heads

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Function-preserving init: both output scales back to exactly 1."""
        if self.gate_logits is not None:
            self.gate_logits.zero_()

    def starts_as_plain_attention(self, n_ctx: int) -> bool:
        """True when, at scales 1, this layer computes plain attention on every input of up to
        n_ctx positions: each local head's window reaches every key, no global head is pooled."""
        local_is_global = self.local_heads == 0 or self.window >= n_ctx - 1
        return local_is_global and (self.global_heads == 0 or self.global_stride == 1)

    def head_scales(self, dtype: torch.dtype) -> Tensor:
        """[1, n_head, 1, 1]: each head's output scale (gate on)."""
        local_scale, global_scale = self.local_global_scales(dtype)
        scales = torch.cat([local_scale.expand(self.local_heads), global_scale.expand(self.global_heads)])
        return scales[None, :, None, None]

    def _local_and_global_dense(self, n_query: int, n_key: int, offset: int) -> bool:
        """Local heads on their dense path beside unpooled global heads: one call does both."""
        if not 0 < self.local_heads < self.n_head or self.global_stride > 1:
            return False
        block = max(self.window, MIN_BLOCK)
        return _choose_local_path(n_query, n_key, offset, self.window, block) == "dense"

    def local_global_scales(self, dtype: torch.dtype) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """(local heads' scale, global heads' scale), or (None, None) without the gate."""
        if self.gate_logits is None:
            return None, None
        # in the activations' dtype: a float32 scale would promote bf16 outputs under autocast
        scales = (2 * torch.sigmoid(self.gate_logits.float())).to(dtype)
        return scales[0], scales[1]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs) -> Tensor:
        n_local = self.local_heads
        if self._local_and_global_dense(q.shape[2], k.shape[2], inputs.offset):
            y = hybrid_dense_attention(q, k, v, inputs, n_local, self.window)
            return y if self.gate_logits is None else y * self.head_scales(q.dtype)
        local_scale, global_scale = self.local_global_scales(q.dtype)
        outputs = []
        if n_local > 0:
            y = local_attention(q[:, :n_local], k[:, :n_local], v[:, :n_local], inputs,
                                range(0, n_local), self.window)
            outputs.append(y if local_scale is None else y * local_scale)
        if self.global_heads > 0:
            y = global_attention(q[:, n_local:], k[:, n_local:], v[:, n_local:], inputs,
                                 range(n_local, self.n_head), self.global_stride)
            outputs.append(y if global_scale is None else y * global_scale)
        return torch.cat(outputs, dim=1)

    def extra_repr(self) -> str:
        return (f"n_head={self.n_head}, local_heads={self.local_heads}, window={self.window}, "
                f"global_stride={self.global_stride}, gate={self.gate_logits is not None}")
