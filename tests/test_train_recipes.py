"""The synth_en tiny recipe end to end on a tiny synthetic build, as CI runs it: within 40
steps a validation, a checkpoint and a change of the rotary base; then `asr plot`, `asr average`
(checked against the mean of the saved weights) and the final model directory transcribing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "synth_en"
TINY_HOURS = "0.02"  # 72 s of audio: ~20 training clips, a few dev clips

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def asr_train(*args, timeout=300):
    result = subprocess.run([sys.executable, "-m", "asr.cli.train", *map(str, args)], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@needs_espeak
def test_tiny_recipe_exercises_validation_checkpoint_and_base_change(tmp_path):
    corpus = tmp_path / "synth"
    build = subprocess.run([sys.executable, str(RECIPE / "prepare.py"), "--out", str(corpus), "--hours", TINY_HOURS,
                            "--seed", "5", "--no-install"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    run_dir = tmp_path / "run"
    asr_train("train", RECIPE / "conf" / "tiny.yaml", "--run-dir", run_dir,
              "--set", f"data.train={corpus / 'train.jsonl'}", "--set", f"data.dev={corpus / 'dev.jsonl'}",
              "--set", "run.progress=false", "--set", "run.threads=1")  # 2 threads on a busy 2-core box spin against each other: measured 4x slower than 1

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 41))
    for row in rows:
        assert {"step", "loss", "lr", "rotary_base"} <= row.keys()
    validated = [r["step"] for r in rows if "dev_wer" in r]
    assert validated and validated[0] <= 40 and 40 in validated
    assert len({r["rotary_base"] for r in rows}) > 1, "the rotary base never moved"
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    steps = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "step-00000020" in steps and "step-00000040" in steps

    # the model directory is an ordinary checkpoint: it loads and transcribes
    from asr.store.checkpoint import load_checkpoint, read_config

    model, config = load_checkpoint(run_dir / "final")
    assert config["train_config"]["run"]["max_steps"] == 40
    assert float(model.encoder.positions.rotary_frequencies.base) == rows[-1]["rotary_base_audio"]
    import asr

    clip = sorted((corpus / "dev").glob("*.flac"))[0]
    result = asr.load_model(run_dir / "final").transcribe(str(clip), temperature=0.0)
    assert isinstance(result["text"], str)
    # the running average keeps a CTC head too (averaged over the same steps, so not the last one)
    averaged, _ = load_checkpoint(run_dir / "averaged")
    assert averaged.ctc_head is not None and model.ctc_head is not None
    assert averaged.ctc_head.weight.shape == model.ctc_head.weight.shape
    assert not torch.equal(averaged.ctc_head.weight, model.ctc_head.weight)

    # asr plot: one PNG
    plot = subprocess.run([sys.executable, "-m", "asr.cli.train", "plot", str(run_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    png = run_dir / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # asr average: the elementwise mean of the two checkpoints' weights
    a, b = (run_dir / "checkpoints" / s for s in ("step-00000020", "step-00000040"))
    asr_train("average", a, b, "-o", tmp_path / "avg")
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    wavg = load_file(tmp_path / "avg" / "model.safetensors")
    for name, tensor in wavg.items():
        if "rotary_frequencies" in name:  # the newest base, frequencies recomputed from it
            assert torch.allclose(tensor, wb[name], rtol=1e-6), name
        elif tensor.is_floating_point():
            assert torch.allclose(tensor, (wa[name].double() + wb[name].double()).div(2).to(tensor.dtype),
                                  atol=1e-6), name
    assert read_config(tmp_path / "avg")["averaged_from"]
