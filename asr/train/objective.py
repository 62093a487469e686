"""What training minimises: joint CTC/attention loss over a padded batch.

    loss = (1 - w) * attention cross-entropy + w * CTC        (w = loss.ctc_weight)

Both parts are means over the batch's real target tokens (padding and prompt positions carry
IGNORE_INDEX and count for nothing), so a batch of short and long transcripts weighs every
token alike. The CTC head is a linear layer on the encoder output over the text vocabulary plus
a blank; it makes the encoder align audio and text (measured here to matter most for
generalising on small data), and model directories keep it beside the weights
(ctc_head.safetensors) for joint CTC/attention decoding (asr.inference.ctc_prefix).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.collate import IGNORE_INDEX
from ..audio import FRAMES_PER_SECOND
from ..nn.model import ASRModel
from .attention_prior import attention_window


class TrainingModel(nn.Module):
    """The ASR model plus its CTC head; ``forward`` returns (loss, attention loss, CTC loss).

    One module, so that DDP and torch.compile wrap everything that has gradients."""

    def __init__(self, model: ASRModel, n_text: int, ctc_weight: float, label_smoothing: float,
                 dropout: float = 0.0, attention_window_sigma_s: float = 0.3, token_corruption: float = 0.0):
        super().__init__()
        self.model = model
        self.n_text = n_text  # CTC classes: text tokens 0..n_text-1, then the blank
        self.blank = n_text
        self.ctc_weight = ctc_weight
        self.label_smoothing = label_smoothing
        self.token_corruption = token_corruption
        self.ctc_head = nn.Linear(model.dims.n_audio_state, n_text + 1) if ctc_weight > 0 else None
        # strength of the cross-attention window, which the training loop sets for its first
        # steps: a tensor, so that torch.compile reads its value instead of guarding on it (a
        # Python float that changes every step recompiled the graph every step); the bool
        # changes once, when the window ends
        self.register_buffer("window_strength", torch.zeros(()), persistent=False)
        self.window_active = False
        self.window_sigma = attention_window_sigma_s * FRAMES_PER_SECOND / model.audio_stride  # in positions
        if dropout > 0:
            add_residual_dropout(model, dropout)

    @property
    def attention_window(self) -> float:
        return float(self.window_strength)

    @attention_window.setter
    def attention_window(self, strength: float) -> None:
        self.window_strength.fill_(strength)
        self.window_active = strength > 0

    def forward(self, mels: Tensor, n_frames: Tensor, tokens: Tensor, targets: Tensor,
                label_smoothing: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        smoothing = self.label_smoothing if label_smoothing is None else label_smoothing
        audio, audio_mask = self.model.embed_audio(mels, n_frames)
        cross_mask = audio_mask
        if self.window_active and self.training:
            cross_mask = attention_window(targets, self.model.encoder_lengths(n_frames), audio.shape[1], self.window_sigma,
                                          self.window_strength)
        if self.training and self.token_corruption > 0:
            tokens = corrupt_tokens(tokens, self.n_text, self.token_corruption)
        logits = self.model.logits(tokens, audio, cross_mask)
        attention = attention_loss(logits, targets, smoothing)
        if self.ctc_head is None:
            return attention, attention, torch.zeros_like(attention)
        ctc = self.ctc_loss(audio, self.model.encoder_lengths(n_frames), targets)
        loss = (1.0 - self.ctc_weight) * attention + self.ctc_weight * ctc
        return loss, attention, ctc

    def ctc_loss(self, audio: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
        # the decoder's targets minus prompt, padding and <|endoftext|>: the transcript's tokens
        text = (targets >= 0) & (targets < self.n_text)
        target_lengths = text.sum(dim=1)
        flat = targets[text]
        with torch.autocast(device_type=audio.device.type, enabled=False):
            log_probs = F.log_softmax(self.ctc_head(audio.float()), dim=-1).transpose(0, 1)
            total = F.ctc_loss(log_probs, flat, lengths, target_lengths, blank=self.blank,
                               reduction="sum", zero_infinity=True)
        return total / target_lengths.sum().clamp(min=1)


def corrupt_tokens(tokens: Tensor, n_text: int, p: float) -> Tensor:
    """Decoder inputs with each text token (id < n_text) replaced, with probability p, by a text
    token drawn uniformly; special tokens (start, timestamps, ...) stay. Only the inputs: the
    targets still name the true next token, so the decoder is trained to predict it from the
    audio when its history is wrong, as it is at inference after a mistake (a 4500-step probe:
    recipes/synth_en/RESULTS.md, "The in-loop validation read a stale output projection")."""
    replace = (tokens < n_text) & (torch.rand(tokens.shape, device=tokens.device) < p)
    return torch.where(replace, torch.randint_like(tokens, n_text), tokens)


def attention_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy per real target token (IGNORE_INDEX positions excluded), float32."""
    total = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                            label_smoothing=label_smoothing, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def add_residual_dropout(model: ASRModel, p: float) -> None:
    """Dropout on the output of every attention, cross-attention and MLP branch before it joins
    the residual stream (the usual Transformer dropout), as forward hooks: the saved weights and
    the inference code do not change, and in eval mode the hooks are the identity."""
    def hook(module, inputs, output):
        return F.dropout(output, p, module.training)

    for stack in (model.encoder, model.decoder):
        for block in stack.blocks:
            for branch in (block.attn, block.cross_attn, block.mlp):
                if branch is not None:
                    branch.register_forward_hook(hook)
