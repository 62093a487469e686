"""Issue 14, the rows of its table that live in the command line and the loaders: NaN/inf
samples, file names that are not UTF-8, --temperature not swallowing inputs, an --output-dir
that cannot be written (checked before any decoding), every bad manifest line reported, a
model cache readable as the umask says, progress by audio time, verbose lines naming files."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.audio import SAMPLE_RATE, load_audio
from asr.cli.main import main as cli_main

DATA = Path(__file__).resolve().parent.parent / "data" / "audio"
# CI runs as root, which may read and write anywhere: the capabilities that allow it are taken
# from the child (it stays root, the owner of the test's files, so it still finds its Python)
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
CLI_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def shared_cache():
    """A model cache anyone may enter (pytest's tmp folders are 0700), filled under umask 022."""
    root = Path(tempfile.mkdtemp(prefix="asr-shared-cache-"))
    os.chmod(root, 0o755)
    mp = pytest.MonkeyPatch()
    mp.setenv("ASR_CACHE_DIR", str(root))
    old = os.umask(0o022)
    try:
        from asr.store.registry import resolve

        resolve("tiny.en", quiet=True)
    finally:
        os.umask(old)
        mp.undo()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_cli(args, cache: Path, unprivileged: bool = False, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, ASR_CACHE_DIR=str(cache))
    if unprivileged and UNPRIVILEGED and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot drop the right to write anywhere")
    prefix = UNPRIVILEGED if unprivileged else []
    return subprocess.run([*prefix, sys.executable, "-m", "asr", *map(os.fsencode, args)], env=env, cwd=cwd,
                          capture_output=True, timeout=CLI_TIMEOUT_S)


def non_utf8(directory: Path, name: bytes) -> Path:
    return Path(os.fsdecode(os.fsencode(directory) + b"/" + name))


@pytest.fixture(scope="module")
def one_call(shared_cache, tmp_path_factory):
    """One CLI call over the inputs of several rows: a WAV with NaN/inf samples, a file named
    with a \\xff byte, a directory holding another, `--temperature 0` in front of the inputs."""
    root = tmp_path_factory.mktemp("inputs")
    speech = load_audio(DATA / "goforward.flac")
    bad = speech.copy()
    bad[SAMPLE_RATE] = np.nan  # one NaN at 1 s and one inf: the whole window went silent before
    bad[SAMPLE_RATE + 4000] = np.inf
    sf.write(root / "nan.wav", bad, SAMPLE_RATE, subtype="FLOAT")
    named = non_utf8(root, b"front\xffcenter.flac")
    shutil.copy(DATA / "alsa-front-center.flac", named)
    (root / "folder").mkdir()
    shutil.copy(DATA / "alsa-rear-left.flac", non_utf8(root / "folder", b"rear\xffleft.flac"))
    out = root / "out"
    proc = run_cli(["transcribe", "--temperature", "0", str(root / "nan.wav"), str(named), str(root / "folder"),
                    "--verbose", "--output-dir", str(out), "--output-format", "json"], shared_cache)
    return proc, out


def lines(stream: bytes) -> list[str]:
    return stream.decode("utf-8", "replace").replace("\r", "\n").splitlines()


def test_one_call_succeeds_without_a_traceback(one_call):
    proc, _ = one_call
    assert b"Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]


def test_non_finite_samples_are_replaced_and_counted(one_call):
    proc, out = one_call
    assert "forward" in json.loads((out / "nan.json").read_text())["text"].lower()
    warned = [line for line in lines(proc.stderr) if "warning" in line]
    assert len(warned) == 1 and "nan.wav" in warned[0] and "2 non-finite" in warned[0]


def test_load_audio_zeroes_non_finite_samples(tmp_path):
    x = np.linspace(-0.5, 0.5, 4000, dtype=np.float32)
    x[[10, 20, 30]] = [np.nan, np.inf, -np.inf]
    sf.write(tmp_path / "x.wav", x, SAMPLE_RATE, subtype="FLOAT")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = load_audio(tmp_path / "x.wav")
    np.testing.assert_array_equal(y, np.where(np.isfinite(x), x, 0.0))  # the reference: np.where by hand
    assert [str(w.message).endswith("3 non-finite samples (NaN/inf) replaced by 0") for w in caught] == [True]


def test_non_utf8_names_given_and_found_in_a_directory(one_call):
    proc, out = one_call
    front = json.loads(non_utf8(out, b"front\xffcenter.json").read_text())
    rear = json.loads(non_utf8(out, b"rear\xffleft.json").read_text())
    assert "front" in front["text"].lower() and "rear" in rear["text"].lower()
    assert any(line.startswith("front\\xffcenter") or "front\\xffcenter.flac:" in line for line in lines(proc.stdout))


def test_verbose_segment_lines_name_their_file(one_call):
    proc, _ = one_call
    segments = [line for line in lines(proc.stdout) if "-->" in line]
    assert len(segments) >= 3
    names = ("nan.wav: [", "front\\xffcenter.flac: [", "rear\\xffleft.flac: [")
    for line in segments:
        assert any(name in line for name in names), line
    for name in names:
        assert any(name in line for line in segments), name


def test_temperature_sequence_matches_whisper():
    from asr.cli.transcribe import fallback_temperatures

    # whisper: tuple(np.arange(t, 1.0 + 1e-6, increment)), or (t,) with no increment
    for t, inc in [(0.0, 0.2), (0.5, 0.2), (0.0, 0.3), (0.1, 0.25)]:
        np.testing.assert_allclose(fallback_temperatures((t,), inc), np.arange(t, 1.0 + 1e-6, inc))
    assert fallback_temperatures((0.0,), 0.0) == (0.0,)
    assert fallback_temperatures((0.0, 0.4, 0.8), 0.2) == (0.0, 0.4, 0.8)


@pytest.mark.parametrize("value", ["-1", "nan", "0,x"])
def test_bad_temperatures_are_usage_errors(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["transcribe", str(DATA / "goforward.flac"), "--temperature", value])
    assert exit_info.value.code == 2 and "--temperature" in capsys.readouterr().err


def test_output_dir_that_is_a_file_is_refused_before_decoding(shared_cache, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    proc = run_cli(["transcribe", str(DATA / "goforward.flac"), "-o", str(tmp_path / "taken")], shared_cache)
    err = lines(proc.stderr)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr and proc.stdout == b""
    assert [line for line in err if line.startswith("asr: error:")] == [
        f"asr: error: {tmp_path / 'taken'}: --output-dir is not a directory"]


def test_unwritable_output_dir_is_refused_before_decoding(shared_cache, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)  # may be entered, not written
    proc = run_cli(["transcribe", str(DATA / "goforward.flac"), "-o", str(locked / "sub")], shared_cache,
                   unprivileged=True)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr and proc.stdout == b""
    assert lines(proc.stderr)[-1] == f"asr: error: {locked / 'sub'}: cannot write outputs there (Permission denied)"


def test_cache_is_readable_as_the_umask_says(shared_cache):
    model = shared_cache / "tiny.en"
    assert oct(model.stat().st_mode & 0o777) == oct(0o755)  # made under umask 022
    for path in model.iterdir():
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path


def test_progress_moves_with_audio_time_on_one_long_file(shared_cache, tmp_path):
    clips = [load_audio(DATA / f"librivox-{n}.flac") for n in ("0870", "0880", "0930")]
    long_recording = np.concatenate(clips * 3)  # ~40 s: two windows
    sf.write(tmp_path / "long.wav", long_recording, SAMPLE_RATE)
    proc = run_cli(["transcribe", str(tmp_path / "long.wav")], shared_cache)
    assert proc.returncode == 0
    states = [tuple(map(int, m)) for m in re.findall(r"(\d+)/(\d+) s", proc.stderr.decode())]
    total = round(len(long_recording) / SAMPLE_RATE)
    assert states and all(t == total for _, t in states)
    assert any(0 < n < total for n, _ in states)  # part-way through the one file
    assert states[-1][0] == total


def write_manifest_lines(path: Path, rows: list) -> None:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))


