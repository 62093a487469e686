"""Token corruption of the decoder's inputs (loss.token_corruption): which tokens it replaces,
how often (a binomial bound, not the code's own count), that the targets and evaluation are
untouched, and that at 0 it draws no random numbers (runs without it reproduce exactly)."""
from __future__ import annotations

import math

import torch

from asr.config import ModelDimensions
from asr.data.collate import IGNORE_INDEX
from asr.nn.model import ASRModel
from asr.train.objective import TrainingModel, corrupt_tokens

N_TEXT = 20  # ids 0..19 are text, 20.. special (as the tiny tokenizer of these tests)


def test_only_text_tokens_change_at_the_rate_asked():
    torch.manual_seed(0)
    tokens = torch.randint(0, 30, (64, 200))  # a third special
    p = 0.3
    out = corrupt_tokens(tokens, N_TEXT, p)
    special = tokens >= N_TEXT
    assert torch.equal(out[special], tokens[special])
    assert bool(((out[~special] >= 0) & (out[~special] < N_TEXT)).all())
    n = int((~special).sum())
    # a replacement draws the same token again with probability 1 / N_TEXT
    rate = p * (1 - 1 / N_TEXT)
    changed = int((out != tokens).sum())
    assert abs(changed - n * rate) < 5 * math.sqrt(n * rate * (1 - rate))
    # replacements are spread over the whole text vocabulary, not one id
    assert len(set(out[out != tokens].tolist())) == N_TEXT


def tiny(token_corruption: float) -> TrainingModel:
    dims = ModelDimensions(n_mels=8, n_audio_ctx=16, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=40, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    return TrainingModel(ASRModel(dims), n_text=N_TEXT, ctc_weight=0.0, label_smoothing=0.0,
                         token_corruption=token_corruption)


def batch():
    torch.manual_seed(1)
    mels = torch.randn(2, 8, 32)
    n_frames = torch.tensor([32, 32])
    tokens = torch.tensor([[21, 3, 4, 5, 6, 7, 8], [21, 9, 10, 11, 12, 13, 14]])
    targets = torch.tensor([[IGNORE_INDEX, 4, 5, 6, 7, 8, 20], [IGNORE_INDEX, 10, 11, 12, 13, 14, 20]])
    return mels, n_frames, tokens, targets


def test_training_loss_changes_evaluation_and_zero_do_not():
    plain, noisy = tiny(0.0), tiny(0.5)
    args = batch()
    with torch.no_grad():
        reference = plain.train()(*args)[0]
        assert torch.equal(noisy.eval()(*args)[0], plain.eval()(*args)[0])
        state = torch.get_rng_state()
        assert torch.equal(plain.train()(*args)[0], reference)
        assert torch.equal(torch.get_rng_state(), state)  # p = 0 drew nothing
        losses = {float(noisy.train()(*args)[0]) for _ in range(4)}
    assert float(reference) not in losses and len(losses) > 1
    assert torch.equal(args[2], batch()[2])  # the caller's tokens are not modified in place
