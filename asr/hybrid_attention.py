"""Hybrid attention: sliding-window (local) heads beside global heads in one attention layer.

Heads 0 .. local_heads - 1 are local: the query at position i sees the keys at positions j with
|i - j| <= window (and j <= i in the decoder). The other heads are global: every key, as in plain
attention, or keys/values average-pooled with stride s (`global_stride`) for long inputs.
One fused QKV projection in, one output projection out, as in `MultiHeadAttention`.

The local heads never build a T x T mask or score matrix. Queries are cut into blocks of b rows
(b = max(window, MIN_BLOCK)); a block's keys all lie in a span of 3b keys (its own block and one
on each side), so each block does a [b, 3b] attention under one [b, 3b] band mask shared by all
blocks: O(T * b) time and memory.

Positions follow `AttentionInputs`: queries at offset .. offset + Tq - 1, keys at 0 .. Tk - 1
(the decoder's KV cache holds every earlier key, so Tk = offset + Tq there).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionInputs, MultiHeadAttention, attention_mask
from .rotary import RotaryEmbeddingWithRotation

# Smallest query block of the local heads. Blocks of a few rows (window 2 or 3) would spend their
# time on per-block overhead; 16 rows keep the per-block matmuls reasonable while the cost stays
# O(T * max(window, MIN_BLOCK)).
MIN_BLOCK = 16
# Each query block attends to its own key block and one block on either side.
BLOCKS_PER_SPAN = 3


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
    """'full' (the band covers everything: plain attention), 'slice' (few queries: one band over
    the keys they can reach, e.g. a decoding step) or 'blocked'."""
    if _band_covers_all(n_query, n_key, offset, window):
        return "full"
    if n_query <= block:
        return "slice"
    return "blocked"


def _local_full(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, bias: Optional[Tensor]) -> Tensor:
    """The window covers every pair: exactly plain attention (same mask, same kernel)."""
    mask = attention_mask(replace(inputs, bias=bias), q.shape[2], k.shape[2], q.dtype, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _local_slice(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, bias: Optional[Tensor],
                 window: int) -> Tensor:
    """Few queries (one block at most): attend to the keys any of them can reach, under a
    [Tq, <= Tq + 2 window] band. A decoding step (Tq = 1) takes the last window + 1 keys."""
    n_query, n_key, offset = q.shape[2], k.shape[2], inputs.offset
    lo, hi = max(offset - window, 0), min(offset + n_query + window, n_key)
    device = q.device
    query_pos = torch.arange(offset, offset + n_query, device=device)[:, None]
    key_pos = torch.arange(lo, hi, device=device)[None, :]
    distance = key_pos - query_pos
    band = distance.abs() <= window
    if inputs.causal:
        band = band & (distance <= 0)
    allowed = band[None] & _key_valid(inputs, n_key, device)[:, None, lo:hi]  # [B, Tq, keys]
    allowed = _with_fallback(allowed, (distance == 0)[None])[:, None]  # [B, 1, Tq, keys]
    if bias is not None:
        bias = bias[..., lo:hi]
    mask = _sdpa_mask(allowed, bias, q.dtype)
    return F.scaled_dot_product_attention(q, k[:, :, lo:hi], v[:, :, lo:hi], attn_mask=mask)


def _band_bias(bias: Tensor, n_blocks: int, block: int, start: int) -> Tensor:
    """[1, H, Tq, Tk] -> [1, H, n_blocks, block, span]: the bias of each block row against the
    block's key span (key position start + c * block + column). Out-of-range entries are clamped
    and get masked; only O(T * block) values are gathered."""
    n_query, n_key = bias.shape[2], bias.shape[3]
    span = BLOCKS_PER_SPAN * block
    device = bias.device
    query = torch.arange(n_blocks * block, device=device).clamp(max=n_query - 1)
    block_start = torch.arange(n_blocks, device=device) * block + start
    key = block_start[:, None, None] + torch.arange(span, device=device)[None, None, :]
    key = key.expand(n_blocks, block, span).reshape(n_blocks * block, span).clamp(0, n_key - 1)
    gathered = bias[:, :, query[:, None], key]  # [1, H, n_blocks * block, span]
    return gathered.unflatten(2, (n_blocks, block))


def _local_blocked(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, bias: Optional[Tensor],
                   window: int, block: int) -> Tensor:
    """Sliding-window attention in O(T * block): query block c (rows c*b .. c*b + b - 1, b = block)
    attends to the 3b keys at positions offset - window + c*b + (0 .. 3b - 1), which hold its
    whole band because b >= window."""
    batch, n_head, n_query, head_dim = q.shape
    n_key, offset = k.shape[2], inputs.offset
    span = BLOCKS_PER_SPAN * block
    n_blocks = math.ceil(n_query / block)
    start = offset - window  # key position of column 0 of block 0
    # Lay keys out so that query row i's own position sits at column i + window; pad with
    # zeros (masked) before position 0, after the last key and after the last block.
    length = (n_blocks - 1) * block + span
    k_line = _slice_padded(k, -2, start, length)
    v_line = _slice_padded(v, -2, start, length)
    valid_line = _slice_padded(_key_valid(inputs, n_key, q.device), -1, start, length)

    # [B, H, n * block, h] -> [B * n, H, block, h]; key spans [B, H, n, h, span] -> [B * n, H, span, h]
    q_blocks = F.pad(q, (0, 0, 0, n_blocks * block - n_query)).unflatten(2, (n_blocks, block))
    q_blocks = q_blocks.transpose(1, 2).reshape(batch * n_blocks, n_head, block, head_dim)

    def spans(x: Tensor) -> Tensor:
        x = x.unfold(2, span, block).permute(0, 2, 1, 4, 3)  # [B, n, H, span, h]
        return x.reshape(batch * n_blocks, n_head, span, head_dim)

    # The band is the same for every block: column - row = key - query + window.
    rel = torch.arange(span, device=q.device)[None, :] - torch.arange(block, device=q.device)[:, None]
    band = (rel >= 0) & (rel <= 2 * window)
    if inputs.causal:
        band = band & (rel <= window)
    valid = valid_line.unfold(1, span, block)  # [B or 1, n, span]
    allowed = band & valid[:, :, None, :]  # [B or 1, n, block, span]
    allowed = _with_fallback(allowed, rel == window)
    allowed = allowed.expand(batch, -1, -1, -1).reshape(batch * n_blocks, 1, block, span)
    if bias is not None:
        # [1, H, n, block, span] -> [B * n, H, block, span], matching the block-major layout
        bias = _band_bias(bias, n_blocks, block, start).transpose(1, 2)
        bias = bias.expand(batch, -1, -1, -1, -1).reshape(batch * n_blocks, n_head, block, span)
    mask = _sdpa_mask(allowed, bias, q.dtype)
    y = F.scaled_dot_product_attention(q_blocks, spans(k_line), spans(v_line), attn_mask=mask)
    y = y.unflatten(0, (batch, n_blocks)).transpose(1, 2).reshape(batch, n_head, n_blocks * block, head_dim)
    return y[:, :, :n_query]


def local_attention(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, bias: Optional[Tensor],
                    window: int) -> Tensor:
    """Sliding-window attention: |query pos - key pos| <= window, plus causal and key padding.
    `bias` is [1, H, Tq, Tk] or None, H = q's heads."""
    block = max(window, MIN_BLOCK)
    path = _choose_local_path(q.shape[2], k.shape[2], inputs.offset, window, block)
    if path == "full":
        return _local_full(q, k, v, inputs, bias)
    if path == "slice":
        return _local_slice(q, k, v, inputs, bias, window)
    return _local_blocked(q, k, v, inputs, bias, window, block)


