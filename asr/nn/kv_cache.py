"""Explicit decoding state: one object the caller owns and passes in, no forward hooks.

Each decoder layer keeps
- the keys and values of its self-attention for every token seen so far (keys after the
  rotary rotation, so they never need rotating again),
- the keys and values of its cross-attention, computed once per utterance from the encoder
  output and then reused for every token,
- for a dynamic-convolution layer, the last k-1 inputs of its causal convolution.

`offset` counts the tokens already processed; it is the position of the next token.

Self-attention keys/values live in preallocated buffers [batch, n_head, capacity, head_dim]:
a step writes its token into the next free position and attention reads a view of the filled
part, so nothing is concatenated (and copied whole) per step. A full buffer doubles, so a
decode of n tokens copies O(n) in all instead of O(n^2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor


INITIAL_CAPACITY = 64  # tokens a new self-attention buffer holds before it first doubles


@dataclass
class LayerCache:
    # preallocated [batch, n_head, capacity, head_dim]; the first `length` positions are filled
    key_buffer: Optional[Tensor] = None
    value_buffer: Optional[Tensor] = None
    length: int = 0
    cross_key: Optional[Tensor] = None  # [batch, n_head, audio_frames, head_dim]
    cross_value: Optional[Tensor] = None
    conv_state: Optional[Tensor] = None  # [batch, kernel_width - 1, n_state]
    capacity_hint: int = INITIAL_CAPACITY  # size of the first buffer (the decode's length cap)

    @property
    def self_key(self) -> Optional[Tensor]:
        """The self-attention keys so far, [batch, n_head, length, head_dim] (a view)."""
        return None if self.key_buffer is None else self.key_buffer[:, :, :self.length]

    @property
    def self_value(self) -> Optional[Tensor]:
        return None if self.value_buffer is None else self.value_buffer[:, :, :self.length]

    def append_self(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Write this step's keys/values after the filled positions; return views of all of
        them."""
        new = key.shape[2]
        if self.key_buffer is None:
            shape = (*key.shape[:2], max(self.capacity_hint, new), key.shape[3])
            self.key_buffer, self.value_buffer = key.new_empty(shape), value.new_empty(shape)
        elif self.length + new > self.key_buffer.shape[2]:
            self._grow(max(2 * self.key_buffer.shape[2], self.length + new))
        self.key_buffer[:, :, self.length:self.length + new] = key
        self.value_buffer[:, :, self.length:self.length + new] = value
        self.length += new
        return self.self_key, self.self_value

    def _grow(self, capacity: int) -> None:
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)
            grown = old.new_empty((*old.shape[:2], capacity, old.shape[3]))
            grown[:, :, :self.length] = old[:, :, :self.length]
            setattr(self, name, grown)

    def select_rows(self, index: Tensor, cross: bool) -> None:
        """Keep batch rows `index` (in that order) of every state; the cross-attention keys too
        when `cross`."""
        names = ["key_buffer", "value_buffer", "conv_state"] + (["cross_key", "cross_value"] if cross else [])
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            if name.endswith("_buffer"):  # only the filled part needs copying
                value = value[:, :, :self.length]
                kept = value.new_empty((len(index), *getattr(self, name).shape[1:]))
                torch.index_select(value, 0, index.to(value.device), out=kept[:, :, :self.length])
                setattr(self, name, kept)
            else:
                setattr(self, name, value.index_select(0, index.to(value.device)))


@dataclass
class DecoderCache:
    layers: list[LayerCache] = field(default_factory=list)
    offset: int = 0
    # Beam search decodes `group_size` hypotheses per utterance as consecutive batch rows. They
    # share the utterance's cross-attention keys/values, which are then stored once per
    # utterance (not per row) and the queries of a group attend to them together.
    group_size: int = 1

    @classmethod
    def empty(cls, n_layer: int, group_size: int = 1, capacity: int = INITIAL_CAPACITY) -> "DecoderCache":
        """``capacity``: tokens the self-attention buffers hold before they first grow (a
        decode that knows its length cap allocates it once)."""
        return cls(layers=[LayerCache(capacity_hint=capacity) for _ in range(n_layer)], group_size=group_size)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (beam search: follow the surviving hypotheses). With
        group_size > 1 the rows must stay inside their groups: shared cross keys stay put."""
        for layer in self.layers:
            layer.select_rows(index, cross=self.group_size == 1)

    def keep_utterances(self, index: Tensor) -> None:
        """Drop finished utterances from the batch: keep utterances `index` with all their
        group_size rows, and their (shared) cross-attention keys."""
        rows = (index[:, None] * self.group_size + torch.arange(self.group_size, device=index.device)).reshape(-1)
        for layer in self.layers:
            layer.select_rows(rows, cross=False)
            for name in ("cross_key", "cross_value"):
                value = getattr(layer, name)
                if value is not None:
                    setattr(layer, name, value.index_select(0, index.to(value.device)))
