"""run.tensorboard: true writes the metrics as TensorBoard events, read back here with
TensorBoard's own EventAccumulator: every step's loss, learning rate and rotary base equal to
metrics.jsonl's, the validations' dev WER, and after a SIGKILL and a resume each step exactly once
(the resumed writer purges what the killed process logged past its checkpoint)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from test_train_resume import KILL_DURING_WRITE, REPO, make_toy_corpus, run, train_command, write_config

pytest.importorskip("tensorboard")


def scalars(run_dir) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    out = {}
    for tag in events.Tags()["scalars"]:
        values = events.Scalars(tag)
        steps = [v.step for v in values]
        assert len(steps) == len(set(steps)), f"{tag}: steps logged twice: {steps}"
        out[tag] = {v.step: v.value for v in values}
    return out


def test_tensorboard_events_match_metrics_across_a_kill_and_resume(tmp_path):
    train, dev = make_toy_corpus(tmp_path / "data")
    steps = 8  # killed in the checkpoint write of step 6 (checkpoints every 3 steps), resumed from 3
    config = write_config(tmp_path / "toy.yaml", train, dev, max_steps=steps)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-c", KILL_DURING_WRITE, "train", str(config), "--run-dir", str(run_dir),
               "--set", "run.tensorboard=true"]
    killed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run(train_command("--resume", run_dir))

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    logged = scalars(run_dir)
    for key in ("loss", "lr", "rotary_base", "grad_norm"):
        assert sorted(logged[key]) == list(range(1, steps + 1)), key
        for row in rows:
            assert logged[key][row["step"]] == pytest.approx(row[key], rel=1e-6, abs=1e-7), (key, row["step"])
    validations = {r["step"]: r["dev_wer"] for r in rows if "dev_wer" in r}
    assert validations and logged["dev_wer"] == pytest.approx(validations)


def test_tensorboard_missing_is_a_config_error(monkeypatch, tmp_path):
    from asr.train.config import ConfigError, load_config

    train, dev = make_toy_corpus(tmp_path / "data", n_train=2, n_dev=1)
    config = write_config(tmp_path / "toy.yaml", train, dev)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ConfigError, match="run.tensorboard.*pip install"):
        load_config(config, ["run.tensorboard=true"])
    assert load_config(config).run.tensorboard is False
