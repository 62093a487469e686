"""One streaming call batches the files (asr.inference.transcribe.transcribe_stream): a file
that breaks half-way through decoding costs no other file in its batch its transcript, results
come as each file finishes, and bad option values stop before any work."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import asr
from asr.audio import SAMPLE_RATE, AudioError, load_audio
from asr.cli.main import main as cli_main

DATA = Path(__file__).resolve().parent.parent / "data" / "audio"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ASR_CACHE_DIR", str(tmp_path_factory.mktemp("asr-cache")))
    yield asr.load_model("tiny.en", device="cpu", quiet=True)
    mp.undo()


@pytest.fixture
def broken_flac(tmp_path):
    """A FLAC whose header is fine but whose frames stop half-way: opening it works, decoding
    fails mid-file."""
    data = (DATA / "librivox-0870.flac").read_bytes()
    path = tmp_path / "broken.flac"
    path.write_bytes(data[: len(data) // 2] + b"\xff" * 4096 + data[len(data) // 2 + 4096: len(data) * 3 // 5])
    return path


def test_file_broken_mid_decode_costs_no_other_file_its_transcript(model, broken_flac, tmp_path):
    good = [DATA / "goforward.flac", DATA / "alsa-front-center.flac"]
    inputs = [good[0], broken_flac, good[1], tmp_path / "missing.wav"]
    alone = {str(p): model.transcribe(p)["text"] for p in good}  # independent of batching
    seen = dict(model.transcribe_stream(inputs, batch_size=8))
    assert sorted(seen) == [0, 1, 2, 3]
    assert seen[0]["text"] == alone[str(good[0])] and seen[2]["text"] == alone[str(good[1])]
    assert "forward" in seen[0]["text"].lower()
    assert isinstance(seen[3], AudioError) and "file not found" in str(seen[3])
    # the broken file: either decoding fails half-way (an AudioError naming it) or the decoder
    # recovers what is readable; it never takes the good files with it
    assert isinstance(seen[1], (AudioError, dict))
    if isinstance(seen[1], AudioError):
        assert str(broken_flac) in str(seen[1])


def test_results_stream_in_completion_order(model):
    # a short file in a batch with a long one (two 30 s windows) finishes first
    clips = [load_audio(DATA / f"librivox-{n}.flac") for n in ("0870", "0880", "0930")] * 4
    long_recording = np.concatenate(clips)
    assert len(long_recording) > 35 * SAMPLE_RATE
    inputs = [long_recording, DATA / "goforward.flac"]
    order = [index for index, _ in model.transcribe_stream(inputs, batch_size=2)]
    assert order == [1, 0]


def test_cli_writes_the_good_files_of_a_batch_with_a_broken_one(model, broken_flac, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli_main(["transcribe", str(DATA / "goforward.flac"), str(broken_flac), str(DATA / "alsa-rear-left.flac"),
                       "--output-dir", str(out), "--output-format", "json", "--quiet"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "forward" in json.loads((out / "goforward.json").read_text())["text"].lower()
    assert "rear" in json.loads((out / "alsa-rear-left.json").read_text())["text"].lower()
    assert status == (1 if "broken.flac" in captured.err else 0)


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--beam-size", "-3"], ["--beam-size", "0"],
                                    ["--batch-size", "two"]])
def test_bad_option_values_stop_before_any_work(option):
    # a whole process: argparse's usage error (exit 2), one error line, no model loaded
    proc = subprocess.run([sys.executable, "-m", "asr", "transcribe", str(DATA / "goforward.flac"), *option],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("usage:") is False
    assert option[0] in proc.stderr.strip().splitlines()[-1]
