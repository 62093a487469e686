"""The one atomic write (asr.store.atomic) and that every file the package writes goes through it."""
import os
import stat

import pytest
import torch

from asr.nn.model import ASRModel
from asr.nn.presets import preset
from asr.store import atomic
from asr.store.checkpoint import CONFIG_FILE, WEIGHTS_FILE, save_checkpoint


@pytest.fixture
def fsyncs(monkeypatch):
    """Record what os.fsync was called on (as paths, via /proc/self/fd)."""
    seen = []
    real = os.fsync

    def recording(fd):
        seen.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return seen


def test_write_is_fsynced_then_renamed_then_directory_fsynced(tmp_path, fsyncs):
    target = tmp_path / "out.txt"
    atomic.write_text_atomic(target, "hello\n")
    assert target.read_text() == "hello\n"
    # the temporary file (now gone) first, then the directory that holds the rename
    assert len(fsyncs) == 2
    assert fsyncs[0].startswith(str(tmp_path / ".out.txt."))
    assert fsyncs[1] == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")

    def half_then_fail(path):
        path.write_bytes(b"ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_new_files_follow_the_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_bytes_atomic(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644


def test_checkpoint_files_are_fsynced(tmp_path, fsyncs):
    dims, options = preset("whisper-tiny", n_vocab=300)
    torch.manual_seed(0)
    save_checkpoint(ASRModel(dims, options), tmp_path / "ckpt")
    synced = {os.path.basename(p).split(".")[1] for p in fsyncs if os.path.basename(p).startswith(".")}
    assert {WEIGHTS_FILE.split(".")[0], CONFIG_FILE.split(".")[0]} <= synced
    assert str(tmp_path / "ckpt") in fsyncs  # the directory entry too
