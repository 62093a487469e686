"""Everything positional that one stack (encoder or decoder) shares across its layers.

A `StackPositions` owns the stack's absolute position table, its rotary frequencies (the one
place its live rotary base is: a buffer that every rotary layer of the stack reads) and its
relative position bias table, and once per forward turns them into the `AttentionInputs` every
self-attention layer of the stack reads.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .attention import AttentionInputs
from ..config import StackOptions
from .learned_sinusoidal import LearnedSinusoidalEmbeddings, sinusoids
from .relative_bias import RelativePositionBias
from .rotary import RotaryEmbeddingWithRotation, RotaryFrequencies


class StackPositions(nn.Module):
    def __init__(self, n_ctx: int, n_state: int, n_head: int, options: StackOptions, *, causal: bool):
        super().__init__()
        self.n_ctx = n_ctx
        self.causal = causal
        self.options = options
        self.head_dim = n_state // n_head
        if options.positions == "sinusoidal":
            self.register_buffer("absolute", sinusoids(n_ctx, n_state), persistent=True)
        elif options.positions == "learned":
            self.absolute = nn.Parameter(torch.empty(n_ctx, n_state).normal_(std=0.01))
        elif options.positions == "learned_sinusoidal":
            self.absolute = LearnedSinusoidalEmbeddings(n_ctx, n_state,
                                                        checkpoint=options.checkpoint_positions)
        else:
            self.absolute = None
        self.rotary_frequencies = (RotaryFrequencies(self.head_dim, options.rotary_base)
                                   if options.rotary else None)
        self.relative_bias = (
            RelativePositionBias(n_head, bidirectional=not causal, num_buckets=options.bias_buckets,
                                 max_distance=options.bias_max_distance)
            if options.relative_bias else None
        )

    @property
    def rotary_base(self) -> Optional[float]:
        """The live base (the buffer every rotary layer of the stack reads), None without rotary."""
        return None if self.rotary_frequencies is None else float(self.rotary_frequencies.base)

    def set_rotary_base(self, value: float) -> None:
        """Change the base in place (copy_ into the existing buffers) and mirror it in the stack's
        options, which is what config.json records."""
        if self.rotary_frequencies is None:
            raise ValueError("this stack has no rotary embeddings")
        self.rotary_frequencies.set_base(value)
        self.options.rotary_base = float(self.rotary_frequencies.base)

    def layer_rotary(self) -> Optional[RotaryEmbeddingWithRotation]:
        """A fresh per-layer rotary module (own Givens angles, rotation and scale), or None."""
        if not self.options.rotary:
            return None
        return RotaryEmbeddingWithRotation(self.head_dim, givens=self.options.rotary_givens,
                                           rotation=self.options.rotary_rotation)

    def check_length(self, offset: int, length: int) -> None:
        if self.absolute is not None and offset + length > self.n_ctx:
            kind = "decoder" if self.causal else "encoder"
            raise ValueError(f"{kind} input reaches position {offset + length}, past its maximum "
                             f"context of {self.n_ctx} positions")

    def embed(self, offset: int, length: int, device: torch.device) -> Optional[Tensor]:
        """Absolute position embeddings [length, n_state] for positions offset..offset+length-1."""
        self.check_length(offset, length)
        if self.absolute is None:
            return None
        if isinstance(self.absolute, LearnedSinusoidalEmbeddings):
            return self.absolute(torch.arange(offset, offset + length, device=device))
        return self.absolute[offset:offset + length]

    def attention_inputs(self, n_query: int, offset: int, key_mask: Optional[Tensor]) -> AttentionInputs:
        """Rotary angles and relative bias for queries at offset.., keys at 0..offset+n_query-1,
        computed once here and shared by every layer of the stack. The bias is one value per head
        and relative position (O(T)); layers build the grids they need from it."""
        n_key = offset + n_query
        angles = None
        if self.rotary_frequencies is not None:
            angles = self.rotary_frequencies.angles(offset, n_query)
        bias = None
        if self.relative_bias is not None:
            bias = self.relative_bias(n_query, n_key, offset)
        return AttentionInputs(key_mask=key_mask, causal=self.causal, offset=offset,
                               rope_angles=angles, bias=bias)
