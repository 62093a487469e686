"""Ctrl-C (one SIGINT, or two in quick succession) while `asr transcribe` works: exit status
130, one line, no traceback fragment, and the files finished before it keep their outputs
(written atomically as each file completes)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import SAMPLE_RATE, load_audio

DATA = Path(__file__).resolve().parent.parent / "data" / "audio"
WAIT_S = 240  # for the first output, on a busy 2-core machine
LONG_S = 150  # the file still being decoded when the signal comes


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("ASR_CACHE_DIR", str(root))
    try:
        from asr.store.registry import resolve

        resolve("tiny.en", quiet=True)
    finally:
        mp.undo()
    return root


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    clips = [load_audio(DATA / f"librivox-{n}.flac") for n in ("0870", "0880", "0930")]
    speech = np.concatenate(clips)
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(path, np.tile(speech, int(np.ceil(LONG_S * SAMPLE_RATE / len(speech)))), SAMPLE_RATE)
    return path


def ctrl_c_deliverable() -> None:
    """In the child before exec: SIGINT back to its default action. A suite started in the
    background (`cmd &` in a script, nohup) runs with SIGINT ignored, children inherit that and
    Python then keeps it ignored, as it should for a background job; here the signal must arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signals", [1, 2])
def test_sigint_exits_130_with_one_line_and_keeps_finished_outputs(cache, long_file, tmp_path, signals):
    out = tmp_path / "out"
    env = dict(os.environ, ASR_CACHE_DIR=str(cache))
    proc = subprocess.Popen([sys.executable, "-m", "asr", "transcribe", str(DATA / "goforward.flac"), str(long_file),
                             "-o", str(out), "-f", "json", "--batch-size", "1", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_deliverable)
    finished = out / "goforward.json"
    deadline = time.monotonic() + WAIT_S
    while not finished.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert finished.exists() and proc.poll() is None, "the first file did not finish, or the call ended early"
    time.sleep(1.0)  # well inside the long file's decoding
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("still running 60 s after Ctrl-C")
    err = stderr.decode("utf-8", "replace")
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["asr: error: interrupted"], err
    assert "forward" in json.loads(finished.read_text())["text"].lower()  # complete and parseable
    assert not (out / "long.json").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary files left
