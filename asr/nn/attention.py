"""Multi-head self- and cross-attention over scaled_dot_product_attention.

A stack (encoder or decoder) computes the things every one of its layers shares once per
forward (padding mask, cache offset, rotary angles, relative position bias) and hands them
to each layer as an `AttentionInputs`. What the layers build from those (the combined SDPA mask
with the bias grid in it, a sliding-window band) is memoised there too, keyed by the builder
function and its arguments, so it is built once per stack and forward, whatever the number of
layers.

`MultiHeadAttention` is the one self-attention layer shape: a fused `qkv` projection, `project`
(rotary, KV cache), `attend` and an `out` projection. The other kinds (hybrid local + global
heads, a dynamic-convolution branch beside attention) subclass it, so every kind keeps the same
weight names (`attn.qkv.*`, `attn.out.*`) and Whisper's attention weights land on any of them.
`from_options` builds a layer from its stack's options; asr.nn.model.ATTENTION_LAYERS maps the
kind names to the classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import StackOptions
from .kv_cache import LayerCache
from .relative_bias import RelativeBias
from .rotary import RotaryEmbeddingWithRotation


@dataclass(frozen=True)
class AttentionInputs:
    """Per-stack, per-forward inputs shared by the self-attention layers of one stack.

    Frozen: the masks memoised on it (see `shared`) are built from these fields, so they must
    not change under them. `dataclasses.replace` gives a new object with an empty memo.
    """

    key_mask: Optional[Tensor] = None  # [batch, keys] bool, True = real frame (padding mask)
    causal: bool = False  # decoder: a query attends to keys at its position or before
    offset: int = 0  # position of the first query (the decoder's KV cache length)
    rope_angles: Optional[Tensor] = None  # [queries, head_dim // 2] float32, rotary only
    # relative position bias as one value per head and relative position; layers take the grid
    # or band they need from it (see RelativeBias)
    bias: Optional[RelativeBias] = None
    # what layers built from the fields above (see shared); not copied by replace()
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def shared(self, build: Callable[..., Optional[Tensor]], *args: Hashable) -> Optional[Tensor]:
        """build(self, *args) the first time a layer asks for it, the same tensor for every later
        layer asking with equal arguments.

        The memo key is the builder and its own arguments, so it names everything the result
        depends on: the fields of this (frozen) object plus `args`. A builder that grows a new
        argument gets it into the key by being called with it; no hand-written key can go stale.
        The autograd mode is part of the key too: a tensor built without grad would cut the bias
        table off from the gradient, and an inference tensor cannot be saved for backward.
        """
        if torch.compiler.is_compiling():
            # The key holds sizes (n_query, n_key), and hashing a symbolic size makes Dynamo
            # specialise the graph on its value: every new batch shape recompiled (~90 s a step on
            # 2 CPU cores). Traced, each layer builds its own copy and Inductor fuses the work.
            return build(self, *args)
        key = (build, args, torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        if key not in self._memo:
            self._memo[key] = build(self, *args)
        return self._memo[key]

    def dense_bias(self, heads: Optional[range] = None) -> Tensor:
        """[1, heads, queries, keys]: the whole bias grid of these heads, built at most once."""
        return self.shared(_dense_bias, heads)


def _dense_bias(inputs: AttentionInputs, heads: Optional[range]) -> Tensor:
    return inputs.bias.dense(heads)


def split_heads(x: Tensor, n_head: int) -> Tensor:
    """[batch, time, n_state] -> [batch, n_head, time, head_dim]"""
    batch, time, n_state = x.shape
    return x.view(batch, time, n_head, n_state // n_head).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[batch, n_head, time, head_dim] -> [batch, time, n_state]"""
    batch, n_head, time, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, time, n_head * head_dim)


def attention_mask(inputs: AttentionInputs, n_query: int, n_key: int, dtype: torch.dtype,
                   device: torch.device, heads: Optional[range] = None) -> Optional[Tensor]:
    """Padding, causal mask and the relative bias of `heads` (all by default) in one SDPA mask,
    or None; built once per stack and forward and shared by its layers.

    Boolean when there is no bias (True = may attend); otherwise an additive float mask in the
    queries' dtype, which SDPA requires.
    """
    # without a bias the mask is the same for every head range: one boolean mask for all
    heads = heads if inputs.bias is not None else None
    return inputs.shared(_dense_mask, n_query, n_key, dtype, device, heads)


def dense_allowed(inputs: AttentionInputs, n_query: int, n_key: int,
                  device: torch.device) -> Optional[Tensor]:
    """Padding and causal mask, [batch or 1, 1, queries or 1, keys] bool (True = may attend),
    or None when every key may be seen."""
    allowed = None
    if inputs.key_mask is not None:
        allowed = inputs.key_mask[:, None, None, :n_key]
    if inputs.causal and n_query > 1:
        query_pos = torch.arange(n_query, device=device)[:, None] + inputs.offset
        key_pos = torch.arange(n_key, device=device)[None, :]
        causal = (key_pos <= query_pos)[None, None]
        allowed = causal if allowed is None else allowed & causal
    return allowed


def _dense_mask(inputs: AttentionInputs, n_query: int, n_key: int, dtype: torch.dtype,
                device: torch.device, heads: Optional[range]) -> Optional[Tensor]:
    allowed = dense_allowed(inputs, n_query, n_key, device)
    if inputs.bias is None:
        return allowed
    bias = inputs.dense_bias(heads).to(dtype)
    if allowed is None:
        return bias
    return bias.masked_fill(~allowed, float("-inf"))