# -- global heads --------------------------------------------------------------------------------

def _pool(x: Tensor, weight: Tensor, stride: int) -> Tensor:
    """Weighted sum over groups of `stride` along dim 2 of [B, H, T_pad, h]; weight [B|1, T_pad]."""
    x = x * weight[:, None, :, None]
    return x.unflatten(2, (-1, stride)).sum(dim=3)


def pooled_attention(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, bias: Optional[Tensor],
                     stride: int) -> Tensor:
    """Attention to keys/values averaged over slots of `stride` consecutive positions (slot m
    holds positions m*s .. m*s + s - 1), in O(Tq * Tk / s).

    Only real frames are averaged; a slot without one is masked. The bias of a slot is the same
    masked average of its members' biases, so a pooled score is exactly the mean of its members'
    scores (q . mean k + mean bias). Encoder only: see HybridAttention.
    """
    if inputs.causal:
        raise ValueError("global_stride > 1 is for the encoder: in the decoder a pooled slot would "
                         "mix a token with later ones; use global_stride=1 there")
    n_key = k.shape[2]
    n_slot = math.ceil(n_key / stride)
    pad = n_slot * stride - n_key
    weight = F.pad(_key_valid(inputs, n_key, q.device).to(q.dtype), (0, pad))  # [B|1, Tk_pad]
    count = weight.unflatten(1, (n_slot, stride)).sum(dim=2)  # [B|1, n_slot]
    scale = 1.0 / count.clamp(min=1.0)
    k_pool = _pool(F.pad(k, (0, 0, 0, pad)), weight, stride) * scale[:, None, :, None]
    v_pool = _pool(F.pad(v, (0, 0, 0, pad)), weight, stride) * scale[:, None, :, None]
    allowed = (count > 0)[:, None, None, :]  # [B|1, 1, 1, n_slot]
    if bias is not None:
        bias = F.pad(bias.to(q.dtype), (0, pad)).unflatten(3, (n_slot, stride))
        bias = torch.einsum("xhqms,bms->bhqm", bias, weight.unflatten(1, (n_slot, stride)))
        bias = bias * scale[:, None, None, :]
    mask = _sdpa_mask(allowed, bias, q.dtype)
    return F.scaled_dot_product_attention(q, k_pool, v_pool, attn_mask=mask)


