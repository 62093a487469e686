"""What fine-tuning needs from `asr train`: frozen parameter prefixes stay bit-identical, the
step-0 model is saved (RUN/initial), a prefix that names nothing is a one-line config error,
and the timestamp format trains (timestamp tokens in the targets, excluded from CTC)."""
from __future__ import annotations

import subprocess

import torch
from safetensors.torch import load_file

from test_train_resume import REPO, make_toy_corpus, train_command, write_config


def test_frozen_prefixes_stay_fixed_and_the_initial_model_is_saved(tmp_path):
    train, dev = make_toy_corpus(tmp_path / "data", n_train=8, n_dev=2)
    config = write_config(tmp_path / "toy.yaml", train, dev, max_steps=3)
    run_dir = tmp_path / "run"
    result = subprocess.run(train_command(config, "--run-dir", run_dir, "--set", "optim.freeze=[model.encoder]",
                                          "--set", "checkpoint.save_initial=true", "--set", "data.timestamp_prob=0.5"),
                            cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "frozen:" in result.stderr and "model.encoder" in result.stderr
    initial = load_file(run_dir / "initial" / "model.safetensors")
    final = load_file(run_dir / "final" / "model.safetensors")
    assert initial.keys() == final.keys()
    encoder = [k for k in initial if k.startswith("encoder.")]
    decoder = [k for k in initial if k.startswith("decoder.") and initial[k].is_floating_point()]
    assert encoder and decoder
    assert all(torch.equal(initial[k], final[k]) for k in encoder if not k.endswith("rotary_frequencies.inv_freq"))
    assert any(not torch.equal(initial[k], final[k]) for k in decoder)


def test_a_freeze_prefix_that_names_nothing_is_a_config_error(tmp_path):
    train, dev = make_toy_corpus(tmp_path / "data", n_train=4, n_dev=1)
    config = write_config(tmp_path / "toy.yaml", train, dev, max_steps=1)
    result = subprocess.run(train_command(config, "--run-dir", tmp_path / "run", "--set", "optim.freeze=[model.encoderr]"),
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("asr: error: ")
    assert "optim.freeze: 'model.encoderr' names no parameter" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctc_targets_leave_out_timestamp_tokens():
    from asr.config import ModelDimensions
    from asr.nn.model import ASRModel
    from asr.train.objective import TrainingModel

    dims = ModelDimensions(n_mels=80, n_audio_ctx=50, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                           n_vocab=40, n_text_ctx=16, n_text_state=16, n_text_head=2, n_text_layer=1)
    training = TrainingModel(ASRModel(dims), n_text=20, ctc_weight=0.5, label_smoothing=0.0)
    audio = torch.randn(1, 50, 16)
    lengths = torch.tensor([50])
    # <|0.00|> = 30 and <|0.40|> = 50 lie above the text vocabulary (n_text 20): not CTC labels
    stamped = torch.tensor([[30, 3, 4, 5, 50, 21]])
    plain = torch.tensor([[3, 4, 5, 21, -100, -100]])
    assert torch.allclose(training.ctc_loss(audio, lengths, stamped), training.ctc_loss(audio, lengths, plain))


def test_models_trained_from_pretrained_weights_keep_its_decoding_settings(tmp_path):
    """Whisper's suppressed tokens (config.json's "whisper" section) travel into every model a
    run saves from --init-from weights: without them the step-0 model decoded differently from
    the model it started from."""
    import json

    train, dev = make_toy_corpus(tmp_path / "data", n_train=6, n_dev=1)
    config = write_config(tmp_path / "toy.yaml", train, dev, max_steps=1)
    first = subprocess.run(train_command(config, "--run-dir", tmp_path / "pre"), cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    pretrained = tmp_path / "pre" / "final"
    saved = json.loads((pretrained / "config.json").read_text())
    settings = {"source_format": "test", "suppress_ids": [1, 2, 3]}
    (pretrained / "config.json").write_text(json.dumps({**saved, "whisper": settings}))
    second = subprocess.run(train_command(config, "--run-dir", tmp_path / "tuned", "--init-from", pretrained,
                                          "--set", "model.audio={}", "--set", "model.text={}",
                                          "--set", "checkpoint.save_initial=true", "--set", "checkpoint.every_steps=1"),
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    for model_dir in ("initial", "final", "checkpoints/step-00000001/model"):
        written = json.loads((tmp_path / "tuned" / model_dir / "config.json").read_text())
        assert written["whisper"] == settings, model_dir
        assert "train_config" in written
