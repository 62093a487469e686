"""A monotonic window on the decoder's cross-attention for the first steps of training.

Trained from scratch, the decoder first learns the transcripts as a language model and attends
to the audio almost uniformly; measured here (a 4+4-layer d=256 model on synth_en, characters,
CTC weight 0.5): after 1400 steps the CTC head read the audio at 42 % CER while the decoder's
dev loss was nearly the same with every utterance's audio swapped for another's (2.15 vs 2.27).
Learning *where* to look is the slow part. wav2letter's sequence-to-sequence recipes shorten
it by restricting the attention to a window around the position a constant speaking rate
predicts for the first epochs ("attention window pretraining", Hannun et al. 2019); this is that
idea as a soft window: for the j-th of n transcript tokens of a clip with L encoder positions,

    log prior(t) = -(t - c_j)^2 / (2 sigma^2),    c_j = (j + 0.5) / n * L,

added to every cross-attention score, with sigma in encoder positions (50 per second at audio_stride 2, 25 at 4). Prompt
positions (<|startoftranscript|> ...) get no window. The padding mask stays. After
``loss.attention_window_steps`` optimiser steps training goes on without it (with
``loss.attention_window_fade`` its strength, a factor on the log window, falls linearly from 1
to 0 over those steps instead of stopping at once), and inference never sees it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..data.collate import IGNORE_INDEX


def attention_window(targets: Tensor, audio_lengths: Tensor, n_audio: int, sigma: float,
                     strength: float | Tensor = 1.0) -> Tensor:
    """The additive cross-attention mask [batch, tokens, n_audio] (float32): the log window above
    on the real encoder positions, -inf on padding.

    targets: [batch, tokens] decoder targets (IGNORE_INDEX on prompt and padding positions);
    audio_lengths: [batch] real encoder positions per clip; sigma: window width in positions;
    strength: factor on the log window (0: padding mask only), a float or a 0-d tensor."""
    real = targets != IGNORE_INDEX
    n = real.sum(dim=1, keepdim=True).clamp(min=1)  # transcript tokens (with <|endoftext|>)
    j = (real.cumsum(dim=1) - 1).clamp(min=0)  # index of each real position within its transcript
    centre = (j + 0.5) / n * audio_lengths[:, None]  # [batch, tokens]
    t = torch.arange(n_audio, device=targets.device, dtype=torch.float32)
    prior = -strength * (t[None, None, :] - centre[:, :, None].float()) ** 2 / (2.0 * sigma * sigma)
    prior = torch.where(real[:, :, None], prior, torch.zeros_like(prior))  # no window on the prompt
    padding = t[None, None, :] >= audio_lengths[:, None, None]
    return prior.masked_fill(padding, float("-inf"))
