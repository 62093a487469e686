"""Bad input stops before training with one line naming it: a manifest with missing audio
(unless --skip-bad), a run directory that cannot be written. A full disk during a checkpoint
write keeps the previous checkpoint and stops with a message; NaN losses are skipped and N in a
row stop the run."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr.train import checkpoints as checkpoints_module
from asr.train.checkpoints import verify
from asr.train.config import load_config
from asr.train.loop import TrainingStopped, train
from test_train_resume import REPO, make_toy_corpus, write_config


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    train_manifest, dev = make_toy_corpus(root / "data", n_train=12, n_dev=2)
    return root, train_manifest, dev


def cli(*args):
    return subprocess.run([sys.executable, "-m", "asr.cli.train", "train", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("asr: error:")]


def test_missing_audio_is_an_error_up_front_or_dropped_with_skip_bad(toy):
    root, train_manifest, dev = toy
    lines = train_manifest.read_text().splitlines()
    broken = train_manifest.parent / "broken.jsonl"
    entry = json.loads(lines[0])
    entry.update(id="ghost", audio="nowhere/ghost.wav")
    broken.write_text("\n".join(lines + [json.dumps(entry)]) + "\n")
    config = write_config(root / "broken.yaml", broken, dev, max_steps=2)

    result = cli(config, "--run-dir", root / "run-broken")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert str(broken) in line and "1 of 13" in line and "ghost" in line and "--skip-bad" in line
    assert not (root / "run-broken" / "metrics.jsonl").exists()  # no training happened

    result = cli(config, "--run-dir", root / "run-skip", "--skip-bad")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dropped 1 utterances with missing or unreadable audio" in result.stderr


def test_unwritable_run_directory_fails_before_training(toy):
    root, train_manifest, dev = toy
    config = write_config(root / "ok.yaml", train_manifest, dev, max_steps=2)
    blocker = root / "a-file"
    blocker.write_text("not a directory")
    result = cli(config, "--run-dir", blocker / "run")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "run directory is not writable" in line and str(blocker / "run") in line


def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one(toy):
    root, train_manifest, dev = toy
    config = load_config(write_config(root / "disk.yaml", train_manifest, dev, max_steps=9))
    config.run.progress = False
    calls = []

    def fills_the_disk(directory, model, tokenizer, *rest):
        calls.append(directory)
        if len(calls) == 2:  # the step-6 checkpoint: half written, then no space left
            checkpoints_module.save_checkpoint(model, directory / "model", tokenizer=tokenizer)
            raise OSError(errno.ENOSPC, "No space left on device")
        checkpoints_module.write_checkpoint_files(directory, model, tokenizer, *rest)

    run_dir = root / "run-disk"
    with pytest.raises(TrainingStopped) as info:
        train(config, run_dir, write_checkpoint_files=fills_the_disk)
    message = str(info.value)
    assert "No space left on device" in message and "step-00000003 is intact" in message
    assert "\n" not in message
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step-00000003"]  # the partial write is gone, the previous one untouched
    assert verify(run_dir / "checkpoints" / "step-00000003") is None


def test_nan_losses_are_skipped_and_too_many_in_a_row_stop(toy, monkeypatch):
    root, train_manifest, dev = toy
    config = load_config(write_config(root / "nan.yaml", train_manifest, dev, max_steps=20))
    config.run.progress = False
    config.optim.max_bad_steps = 3
    from asr.train.objective import TrainingModel

    original = TrainingModel.forward
    calls = []

    def poisoned(self, *args, **kwargs):
        loss, attention, ctc = original(self, *args, **kwargs)
        calls.append(1)
        if self.training and len(calls) > 4:  # steps 1-4 fine, every step after gives NaN
            loss = loss * torch.tensor(float("nan"))
        return loss, attention, ctc

    monkeypatch.setattr(TrainingModel, "forward", poisoned)
    run_dir = root / "run-nan"
    with pytest.raises(TrainingStopped, match="3 steps in a row had a NaN/inf loss.*last good checkpoint: step 3"):
        train(config, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if not r.get("skipped")] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if r.get("skipped")] == [5, 5, 5]


def test_max_minutes_stops_after_the_step_that_runs_out_with_a_checkpoint(toy):
    root, train_manifest, dev = toy
    config = load_config(write_config(root / "time.yaml", train_manifest, dev, max_steps=50))
    config.run.progress = False
    config.run.max_minutes = 0.0  # out of time as soon as the first step is done
    run_dir = root / "run-time"
    summary = train(config, run_dir)
    assert summary["step"] == 1
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-00000001"]
    assert "dev_wer" in json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_plot_creates_its_output_folder_and_names_an_unwritable_one(tmp_path):
    import json

    from asr.errors import InputError
    from asr.train.plot import plot_runs

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [{"step": s, "loss": 5.0 - s, "lr": 1e-3, "rotary_base": 1e4, "rotary_base_audio": 1e4} for s in (1, 2, 3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = plot_runs([run_dir], tmp_path / "new" / "folder" / "curve.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError) as err:
        plot_runs([run_dir], Path("/proc/no-such-dir/curve.png"))
    assert "/proc/no-such-dir/curve.png" in str(err.value) and "\n" not in str(err.value)
