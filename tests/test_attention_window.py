"""The cross-attention window of early training (asr.train.attention_prior): its values against
a naive per-element formula, what it does to the decoder (a token only reads audio near where a
constant speaking rate puts it), that it is off in evaluation, and that `asr train` applies it
for exactly loss.attention_window_steps steps."""
from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from asr.config import ModelDimensions, ModelOptions
from asr.data.collate import IGNORE_INDEX
from asr.nn.model import ASRModel
from asr.train.attention_prior import attention_window
from asr.train.objective import TrainingModel, attention_loss
from test_train_resume import REPO, make_toy_corpus, train_command, write_config


def naive_window(targets: list[list[int]], lengths: list[int], n_audio: int, sigma: float) -> list:
    out = []
    for row, length in zip(targets, lengths):
        real = [k for k, t in enumerate(row) if t != IGNORE_INDEX]
        rows = []
        for k in range(len(row)):
            values = []
            for t in range(n_audio):
                if t >= length:
                    values.append(-math.inf)
                elif k in real:
                    centre = (real.index(k) + 0.5) / len(real) * length
                    values.append(-((t - centre) ** 2) / (2 * sigma ** 2))
                else:
                    values.append(0.0)
            rows.append(values)
        out.append(rows)
    return out


def test_window_matches_the_formula_element_by_element():
    targets = [[IGNORE_INDEX, IGNORE_INDEX, 5, 6, 7, IGNORE_INDEX, IGNORE_INDEX],
               [IGNORE_INDEX, 1, 2, 3, 4, 9, 8]]
    lengths, n_audio, sigma = [7, 11], 11, 1.7
    got = attention_window(torch.tensor(targets), torch.tensor(lengths), n_audio, sigma)
    expected = torch.tensor(naive_window(targets, lengths, n_audio, sigma))
    assert got.shape == expected.shape
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(got), finite)
    torch.testing.assert_close(got[finite], expected[finite], rtol=1e-6, atol=1e-6)