def scaled_dot_product(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:
    """softmax(q k^T / sqrt(h) + mask) v, as F.scaled_dot_product_attention computes it.

    A float mask that needs a gradient (it holds the learnable relative bias) sends SDPA on CPU
    to its generic math path, which scales q in a separate pass and runs a "safe" softmax with
    extra passes to zero fully masked rows. Written out here it is the same function with fewer
    passes (measured faster on CPU); our masks never mask a whole row (every real query sees
    itself or a real key, padded rows get a fallback key), so the plain softmax is safe.
    Everything else (no mask, boolean masks, constant float masks) goes to SDPA's fused kernel,
    and so does every call on a GPU: there the written-out path materialises the scores, in
    float32 under autocast (softmax autocasts up), [batch, heads, T, T] per layer, where SDPA's
    memory-efficient kernel takes the bias and its gradient without them. (On an H200 the seed
    model trained at 1.8x its float32 speed in bf16 with the written-out path, vanilla at 5.3x.)
    """
    if mask is None or mask.dtype == torch.bool or not mask.requires_grad or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class MultiHeadAttention(nn.Module):
    """Self-attention with one fused QKV projection, optional rotary and relative bias."""

    def __init__(self, n_state: int, n_head: int, rotary: Optional[RotaryEmbeddingWithRotation] = None):
        super().__init__()
        if n_state % n_head:
            raise ValueError(f"n_state={n_state} is not divisible by n_head={n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(n_state, 3 * n_state)
        self.out = nn.Linear(n_state, n_state)
        self.rotary = rotary

    @classmethod
    def from_options(cls, n_state: int, n_head: int, rotary: Optional[RotaryEmbeddingWithRotation],
                     options: StackOptions, causal: bool) -> "MultiHeadAttention":
        """The layer a stack with these options builds (plain attention has no options)."""
        return cls(n_state, n_head, rotary)

    def project(self, x: Tensor, inputs: AttentionInputs, cache: Optional[LayerCache]):
        """Queries, keys and values [batch, n_head, time, head_dim], rotary applied, and the
        keys/values of earlier steps prepended when decoding with a cache."""
        q, k, v = (split_heads(t, self.n_head) for t in self.qkv(x).chunk(3, dim=-1))
        if self.rotary is not None:
            q = self.rotary(q, inputs.rope_angles)
            k = self.rotary(k, inputs.rope_angles)
        if cache is not None:
            k, v = cache.append_self(k, v)
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, inputs: AttentionInputs) -> Tensor:
        mask = attention_mask(inputs, q.shape[2], k.shape[2], q.dtype, q.device)
        return scaled_dot_product(q, k, v, mask)

    def forward(self, x: Tensor, inputs: AttentionInputs, cache: Optional[LayerCache] = None) -> Tensor:
        q, k, v = self.project(x, inputs, cache)
        return self.out(merge_heads(self.attend(q, k, v, inputs)))


class CrossAttention(nn.Module):
    """Decoder-to-audio attention. No rotary: text positions and audio frames are different
    axes. Keys/values are computed once per utterance and kept in the cache."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.kv = nn.Linear(n_state, 2 * n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: Tensor, audio: Tensor, audio_mask: Optional[Tensor],
                cache: Optional[LayerCache] = None, group: int = 1) -> Tensor:
        """x [utterances * group, T, d] queries; audio [utterances, frames, d]."""
        q = split_heads(self.query(x), self.n_head)
        if cache is not None and cache.cross_key is not None:
            k, v = cache.cross_key, cache.cross_value
        else:
            k, v = (split_heads(t, self.n_head) for t in self.kv(audio).chunk(2, dim=-1))
            if cache is not None:
                # Each decoding step reads all of them. As views of the kv product a head's row
                # is 64 floats every 2 * n_state: SDPA's CPU kernel took 0.42 ms a layer over
                # 1500 frames at batch 1, against 0.19 ms from contiguous copies (Whisper tiny,
                # 2-core AMD EPYC, 2026-12-06); the copies are made once per window.
                k, v = k.contiguous(), v.contiguous()
                cache.cross_key, cache.cross_value = k, v
        if group > 1:
            q = fold_group(q, group)
        if audio_mask is None:
            mask = None
        elif audio_mask.dim() == 2:  # [batch, frames] padding mask, True = real frame
            mask = audio_mask[:, None, None, :]
        else:  # [batch, tokens, frames] additive (training's attention window, asr.train.attention_prior)
            mask = audio_mask[:, None].to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if group > 1:
            y = unfold_group(y, group)
        return self.out(merge_heads(y))


def cross_attention_scores(layer: "CrossAttention", x: Tensor, audio: Tensor) -> Tensor:
    """The layer's attention scores before the softmax, q k^T / sqrt(head_dim), [batch, n_head,
    tokens, frames]: what word-level timestamps align text with (asr.inference.word_timing)."""
    q = split_heads(layer.query(x), layer.n_head)
    k = split_heads(layer.kv(audio).chunk(2, dim=-1)[0], layer.n_head)
    return torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)


def fold_group(q: Tensor, group: int) -> Tensor:
    """[utterances * group, H, T, h] -> [utterances, H, group * T, h]: the hypotheses of one
    utterance become extra query rows against that utterance's keys."""
    rows, n_head, time, head_dim = q.shape
    q = q.view(rows // group, group, n_head, time, head_dim).transpose(1, 2)
    return q.reshape(rows // group, n_head, group * time, head_dim)


def unfold_group(y: Tensor, group: int) -> Tensor:
    utterances, n_head, group_time, head_dim = y.shape
    y = y.view(utterances, n_head, group, group_time // group, head_dim).transpose(1, 2)
    return y.reshape(utterances * group, n_head, group_time // group, head_dim)
