"""Validation: batched greedy decoding of the dev set with the KV cache, WER / CER on text
normalised by the package's normaliser (the one evaluation uses), and the dev loss.

Decoding length is capped per batch from the audio length (tokens_per_second x the longest
clip + extra_tokens): a hypothesis that loops runs to the cap, and a cap of half the text
context made one evaluation 10x slower than needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..evaluate.metrics import score_corpus
from ..inference.decoding import DecodingOptions, decode
from ..nn.ctc_head import CTCHead
from ..text.normalize import get_normalizer
from .data import FRAMES_PER_SECOND

RATE_MARGIN = 1.5  # decoding cap over the fastest speaking rate (tokens/s) seen in training


@dataclass
class ValidationResult:
    wer: float
    cer: float
    loss: float  # attention cross-entropy per token, no label smoothing
    utterances: int
    examples: list  # a few (reference, hypothesis) pairs for the log


def tokens_per_second(utterances, tokenizer) -> float:
    """The highest transcript rate in tokens per audio second, times a margin."""
    rates = [len(tokenizer.encode(u.text)) / max(u.duration, 0.1) for u in utterances]
    return RATE_MARGIN * max(rates)


def word_error_rates(references: list[str], hypotheses: list[str], normalizer: str) -> tuple[float, float]:
    normalize = get_normalizer(normalizer)
    score = score_corpus([normalize(r) for r in references], [normalize(h) for h in hypotheses])
    return score.wer, score.cer


@torch.no_grad()
def run_validation(training_model, loader, tokenizer, device, autocast_dtype, rate: float,
                   extra_tokens: int, normalizer: str, ctc_weight: float = 0.0) -> ValidationResult:
    """Greedy transcripts and dev loss over ``loader`` (batches in duration order); with
    ``ctc_weight`` > 0 the transcripts come from joint CTC/attention decoding."""
    model = training_model.model
    was_training = training_model.training
    training_model.eval()
    options_for = lambda n: DecodingOptions(language=tokenizer.languages[0], task="transcribe",  # noqa: E731
                                            without_timestamps=True, sample_len=n, ctc_weight=ctc_weight)
    if ctc_weight:  # the training head, read as joint decoding reads a saved model's
        model.ctc_head = CTCHead.of(training_model.ctc_head)
    references, hypotheses = [], []
    loss_sum, token_count = 0.0, 0
    try:
        for batch in loader:
            batch = batch.to(device)
            with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                _, attention, _ = training_model(batch.mels, batch.n_frames, batch.tokens, batch.targets,
                                                 label_smoothing=0.0)
                n = int((batch.targets >= 0).sum())
                loss_sum += float(attention) * n
                token_count += n
                audio, audio_mask = model.embed_audio(batch.mels, batch.n_frames)
                seconds = float(batch.n_frames.max()) / FRAMES_PER_SECOND
                cap = math.ceil(rate * seconds) + extra_tokens
                results = decode(model, tokenizer, audio, audio_mask, options_for(cap))
            references += batch.texts
            hypotheses += [r.text for r in results]
    finally:
        training_model.train(was_training)
        model.ctc_head = None
    wer, cer = word_error_rates(references, hypotheses, normalizer)
    return ValidationResult(wer=wer, cer=cer, loss=loss_sum / max(token_count, 1), utterances=len(references),
                            examples=list(zip(references, hypotheses))[:3])