def tiny_training_model() -> TrainingModel:
    dims = ModelDimensions(n_mels=8, n_audio_ctx=64, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=40, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    # one decoder layer: a token's logits then see the audio only through its own cross-attention
    # (in deeper stacks it also reads the unwindowed prompt positions through self-attention)
    return TrainingModel(ASRModel(dims), n_text=20, ctc_weight=0.0, label_smoothing=0.0,
                         attention_window_sigma_s=0.01)  # half an encoder position: a very narrow window


def test_with_the_window_a_token_reads_only_the_audio_near_its_place():
    training = tiny_training_model()
    model = training.model
    tokens = torch.tensor([[21, 3, 4, 5, 6]])
    targets = torch.tensor([[IGNORE_INDEX, 4, 5, 6, 20]])  # 4 transcript tokens over 40 positions
    audio = torch.randn(1, 40, 32)
    lengths = torch.tensor([40])
    mask = attention_window(targets, lengths, 40, training.window_sigma)
    base = model.logits(tokens, audio, mask)
    # token 2 (the second of four) sits at position (1 + 0.5) / 4 * 40 = 15
    far = audio.clone()
    far[:, 25:] += 5.0
    near = audio.clone()
    near[:, 15] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(model.logits(tokens, far, mask)[0, 2], base[0, 2], rtol=0, atol=1e-5)
        assert (model.logits(tokens, near, mask)[0, 2] - base[0, 2]).abs().max() > 1e-2
        # without the window the same far change reaches it
        plain = model.logits(tokens, audio, None)
        assert (model.logits(tokens, far, None)[0, 2] - plain[0, 2]).abs().max() > 1e-2


def test_the_window_is_used_in_training_mode_only():
    training = tiny_training_model()
    mels = torch.randn(2, 8, 50)
    n_frames = torch.tensor([50, 36])
    tokens = torch.tensor([[21, 3, 4, 5], [21, 7, 8, 0]])
    targets = torch.tensor([[IGNORE_INDEX, 4, 5, 20], [IGNORE_INDEX, 8, 20, IGNORE_INDEX]])
    training.train()
    training.attention_window = 0.0
    plain = training(mels, n_frames, tokens, targets)[0]
    training.attention_window = 1.0
    windowed = training(mels, n_frames, tokens, targets)[0]
    assert abs(windowed.item() - plain.item()) > 1e-4
    training.eval()
    with torch.no_grad():
        torch.testing.assert_close(training(mels, n_frames, tokens, targets)[0], plain.detach())


@pytest.mark.parametrize("window, expected", [
    (["loss.attention_window_steps=2"], {1: 1.0, 2: 1.0, 3: 0.0, 4: 0.0}),
    (["loss.attention_window_steps=4", "loss.attention_window_fade=true"], {1: 1.0, 2: 0.75, 3: 0.5, 4: 0.25}),
])
def test_asr_train_applies_the_window_for_the_configured_steps(tmp_path, window, expected):
    train, dev = make_toy_corpus(tmp_path / "data", n_train=8, n_dev=2)
    config = write_config(tmp_path / "toy.yaml", train, dev, max_steps=4)
    run_dir = tmp_path / "run"
    result = subprocess.run(train_command(config, "--run-dir", run_dir, *[x for o in window for x in ("--set", o)]),
                            cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    flags = {r["step"]: r["attention_window"] for r in rows if r.get("loss") is not None}
    assert flags == expected


def test_strength_scales_the_log_window():
    targets = torch.tensor([[IGNORE_INDEX, 3, 4, 5]])
    full = attention_window(targets, torch.tensor([9]), 12, 2.0)
    half = attention_window(targets, torch.tensor([9]), 12, 2.0, strength=0.5)
    finite = torch.isfinite(full)
    torch.testing.assert_close(half[finite], 0.5 * full[finite])
    assert torch.equal(torch.isfinite(half), finite)


@pytest.mark.parametrize("audio_stride, positions_per_second", [(2, 50), (4, 25)])
def test_window_width_is_in_seconds_whatever_the_encoder_rate(audio_stride, positions_per_second):
    dims = ModelDimensions(n_mels=8, n_audio_ctx=64, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=40, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1)
    training = TrainingModel(ASRModel(dims, ModelOptions(audio_stride=audio_stride)), n_text=20, ctc_weight=0.0,
                             label_smoothing=0.0, attention_window_sigma_s=0.3)
    assert training.window_sigma == pytest.approx(0.3 * positions_per_second)


def test_a_fading_window_does_not_recompile_the_training_forward():
    # the fade changes the strength every step; torch.compile must read it as data, not guard on
    # it (as a Python float it recompiled every step: 80 s a step on the synth_en small recipe)
    from torch._dynamo.testing import CompileCounter

    training = tiny_training_model().train()
    mels = torch.randn(2, 8, 50)
    n_frames = torch.tensor([50, 36])
    tokens = torch.tensor([[21, 3, 4, 5], [21, 7, 8, 0]])
    targets = torch.tensor([[IGNORE_INDEX, 4, 5, 20], [IGNORE_INDEX, 8, 20, IGNORE_INDEX]])
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(training, backend=counter, dynamic=False)
    for strength in (1.0, 0.75, 0.5, 0.25):
        training.attention_window = strength
        got = compiled(mels, n_frames, tokens, targets)[0]
        # the same strength through the eager path (the window is applied: the loss moves with it)
        mask = attention_window(targets, training.model.encoder_lengths(n_frames), 25, training.window_sigma,
                                strength)
        audio, _ = training.model.embed_audio(mels, n_frames)
        expected = attention_loss(training.model.logits(tokens, audio, mask), targets)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 1
    training.attention_window = 0.0  # the window ends: one more graph, without it
    compiled(mels, n_frames, tokens, targets)
    assert counter.frame_count == 2