def global_attention(q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs, bias: Optional[Tensor],
                     stride: int) -> Tensor:
    if stride > 1:
        return pooled_attention(q, k, v, inputs, bias, stride)
    mask = attention_mask(replace(inputs, bias=bias), q.shape[2], k.shape[2], q.dtype, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# -- the layer -----------------------------------------------------------------------------------

class HybridAttention(MultiHeadAttention):
    """Self-attention whose first `local_heads` heads see a sliding window (|i - j| <= window,
    j <= i in the decoder) and whose other heads see every key (or, with global_stride s > 1,
    keys/values average-pooled over s positions; encoder only, a ValueError in the decoder).

    The relative position bias, when the stack has one, is added to both groups: the band part of
    it for local heads, its masked slot average for pooled global heads.

    With `gate`, each group's output is scaled by 2 * sigmoid(g) before the output projection,
    g a learnable scalar per group starting at 0, so the scale starts at exactly 1.

    Function-preserving init: while the window covers the whole context, a local head is a global
    head. A hybrid layer given vanilla Whisper attention weights, window >= n_ctx, global_stride 1
    and gates at 0 therefore computes exactly Whisper's multi-head attention. Fine-tuning then
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
        # logits of the local and global group scales, 2 * sigmoid(0) = 1
        self.gate_logits = nn.Parameter(torch.zeros(2)) if gate else None

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Function-preserving init: both group scales back to exactly 1."""
        if self.gate_logits is not None:
            self.gate_logits.zero_()

    def group_scales(self, dtype: torch.dtype) -> tuple[Optional[Tensor], Optional[Tensor]]:
        if self.gate_logits is None:
            return None, None
        # in the activations' dtype: a float32 scale would promote bf16 outputs under autocast
        scales = (2 * torch.sigmoid(self.gate_logits.float())).to(dtype)
        return scales[0], scales[1]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs) -> Tensor:
        split = self.local_heads
        bias = inputs.bias
        local_bias = None if bias is None else bias[:, :split]
        global_bias = None if bias is None else bias[:, split:]
        local_scale, global_scale = self.group_scales(q.dtype)
        outputs = []
        if split > 0:
            y = local_attention(q[:, :split], k[:, :split], v[:, :split], inputs, local_bias, self.window)
            outputs.append(y if local_scale is None else y * local_scale)
        if split < self.n_head:
            y = global_attention(q[:, split:], k[:, split:], v[:, split:], inputs, global_bias,
                                 self.global_stride)
            outputs.append(y if global_scale is None else y * global_scale)
        return torch.cat(outputs, dim=1)

    def extra_repr(self) -> str:
        return (f"n_head={self.n_head}, local_heads={self.local_heads}, window={self.window}, "
                f"global_stride={self.global_stride}, gate={self.gate_logits is not None}")
