"""The bad-input corpus (issue 14): broken, odd and hostile inputs generated here, each with its
documented outcome: a transcript, or one error line naming the input (exit status 1), while
the other inputs of the same call are transcribed. Never a traceback, never a hang.

Loading the model dominates, so every audio case goes through ONE `asr transcribe` call (run
with the right to read and write anywhere dropped, since CI runs as root: the unreadable file
must stay unreadable); models, options and manifests have calls of their own, each under a
timeout. The table of outcomes is OUTCOMES below (and in the README)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import SAMPLE_RATE, load_audio
from asr.cli.main import main as cli_main

DATA = Path(__file__).resolve().parent.parent / "data" / "audio"
SPEECH = DATA / "goforward.flac"  # "go forward ten meters"
WORDS = ("go", "forward")  # what every decodable copy of SPEECH must say
CALL_TIMEOUT_S = 420  # the one call over every audio case (about 25 inputs)
SMALL_TIMEOUT_S = 120  # a call that must fail before any decoding
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
TRACEBACK = re.compile(r"Traceback|^\s+File \"", re.M)

# case -> (what the input is, the documented outcome): "text" (a transcript with WORDS),
# "same" (exactly the WAV's transcript), "no words" (a result with empty text), "partial" (a
# transcript of the part that is readable) or "error: <reason>" (one line, exit status 1)
OUTCOMES = {
    "zero_bytes.wav": ("zero-byte file", "error: empty file (0 bytes)"),
    "short_header.wav": ("WAV cut inside its header (20 bytes)", "error: not an audio file or unsupported format"),
    "short_data.wav": ("WAV whose data chunk stops at 60%", "partial"),
    "text.wav": ("a text file named .wav", "error: not an audio file or unsupported format"),
    "nan_inf.wav": ("float32 WAV with NaN and inf samples", "text"),  # + one warning line
    "one_sample.wav": ("a single sample", "no words"),
    "eight_channels.wav": ("8 channels", "text"),
    "rate_192k.wav": ("192 kHz", "text"),
    "rate_8k.wav": ("8 kHz", "text"),
    "pcm24.wav": ("24-bit PCM WAV", "same"),
    "float32.wav": ("float32 WAV", "same"),
    "mulaw.wav": ("mu-law WAV", "text"),
    "speech.mp3": ("mp3 of the same speech", "text"),
    "speech.ogg": ("ogg/vorbis of the same speech", "text"),
    "speech.flac": ("flac of the same speech", "same"),
    "speech.m4a": ("m4a (AAC, through FFmpeg) of the same speech", "text"),
    "cut.flac": ("FLAC cut at half its bytes", "error: decoding failed mid-file"),
    "cut.mp3": ("mp3 cut at half its bytes", "partial"),
    "silence_10min.wav": ("10 minutes of digital silence", "no words"),
    "noise_30s.wav": ("30 s of white noise", "no words"),
    "folder.wav": ("a directory named like a file (holding speech)", "text"),
    "empty_dir": ("an empty directory", "error: no audio files in this directory"),
    "locked.wav": ("a file without read permission", "error: permission denied"),
    "non_utf8": ("a file name with a \\xff byte", "text"),
    "loop.wav": ("a symlink loop", "error: Too many levels of symbolic links"),
    "missing.wav": ("a path that does not exist", "error: file not found"),
}


def normalised(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def ffmpeg(src: Path, dst: Path, *args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)],
                   check=True, timeout=60)


def build_corpus(root: Path) -> dict[str, Path]:
    """Every audio case of OUTCOMES under root; returns case -> the path given to the CLI."""
    speech = load_audio(SPEECH)
    rng = np.random.default_rng(14)
    wav = root / "reference.wav"
    sf.write(wav, speech, SAMPLE_RATE, subtype="PCM_16")
    paths = {}

    def put(name: str) -> Path:
        paths[name] = root / name
        return paths[name]

    put("zero_bytes.wav").write_bytes(b"")
    put("short_header.wav").write_bytes(wav.read_bytes()[:20])
    data = wav.read_bytes()
    put("short_data.wav").write_bytes(data[: int(len(data) * 0.6)])  # the header still claims 100%
    put("text.wav").write_text("this is not audio\n" * 50)
    bad = speech.copy()
    bad[[4000, 12000, 20000]] = [np.nan, np.inf, -np.inf]
    sf.write(put("nan_inf.wav"), bad, SAMPLE_RATE, subtype="FLOAT")
    sf.write(put("one_sample.wav"), speech[8000:8001], SAMPLE_RATE, subtype="PCM_16")
    sf.write(put("eight_channels.wav"), np.repeat(speech[:, None], 8, axis=1) * 0.5, SAMPLE_RATE)
    import soxr

    sf.write(put("rate_192k.wav"), soxr.resample(speech, SAMPLE_RATE, 192000), 192000)
    sf.write(put("rate_8k.wav"), soxr.resample(speech, SAMPLE_RATE, 8000), 8000)
    sf.write(put("pcm24.wav"), speech, SAMPLE_RATE, subtype="PCM_24")
    sf.write(put("float32.wav"), speech, SAMPLE_RATE, subtype="FLOAT")
    sf.write(put("mulaw.wav"), speech, SAMPLE_RATE, subtype="ULAW")
    ffmpeg(wav, put("speech.mp3"), "-b:a", "64k")
    ffmpeg(wav, put("speech.ogg"), "-c:a", "libvorbis")
    sf.write(put("speech.flac"), speech, SAMPLE_RATE, subtype="PCM_16")
    ffmpeg(wav, put("speech.m4a"), "-c:a", "aac")
    long_speech = np.concatenate([speech, np.zeros(SAMPLE_RATE // 2, np.float32), speech])
    sf.write(root / "long.flac", long_speech, SAMPLE_RATE, subtype="PCM_16")
    ffmpeg(root / "long.flac", root / "long.mp3", "-b:a", "64k")
    for name, source in (("cut.flac", root / "long.flac"), ("cut.mp3", root / "long.mp3")):
        data = source.read_bytes()
        put(name).write_bytes(data[: len(data) // 2])
    sf.write(put("silence_10min.wav"), np.zeros(600 * SAMPLE_RATE, np.int16), SAMPLE_RATE, subtype="PCM_16")
    noise = (0.1 * rng.standard_normal(30 * SAMPLE_RATE)).astype(np.float32)
    sf.write(put("noise_30s.wav"), noise, SAMPLE_RATE, subtype="PCM_16")
    put("folder.wav").mkdir()
    sf.write(root / "folder.wav" / "inside.wav", speech, SAMPLE_RATE)
    put("empty_dir").mkdir()
    sf.write(put("locked.wav"), speech, SAMPLE_RATE)
    os.chmod(paths["locked.wav"], 0)
    paths["non_utf8"] = Path(os.fsdecode(os.fsencode(root) + b"/caf\xff.wav"))
    sf.write(root / "tmp_non_utf8.wav", speech, SAMPLE_RATE)
    os.replace(root / "tmp_non_utf8.wav", paths["non_utf8"])
    os.symlink(root / "loop_b.wav", put("loop.wav"))
    os.symlink(root / "loop.wav", root / "loop_b.wav")
    paths["missing.wav"] = root / "missing.wav"
    return paths


def run_asr(args, cache: Path, unprivileged: bool = False, timeout: float = SMALL_TIMEOUT_S):
    prefix = UNPRIVILEGED if unprivileged else []
    env = dict(os.environ, ASR_CACHE_DIR=str(cache))
    return subprocess.run([*prefix, sys.executable, "-m", "asr", *map(os.fsencode, map(str, args))], env=env,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def cache():
    root = Path(tempfile.mkdtemp(prefix="asr-corpus-cache-"))
    mp = pytest.MonkeyPatch()
    mp.setenv("ASR_CACHE_DIR", str(root))
    try:
        from asr.store.registry import resolve

        resolve("tiny.en", quiet=True)
    finally:
        mp.undo()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus_call(cache, tmp_path_factory):
    """Every audio case in one `asr transcribe` call; (process, case -> result dict or error line)."""
    if UNPRIVILEGED and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): an unreadable file cannot be made")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to build the mp3/ogg/m4a cases (apt-get install ffmpeg)")
    root = tmp_path_factory.mktemp("corpus")
    paths = build_corpus(root)
    out = root / "out"
    proc = run_asr(["transcribe", root / "reference.wav", *paths.values(), "-o", out, "-f", "json", "--quiet"],
                   cache, unprivileged=True, timeout=CALL_TIMEOUT_S)
    stderr = proc.stderr.decode("utf-8", "replace")
    outcomes = {}
    for case, path in paths.items():
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        errors = [line for line in stderr.splitlines() if line.startswith(f"asr: error: {shown}:")]
        stem = "inside" if case == "folder.wav" else Path(path).stem
        result = out / (os.fsencode(stem).decode("utf-8", "surrogateescape") + ".json")
        outcomes[case] = errors[0] if errors else json.loads(result.read_text()) if result.exists() else None
    outcomes["reference"] = json.loads((out / "reference.json").read_text())
    return proc, stderr, outcomes


def test_the_call_ends_with_status_1_and_no_traceback(corpus_call):
    proc, stderr, _ = corpus_call
    assert proc.returncode == 1
    assert not TRACEBACK.search(stderr) and not TRACEBACK.search(proc.stdout.decode(errors="replace"))
    # every line on stderr is one of ours: an error or a warning naming an input
    assert all(line.startswith(("asr: error: ", "asr: warning: ")) for line in stderr.splitlines()), stderr


def test_the_reference_is_the_speech(corpus_call):
    _, _, outcomes = corpus_call
    assert all(word in normalised(outcomes["reference"]["text"]).split() for word in WORDS)


@pytest.mark.parametrize("case", list(OUTCOMES))
def test_case_has_its_documented_outcome(corpus_call, case):
    _, stderr, outcomes = corpus_call
    outcome, got = OUTCOMES[case][1], outcomes[case]
    assert got is not None, f"{case}: neither a result nor an error line"
    if outcome.startswith("error: "):
        assert isinstance(got, str) and outcome[len("error: "):] in got, got
        assert "\n" not in got
        return
    assert isinstance(got, dict), got
    words = normalised(got["text"]).split()
    if outcome == "no words":
        assert words == []
    elif outcome == "same":
        assert normalised(got["text"]) == normalised(outcomes["reference"]["text"])
    elif outcome == "text":
        assert all(word in words for word in WORDS), got["text"]
    elif outcome == "partial":  # what is readable: the first copy of the speech, at least in part
        assert "forward" in words or "go" in words, got["text"]
        assert got["duration"] < 6.5  # less than the whole (two copies and a pause)
    for segment in got["segments"]:
        assert 0 <= segment["start"] <= segment["end"] <= got["duration"]


def test_non_finite_samples_are_one_warning(corpus_call):
    _, stderr, _ = corpus_call
    warned = [line for line in stderr.splitlines() if line.startswith("asr: warning: ")]
    assert len(warned) == 1 and "nan_inf.wav: 3 non-finite samples" in warned[0]


# ------------------------------------------------------------------ models


def pickle_that_runs_code(path: Path, marker: Path) -> None:
    """A torch.save-style pickle whose loading would create `marker` (os.system)."""
    import pickle

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path.write_bytes(pickle.dumps({"model_state_dict": Evil()}))


def bad_models(root: Path, cache: Path) -> dict[str, tuple[Path, str]]:
    """case -> (--model value, the words its one error line must hold)."""
    good = cache / "tiny.en"
    cases = {"missing": (root / "nope", "no such model")}
    (root / "empty").mkdir()
    cases["empty dir"] = (root / "empty", "not an asr checkpoint")
    truncated = root / "truncated"
    truncated.mkdir()
    shutil.copy(good / "config.json", truncated)
    shutil.copy(good / "tokenizer.json", truncated)
    with open(good / "model.safetensors", "rb") as f:
        (truncated / "model.safetensors").write_bytes(f.read(1 << 20))
    cases["truncated weights"] = (truncated, str(truncated))
    broken = root / "broken_config"
    shutil.copytree(good, broken)
    (broken / "config.json").write_text('{"dims": {"n_mels": 80,')
    cases["broken config.json"] = (broken, "config.json")
    evil = root / "evil"
    evil.mkdir()
    shutil.copy(good / "config.json", evil)
    shutil.copy(good / "tokenizer.json", evil)
    pickle_that_runs_code(evil / "model.pt", root / "PWNED")
    cases["pickle .pt in a checkpoint dir"] = (evil, str(evil))
    pickle_that_runs_code(root / "evil.pt", root / "PWNED")
    cases["pickle .pt file"] = (root / "evil.pt", "not an asr checkpoint")
    return cases


def test_every_bad_model_is_one_line_and_runs_no_code(cache, tmp_path):
    failures = []
    for case, (model, words) in bad_models(tmp_path, cache).items():
        proc = run_asr(["transcribe", SPEECH, "--model", model], cache)
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        if proc.returncode != 1 or len(err) != 1 or not err[0].startswith("asr: error: ") or words not in err[0]:
            failures.append((case, proc.returncode, err[-3:]))
    assert failures == []
    assert not (tmp_path / "PWNED").exists()  # nothing unpickled


# ------------------------------------------------------------------ option values

BAD_OPTIONS = [["--batch-size", "0"], ["--beam-size", "-3"], ["--beam-size", "0"], ["--temperature", "-0.5"],
               ["--temperature", "0,inf"], ["--temperature-increment-on-fallback", "-1"], ["--seed", "x"],
               ["--output-format", "docx"], ["--task", "summarise"]]


@pytest.mark.parametrize("option", BAD_OPTIONS, ids=lambda o: " ".join(o))
def test_bad_option_value_is_a_usage_error_before_any_work(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["transcribe", str(SPEECH), *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("asr transcribe: error:") and option[0] in err[-1]


def test_unknown_language_is_one_line(cache):
    proc = run_asr(["transcribe", SPEECH, "--language", "xx"], cache)
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1 and "xx" in err[0] and err[0].startswith("asr: error: ")


# ------------------------------------------------------------------ manifests


def test_bad_manifest_lines_are_all_reported_and_skipped(tmp_path, capsys):
    shutil.copy(SPEECH, tmp_path / "a.flac")
    good = {"id": "good", "audio": "a.flac", "text": "go forward ten meters", "duration": 2.8}
    rows = [json.dumps(good).encode(),
            json.dumps({"id": "gone", "audio": "missing.flac", "text": "x", "duration": 1}).encode(),
            json.dumps({"id": "blank", "audio": "a.flac", "text": " ", "duration": 2.8}).encode(),
            json.dumps({"id": "keyless", "audio": "a.flac", "duration": 2.8}).encode(),
            b'{"id": "broken", "audio": "a.flac", "text": "go',
            json.dumps({"id": "good", "audio": "a.flac", "text": "again", "duration": 2.8}).encode(),
            b'{"id": "latin1", "audio": "a.flac", "text": "caf\xe9", "duration": 2.8}']
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\n".join(rows) + b"\n")
    assert cli_main(["data", "validate", str(manifest), "--quiet"]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    expected = {"missing file": "gone: ", "empty text": "blank: ", "missing key": "m.jsonl:4: missing key text",
                "invalid JSON": "m.jsonl:5: invalid JSON", "duplicate id": "m.jsonl:6: duplicate id 'good'",
                "non-UTF-8": "m.jsonl:7: not UTF-8"}
    assert {case: text in out for case, text in expected.items()} == dict.fromkeys(expected, True)
    assert "Traceback" not in out
    assert cli_main(["data", "prepare", str(manifest), str(tmp_path / "out.jsonl"), "--skip-bad", "--quiet"]) == 0
    assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == ["good"]
    capsys.readouterr()
    assert cli_main(["data", "prepare", str(manifest), str(tmp_path / "none.jsonl"), "--quiet"]) == 1
    assert not (tmp_path / "none.jsonl").exists()


def test_non_utf8_manifest_file_is_reported_per_line(tmp_path, capsys):
    manifest = tmp_path / "latin1.jsonl"
    manifest.write_bytes('{"id": "a", "audio": "a.flac", "text": "déjà vu", "duration": 1}\n'.encode("latin-1"))
    assert cli_main(["data", "validate", str(manifest), "--quiet", "--no-audio"]) == 1
    assert "latin1.jsonl:1: not UTF-8 text" in capsys.readouterr().err
