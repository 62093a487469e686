"""Fine-tuned models shipped as deltas over a built-in one (asr.store.delta): the rebuilt model
has the fine-tuned weights (float16 rounding only where they are large matrices), the base's
untouched ones bit for bit; another base, or a damaged delta, is a one-line error; a shipped
delta resolves by name, is built once, and rebuilt when the shipped delta changes."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from asr.config import ModelDimensions
from asr.nn.model import ASRModel
from asr.store import registry
from asr.store.checkpoint import CheckpointError, save_checkpoint
from asr.store.delta import DELTA_FILE, HALF_MIN_ELEMENTS, build_from_delta, write_delta

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=20, n_audio_state=128, n_audio_head=2, n_audio_layer=1,
                       n_vocab=1100, n_text_ctx=16, n_text_state=128, n_text_head=2, n_text_layer=1)
TOKENIZER = {"kind": "test"}


def pair(tmp_path):
    """A base checkpoint and a 'fine-tuned' one: the decoder's blocks changed, the rest kept."""
    torch.manual_seed(0)
    base = ASRModel(DIMS)
    base_dir = save_checkpoint(base, tmp_path / "base", tokenizer=TOKENIZER)
    (base_dir / "tokenizer.json").write_text("{}")
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.startswith("decoder.blocks."):
                p.add_(0.01 * torch.randn_like(p))
    tuned_dir = save_checkpoint(base, tmp_path / "tuned", tokenizer=TOKENIZER, extra={"note": "tuned"})
    return base_dir, tuned_dir


def test_rebuilt_model_has_the_tuned_weights(tmp_path):
    base_dir, tuned_dir = pair(tmp_path)
    summary = write_delta(tuned_dir, base_dir, "tiny.en", tmp_path / "delta", description="a test model")
    assert summary["kept"] > 0 and summary["changed"] > 0
    built = build_from_delta(tmp_path / "delta", base_dir, tmp_path / "built")
    tuned, base, rebuilt = (load_file(d / "model.safetensors") for d in (tuned_dir, base_dir, built))
    assert rebuilt.keys() == tuned.keys()
    big = 0
    for name, want in tuned.items():
        if torch.equal(want, base[name]):
            assert torch.equal(rebuilt[name], base[name]), name
        elif want.numel() >= HALF_MIN_ELEMENTS:
            big += 1
            assert torch.equal(rebuilt[name], want.half().float()), name
        else:
            assert torch.equal(rebuilt[name], want), name
    assert big > 0  # the float16 path was exercised
    config = json.loads((built / "config.json").read_text())
    assert config["note"] == "tuned" and "delta" not in config
    assert config["built_from_delta"]["description"] == "a test model"
    assert (built / "tokenizer.json").read_text() == "{}"


def test_another_base_or_a_damaged_delta_is_refused(tmp_path):
    base_dir, tuned_dir = pair(tmp_path)
    write_delta(tuned_dir, base_dir, "tiny.en", tmp_path / "delta")
    other = load_file(base_dir / "model.safetensors")
    other["encoder.ln_post.weight"] += 1e-3
    save_file(other, base_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match="has other weights than the one this model was fine-tuned from"):
        build_from_delta(tmp_path / "delta", base_dir, tmp_path / "built")
    assert not (tmp_path / "built").exists()
    with open(tmp_path / "delta" / DELTA_FILE, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(CheckpointError, match="damaged"):
        build_from_delta(tmp_path / "delta", base_dir, tmp_path / "built")


def test_a_shipped_delta_resolves_by_name_and_is_rebuilt_when_it_changes(tmp_path, monkeypatch, capsys):
    base_dir, tuned_dir = pair(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    base_dir.rename(cache / "tiny.en")  # the base, as if already converted
    shipped = tmp_path / "models"
    write_delta(tuned_dir, cache / "tiny.en", "tiny.en", shipped / "tuned-test", description="tuned for the test")
    monkeypatch.setenv(registry.CACHE_ENV, str(cache))
    monkeypatch.setattr(registry, "SHIPPED_DIR", shipped)
    rows = {name: status for name, status, _ in registry.available()}
    assert rows["tuned-test"] == "shipped, built from tiny.en on first use"
    path = registry.resolve("tuned-test")
    assert path == cache / "tuned-test" and "building tuned-test" in capsys.readouterr().err
    assert registry.resolve("tuned-test") == path and capsys.readouterr().err == ""  # built once
    assert {name: status for name, status, _ in registry.available()}["tuned-test"] == "built"
    # a new release of the delta: the cached build is stale and rebuilt
    tuned = load_file(tuned_dir / "model.safetensors")
    tuned["decoder.ln.weight"] += 0.5
    save_file(tuned, tuned_dir / "model.safetensors")
    write_delta(tuned_dir, cache / "tiny.en", "tiny.en", shipped / "tuned-test", description="tuned again")
    registry.resolve("tuned-test")
    assert "building tuned-test" in capsys.readouterr().err
    rebuilt = load_file(cache / "tuned-test" / "model.safetensors")
    assert torch.equal(rebuilt["decoder.ln.weight"], tuned["decoder.ln.weight"])
