"""Training config: typed YAML, unknown keys and wrong types named with their file, --set
overrides, the resolved config round-trips; precision choice; learning-rate schedules."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from asr.train.config import ConfigError, config_from_dict, dump_config, load_config
from asr.train.precision import choose_precision
from asr.train.schedule import lr_factor

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*/conf/*.yaml"))


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_values_are_typed_and_overrides_applied(tmp_path):
    path = write(tmp_path, "data: {train: a.jsonl}\noptim: {lr: 1}\naugment: {speed_factors: [1, 1.1]}\n")
    config = load_config(path, ["optim.lr=3e-4", "data.dev=b.jsonl", "dynamic_base.enabled=false",
                                "loss.ctc_weight=0.5"])
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)
    assert config.data.dev == "b.jsonl" and config.dynamic_base.enabled is False
    assert config.loss.ctc_weight == 0.5
    assert config.augment.speed_factors == (1.0, 1.1)
    # the resolved config reads back to the same thing
    again = config_from_dict(yaml.safe_load(dump_config(config)), "resolved")
    assert again == config


@pytest.mark.parametrize("text, overrides, named", [
    ("data: {train: a, trian: b}\n", [], "data.trian: unknown key"),
    ("data: {train: a}\noptim: {lr: fast}\n", [], "optim.lr: expected float, got 'fast'"),
    ("data: {train: a}\nrun: {max_steps: 1.5}\n", [], "run.max_steps: expected int"),
    ("data: {train: a}\nrun: {progress: 1}\n", [], "run.progress: expected bool"),
    ("data: {train: a}\nbogus: {x: 1}\n", [], "bogus: unknown key"),
    ("data: {train: a}\n", ["optim.nope=1"], "optim.nope: unknown key"),
    ("data: {train: a}\n", ["precision=float8"], "precision: 'float8' is not one of"),
    ("data: {train: a}\n", ["dynamic_base.stacks=[audio, middle]"], "dynamic_base.stacks"),
    ("data: {train: a}\n", ["loss.ctc_weight=2"], "loss.ctc_weight: must be in [0, 1]"),
    ("data: {train: a}\n", ["loss.token_corruption=1"], "loss.token_corruption: must be in [0, 1)"),
    ("data: {train: a}\n", ["loss.ctc_weight=0", "validation.ctc_weight=0.3"], "validation.ctc_weight: joint"),
    ("data: {train: a}\n", ["data.target_style=shouting"], "data.target_style: 'shouting' is not one of"),
    ("data: {train: a}\n", ["data.pad_frames_multiple=0"], "data.pad_frames_multiple: must be in [1, 3000]"),
    ("data: {train: a}\n", ["data.pad_tokens_multiple=1000"], "data.pad_tokens_multiple: must be in [1, 448]"),
    ("optim: {lr: 0.1}\n", [], "data.train: no training manifest"),
    ("data: {train: a}\nmodel: {audio_stride: 3}\n", [], "model: audio_stride must be one of (2, 4)"),
])
def test_bad_config_names_the_key_and_the_file(tmp_path, text, overrides, named):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert message.startswith(str(path)) or message.startswith("--set"), message
    assert named in message and "\n" not in message


def test_cli_reports_config_errors_in_one_line(tmp_path):
    path = write(tmp_path, "data: {train: a}\nschedule: {kind: linear}\n")
    result = subprocess.run([sys.executable, "-m", "asr.cli.train", "train", str(path), "--run-dir",
                             str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "schedule.kind" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing done


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.parent.parent.name + "/" + p.name for p in RECIPES])
def test_shipped_recipes_load(recipe):
    load_config(recipe)


def test_schedules_against_their_formulas():
    from asr.train.config import ScheduleConfig

    cosine = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert [lr_factor(s, cosine, 110) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert math.isclose(lr_factor(60, cosine, 110), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert math.isclose(lr_factor(110, cosine, 110), 0.1)
    inverse = ScheduleConfig(kind="inverse_sqrt", warmup_steps=16)
    assert math.isclose(lr_factor(63, inverse, 1000), math.sqrt(16 / 64))
    assert lr_factor(500, ScheduleConfig(kind="constant", warmup_steps=0), 1000) == 1.0


def test_precision_auto_follows_the_cpu_flags():
    dtype, why = choose_precision("auto", torch.device("cpu"))
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    native = bool({"avx512_bf16", "amx_bf16"} & set(flags))
    assert (dtype == torch.bfloat16) == native, why
    assert ("bfloat16" if native else "float32") in why
    assert choose_precision("float32", torch.device("cpu"))[0] is None
    with pytest.raises(ValueError, match="CUDA"):
        choose_precision("float16", torch.device("cpu"))


def init_from_tiny_en_error(tmp_path, model_yaml: str) -> tuple[Path, str]:
    """The recipe written and `asr train --init-from tiny.en` run on it: (recipe path, the one
    line of the error it must stop with)."""
    path = write(tmp_path, f"data: {{train: {REPO / 'data' / 'samples.jsonl'}}}\nmodel: {model_yaml}\n")
    env = {**__import__("os").environ, "ASR_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "asr", "train", str(path), "--run-dir", str(tmp_path / "run"),
                             "--init-from", "tiny.en"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return path, result.stderr.strip().splitlines()[-1]


def test_init_from_with_extras_that_cannot_start_as_identity_is_one_line(tmp_path):
    # a hybrid encoder whose window does not cover Whisper's 1500 positions cannot reproduce
    # tiny.en at step 0: refused before any training, in one line naming the recipe
    path, line = init_from_tiny_en_error(tmp_path, "{audio: {attention: hybrid, window: 16}}")
    assert str(path) in line and "cannot add these extras to tiny.en" in line


def test_init_from_with_another_audio_stride_is_one_line(tmp_path):
    # tiny.en's convolutions were trained at 20 ms positions: a stride-4 stem cannot reuse them
    path, line = init_from_tiny_en_error(tmp_path, "{audio_stride: 4}")
    assert str(path) in line and "model.audio_stride: 4, but tiny.en was trained with 2" in line