def test_validate_and_skip_bad_report_every_bad_line(tmp_path, capsys):
    shutil.copy(DATA / "goforward.flac", tmp_path / "a.flac")
    rows = [{"id": "a", "audio": "a.flac", "text": "go forward ten meters", "duration": 2.8},
            b'{"id": "b", "audio": "a.flac", "text": "unterminated',
            {"id": "c", "audio": "a.flac", "duration": 2.8},
            b'{"id": "d", "audio": "a.flac", "text": "caf\xe9", "duration": 2.8}',
            {"id": "e", "audio": "missing.flac", "text": "hello", "duration": 1.0},
            {"id": "a", "audio": "a.flac", "text": "again", "duration": 2.8}]
    write_manifest_lines(tmp_path / "m.jsonl", rows)
    assert cli_main(["data", "validate", str(tmp_path / "m.jsonl"), "--quiet"]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    for number in (2, 3, 4, 6):
        assert f"m.jsonl:{number}:" in captured.err
    assert "at at" not in out and "missing key text" in out and "not UTF-8" in out
    assert "audio file not found" in out and "duplicate id" in out
    status = cli_main(["data", "prepare", str(tmp_path / "m.jsonl"), str(tmp_path / "out.jsonl"), "--skip-bad",
                       "--quiet"])
    assert status == 0
    kept = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [k["id"] for k in kept] == ["a"]
