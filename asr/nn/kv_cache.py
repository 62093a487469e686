"""Explicit decoding state: one object the caller owns and passes in, no forward hooks.

Each decoder layer keeps
- the keys and values of its self-attention for every token seen so far (keys after the
  rotary rotation, so they never need rotating again),
- the keys and values of its cross-attention, computed once per utterance from the encoder
  output and then reused for every token,
- for a dynamic-convolution layer, the last k-1 inputs of its causal convolution.

`offset` counts the tokens already processed; it is the position of the next token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor


@dataclass
class LayerCache:
    self_key: Optional[Tensor] = None  # [batch, n_head, tokens, head_dim]
    self_value: Optional[Tensor] = None
    cross_key: Optional[Tensor] = None  # [batch, n_head, audio_frames, head_dim]
    cross_value: Optional[Tensor] = None
    conv_state: Optional[Tensor] = None  # [batch, kernel_width - 1, n_state]

    def append_self(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Add this step's keys/values along the time axis; return all of them."""
        if self.self_key is None:
            self.self_key, self.self_value = key, value
        else:
            self.self_key = torch.cat([self.self_key, key], dim=2)
            self.self_value = torch.cat([self.self_value, value], dim=2)
        return self.self_key, self.self_value


@dataclass
class DecoderCache:
    layers: list[LayerCache] = field(default_factory=list)
    offset: int = 0
    # Beam search decodes `group_size` hypotheses per utterance as consecutive batch rows. They
    # share the utterance's cross-attention keys/values, which are then stored once per
    # utterance (not per row) and the queries of a group attend to them together.
    group_size: int = 1

    @classmethod
    def empty(cls, n_layer: int, group_size: int = 1) -> "DecoderCache":
        return cls(layers=[LayerCache() for _ in range(n_layer)], group_size=group_size)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (beam search: follow the surviving hypotheses). With
        group_size > 1 the rows must stay inside their groups: shared cross keys stay put."""
        names = ["self_key", "self_value", "conv_state"]
        if self.group_size == 1:
            names += ["cross_key", "cross_value"]
        for layer in self.layers:
            for name in names:
                value = getattr(layer, name)
                if value is not None:
                    setattr(layer, name, value.index_select(0, index.to(value.device)))
