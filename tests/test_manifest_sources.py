"""Tests for asr.data: manifests, the four sources, up-front validation and the CLI.

Every fixture is built here (tones written with soundfile), and results are checked
against what the fixture holds: the ids, texts and speakers written into it, and
durations from the number of samples written, never against the code's own output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# The Hugging Face tests use local data only; never wait on the network for the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from asr.data import ManifestError, Utterance, read_manifest, validate, write_manifest  # noqa: E402
from asr.cli.data import add_data_parser, main  # noqa: E402
from asr.data.sources import SourceError, detect_source_type, from_librispeech  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def tone(n_samples: int, freq: float = 440.0, sr: int = SR) -> np.ndarray:
    t = np.arange(n_samples) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, n_samples: int, sr: int = SR, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(n_samples, sr=sr), sr, **kwargs)
    return path


def audio_bytes(n_samples: int, sr: int, fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, tone(n_samples, sr=sr), sr, format=fmt)
    return buffer.getvalue()


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ----------------------------------------------------------------------------- LibriSpeech fixture

# (split, speaker, chapter) -> [(utterance id, transcript, samples)]
LIBRI = {
    ("dev-clean", "19", "198"): [
        ("19-198-0000", "NORTHANGER ABBEY", 8000),
        ("19-198-0001", "CHAPTER ONE NO ONE WHO HAD EVER SEEN CATHERINE", 12000),
    ],
    ("dev-clean", "19", "201"): [("19-201-0000", "HER FATHER WAS A CLERGYMAN", 4800)],
    ("dev-clean", "26", "495"): [
        ("26-495-0000", "IT IS A TRUTH UNIVERSALLY ACKNOWLEDGED", 6400),
        ("26-495-0001", "THAT A SINGLE MAN IN POSSESSION", 3200),
    ],
    ("dev-clean", "26", "496"): [("26-496-0000", "OF A GOOD FORTUNE", 9600)],
    ("test-clean", "61", "70968"): [("61-70968-0000", "HE BEGAN A CONFUSED COMPLAINT", 5600)],
}


@pytest.fixture
def librispeech(tmp_path) -> Path:
    """tmp/LibriSpeech/{dev-clean,test-clean}/SPEAKER/CHAPTER/... as distributed."""
    root = tmp_path / "LibriSpeech"
    for (split, speaker, chapter), items in LIBRI.items():
        chapter_dir = root / split / speaker / chapter
        for uid, _, n in items:
            write_audio(chapter_dir / f"{uid}.flac", n)
        lines = "".join(f"{uid} {text}\n" for uid, text, _ in items)
        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text(lines)
    return root


def expected_libri(split: str) -> dict:
    return {
        uid: {"text": text, "duration": n / SR, "speaker": speaker, "group": split,
              "file": f"{split}/{speaker}/{chapter}/{uid}.flac"}
        for (s, speaker, chapter), items in LIBRI.items() if s == split
        for uid, text, n in items
    }


def check_libri_manifest(out: Path, root: Path, split: str):
    rows = read_lines(out)
    expected = expected_libri(split)
    assert sorted(r["id"] for r in rows) == sorted(expected)
    for row in rows:
        want = expected[row["id"]]
        assert row["text"] == want["text"]
        assert row["speaker"] == want["speaker"] and row["group"] == want["group"]
        assert row["duration"] == pytest.approx(want["duration"], abs=1e-3)
        assert not os.path.isabs(row["audio"])  # relative to the manifest's directory
        assert os.path.samefile(out.parent / row["audio"], root / want["file"])


def test_librispeech_split_directory(librispeech, tmp_path, capsys):
    out = tmp_path / "manifests" / "dev.jsonl"
    rc, stdout, _ = run(capsys, "prepare", librispeech / "dev-clean", out, "--quiet")
    assert rc == 0
    assert "wrote 6 utterances" in stdout
    check_libri_manifest(out, librispeech, "dev-clean")
    # read back through the API: absolute paths to the very files of the fixture
    for u in read_manifest(out):
        assert u.audio_path.is_absolute() and u.audio_path.is_file()


def test_librispeech_root_with_split(librispeech, tmp_path, capsys):
    out = tmp_path / "test.jsonl"
    rc, _, _ = run(capsys, "prepare", librispeech, out, "--split", "test-clean", "--source-type", "librispeech", "--quiet")
    assert rc == 0
    check_libri_manifest(out, librispeech, "test-clean")


def test_librispeech_root_holds_every_split(librispeech):
    utterances = from_librispeech(librispeech)
    groups = {u.id: u.group for u in utterances}
    assert groups == {uid: split for (split, _, _), items in LIBRI.items() for uid, _, _ in items}
    with pytest.raises(SourceError, match="no split directory 'train-clean-100'"):
        from_librispeech(librispeech, split="train-clean-100")


def test_librispeech_recipe_script(librispeech, tmp_path):
    out_dir = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "PREPARE_ARGS": "--quiet"}
    proc = subprocess.run(
        ["bash", str(REPO / "recipes" / "librispeech" / "prepare.sh"), str(librispeech), str(out_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["dev-clean.jsonl", "test-clean.jsonl"]
    check_libri_manifest(out_dir / "dev-clean.jsonl", librispeech, "dev-clean")
    check_libri_manifest(out_dir / "test-clean.jsonl", librispeech, "test-clean")


# ----------------------------------------------------------------------------- folder source

FOLDER = [  # file name, text, speaker, samples
    ("a.wav", "Hello there, world!", "alice", 8000),
    ("clips/b.flac", "Numbers like 42 count too.", "bob", 4000),
    ("clips/c.ogg", "Ogg Vorbis works.", "", 16000),
]


@pytest.mark.parametrize("metadata", ["metadata.csv", "metadata.jsonl"])
def test_folder_source(tmp_path, capsys, metadata):
    import csv

    folder = tmp_path / "folder"
    for name, _, _, n in FOLDER:
        write_audio(folder / name, n)
    if metadata.endswith(".csv"):
        with open(folder / metadata, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "text", "speaker"])
            writer.writerows((name, text, speaker) for name, text, speaker, _ in FOLDER)
    else:
        rows = [{"file_name": name, "text": text, "speaker": speaker or None} for name, text, speaker, _ in FOLDER]
        (folder / metadata).write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert detect_source_type(str(folder)) == "folder"
    out = tmp_path / "out" / "folder.jsonl"
    rc, _, _ = run(capsys, "prepare", folder, out, "--quiet")
    assert rc == 0
    rows = {r["id"]: r for r in read_lines(out)}
    assert sorted(rows) == ["a", "clips/b", "clips/c"]
    for name, text, speaker, n in FOLDER:
        row = rows[name.rsplit(".", 1)[0]]
        assert row["text"] == text
        assert row.get("speaker") == (speaker or None)
        assert row["duration"] == pytest.approx(n / SR, abs=1e-3)
        assert os.path.samefile(out.parent / row["audio"], folder / name)


def test_folder_missing_column(tmp_path, capsys):
    folder = tmp_path / "folder"
    write_audio(folder / "a.wav", 1600)
    (folder / "metadata.csv").write_text("file_name,transcript\na.wav,hello\n")
    rc, _, err = run(capsys, "prepare", folder, tmp_path / "o.jsonl", "--quiet")
    assert rc == 1
    assert f"{folder / 'metadata.csv'}:2: column 'text' missing" in err


# ----------------------------------------------------------------------------- manifests


def test_manifest_source_is_rerooted(tmp_path, capsys):
    src_dir = tmp_path / "corpus"
    write_audio(src_dir / "wav" / "one.wav", 3200)
    write_audio(src_dir / "wav" / "two.wav", 4800)
    lines = [
        {"id": "one", "audio": "wav/one.wav", "text": "first one", "duration": 0.2, "speaker": "s1", "lang": "en"},
        {"id": "two", "audio": "wav/two.wav", "text": "second", "duration": 9.9, "group": "g"},
    ]
    (src_dir / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    out = tmp_path / "elsewhere" / "deeper" / "out.jsonl"
    rc, _, _ = run(capsys, "prepare", src_dir / "in.jsonl", out, "--quiet")
    assert rc == 0
    rows = read_lines(out)
    assert [r["id"] for r in rows] == ["one", "two"]
    assert rows[0]["audio"] == "../../corpus/wav/one.wav"
    assert os.path.samefile(out.parent / rows[1]["audio"], src_dir / "wav" / "two.wav")
    assert rows[0]["lang"] == "en" and rows[0]["speaker"] == "s1" and rows[1]["group"] == "g"
    # durations are measured, not copied: the source said 9.9 for a 0.3 s file
    assert rows[1]["duration"] == pytest.approx(0.3, abs=1e-3)


def test_write_and_read_manifest(tmp_path):
    write_audio(tmp_path / "audio" / "x.wav", 1600)
    out = tmp_path / "m.jsonl"
    u = Utterance(id="x", audio=str(tmp_path / "audio" / "x.wav"), text="é ü", duration=0.1, speaker="s")
    assert write_manifest(out, [u]) == 1
    assert read_lines(out) == [{"id": "x", "audio": "audio/x.wav", "text": "é ü", "duration": 0.1, "speaker": "s"}]
    (back,) = read_manifest(out)
    assert back.audio_path == tmp_path / "audio" / "x.wav"
    assert (back.text, back.duration, back.speaker, back.group) == ("é ü", 0.1, "s", None)

    # a failed write (no duration) leaves the old manifest as it was, and no temp files
    before = out.read_bytes()
    with pytest.raises(ValueError, match="no duration"):
        write_manifest(out, [Utterance(id="y", audio="y.wav", text="y")])
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "m.jsonl"]


GOOD = '{"id": "a", "audio": "a.wav", "text": "hi", "duration": 1.0}'


@pytest.mark.parametrize(
    "bad_line, line_no, message",
    [
        ('{"id": "b", "audio": "b.wav", "text": "hi", "duration": 1.0', 2, "invalid JSON"),
        ('["not", "an", "object"]', 2, "expected a JSON object"),
        ('{"id": "b", "audio": "b.wav", "duration": 1.0}', 2, "missing key text"),
        ('{"id": "b", "audio": "b.wav", "text": "hi", "duration": -1}', 2, "'duration' must be a number"),
        ('{"id": "b", "audio": "b.wav", "text": "hi", "duration": "1.0"}', 2, "'duration' must be a number"),
        ('{"id": "", "audio": "b.wav", "text": "hi", "duration": 1.0}', 2, "'id' must be a non-empty string"),
        ('{"id": "b", "audio": "b.wav", "text": 5, "duration": 1.0}', 2, "'text' must be a string"),
        ('{"id": "b", "audio": "b.wav", "text": "x", "duration": 1, "speaker": 7}', 2, "'speaker' must be"),
        (GOOD, 3, "duplicate id 'a' (first on line 1)"),
    ],
)
def test_malformed_manifest_line(tmp_path, capsys, bad_line, line_no, message):
    path = tmp_path / "bad.jsonl"
    blank = "\n" if line_no == 3 else ""  # a blank line still counts as a line
    path.write_text(GOOD + "\n" + blank + bad_line + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    text = str(info.value)
    assert text.startswith(f"{path}:{line_no}: ") and message in text and "\n" not in text

    rc, _, err = run(capsys, "validate", path)
    assert rc == 1 and f"{path}:{line_no}: " in err
    rc, _, err = run(capsys, "prepare", path, tmp_path / "out.jsonl")
    assert rc == 1 and f"{path}:{line_no}: " in err
    assert not (tmp_path / "out.jsonl").exists()


# ----------------------------------------------------------------------------- validation


@pytest.fixture
def planted(tmp_path) -> tuple[Path, dict, set]:
    """A manifest with good utterances and one of each problem; returns
    (manifest, {bad id: words its report line must contain}, good ids)."""
    d = tmp_path / "set"
    write_audio(d / "good1.wav", 8000)
    write_audio(d / "good2.flac", 4000)
    (d / "corrupt.flac").write_bytes(b"this is not audio at all, just text pretending to be FLAC" * 20)
    write_audio(d / "empty.wav", 0)  # a valid WAV header with no samples
    write_audio(d / "long.flac", 31 * 8000, sr=8000)  # 31 s, over the 30 s limit
    write_audio(d / "silent_text.wav", 1600)
    write_audio(d / "punct_text.wav", 1600)
    entries = [
        ("good1", "good1.wav", "A perfectly fine utterance."),
        ("missing", "nowhere.wav", "the file is not there"),
        ("corrupt", "corrupt.flac", "bytes that are not audio"),
        ("good2", "good2.flac", "Another fine one 2."),
        ("empty", "empty.wav", "no samples in this file"),
        ("long", "long.flac", "much too long"),
        ("notext", "silent_text.wav", "   "),
        ("punct", "punct_text.wav", "?! ..."),
    ]
    lines = [json.dumps({"id": i, "audio": a, "text": t, "duration": 1.0}) for i, a, t in entries]
    (d / "set.jsonl").write_text("\n".join(lines) + "\n")
    problems = {
        "missing": ["nowhere.wav", "not found"],
        "corrupt": ["corrupt.flac"],
        "empty": ["empty.wav", "empty audio"],
        "long": ["long.flac", "too long", "31.00 s"],
        "notext": ["empty transcript"],
        "punct": ["no letters or digits"],
    }
    return d / "set.jsonl", problems, {"good1", "good2"}


def test_validate_lists_every_planted_problem(planted):
    manifest, problems, good = planted
    report = validate(read_manifest(manifest))
    assert not report.ok and report.n_checked == 8
    assert report.bad_ids == set(problems)
    for item in report.bad:
        for word in problems[item.id]:
            assert word in item.line, (item.id, item.line)
    # readable audio has its duration measured
    durations = dict(zip([u.id for u in read_manifest(manifest)], report.durations))
    assert durations["good1"] == pytest.approx(0.5) and durations["long"] == pytest.approx(31.0)
    assert durations["missing"] is None and durations["corrupt"] is None


def test_validate_without_audio_uses_manifest_fields(planted):
    manifest, _, _ = planted
    report = validate(read_manifest(manifest), check_audio=False)
    assert report.bad_ids == {"notext", "punct"}  # every manifest duration says 1.0
    assert validate(read_manifest(manifest), max_duration=0.5, check_audio=False).n_checked == 8


def test_prepare_reports_and_stops(planted, tmp_path, capsys):
    manifest, problems, _ = planted
    out = tmp_path / "out.jsonl"
    rc, stdout, err = run(capsys, "prepare", manifest, out, "--quiet")
    assert rc == 1
    assert not out.exists()  # nothing written when there are problems
    assert "--skip-bad" in err
    report_lines = [line.strip() for line in stdout.splitlines() if line.startswith("  ")]
    assert len(report_lines) == len(problems)  # one line per bad utterance
    for uid, words in problems.items():
        (line,) = [x for x in report_lines if x.startswith(f"{uid}: ")]
        assert all(w in line for w in words), line


def test_prepare_skip_bad_drops_exactly_the_bad(planted, tmp_path, capsys):
    manifest, problems, good = planted
    out = tmp_path / "out.jsonl"
    rc, stdout, _ = run(capsys, "prepare", manifest, out, "--skip-bad", "--quiet")
    assert rc == 0
    assert f"skipped {len(problems)} bad utterances" in stdout
    rows = read_lines(out)
    assert {r["id"] for r in rows} == good
    assert {r["id"]: r["duration"] for r in rows} == {"good1": 0.5, "good2": 0.25}


def test_max_duration_option(planted, tmp_path, capsys):
    manifest, problems, good = planted
    out = tmp_path / "out.jsonl"
    rc, stdout, _ = run(capsys, "prepare", manifest, out, "--skip-bad", "--max-duration", "0.3", "--quiet")
    assert rc == 0 and f"skipped {len(problems) + 1} bad utterances" in stdout
    assert [r["id"] for r in read_lines(out)] == ["good2"]  # good1 is 0.5 s
    rc, stdout, _ = run(capsys, "prepare", manifest, out, "--skip-bad", "--max-duration", "0", "--quiet")
    assert rc == 0 and {r["id"] for r in read_lines(out)} == good | {"long"}


def test_validate_command(planted, tmp_path, capsys):
    manifest, problems, _ = planted
    rc, stdout, _ = run(capsys, "validate", manifest, "--quiet")
    assert rc == 1
    assert f"{len(problems)} of 8 utterances have problems" in stdout
    good_manifest = tmp_path / "good.jsonl"
    run(capsys, "prepare", manifest, good_manifest, "--skip-bad", "--quiet")
    rc, stdout, _ = run(capsys, "validate", good_manifest, "--quiet")
    assert rc == 0 and "all 2 utterances are fine" in stdout


def test_duplicate_ids_from_a_source(tmp_path, capsys):
    folder = tmp_path / "f"
    write_audio(folder / "a.wav", 1600)
    write_audio(folder / "b.wav", 1600)
    (folder / "metadata.csv").write_text("file_name,text,id\na.wav,one,same\nb.wav,two,same\n")
    out = tmp_path / "o.jsonl"
    rc, stdout, _ = run(capsys, "prepare", folder, out, "--quiet")
    assert rc == 1 and "same: " in stdout and "duplicate id" in stdout
    rc, stdout, _ = run(capsys, "prepare", folder, out, "--quiet", "--skip-bad")
    assert rc == 0 and [r["text"] for r in read_lines(out)] == ["one"]  # the first one stays


# ----------------------------------------------------------------------------- CLI


def test_parser_registration(tmp_path):
    import argparse

    parser = argparse.ArgumentParser(prog="asr")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "prepare", "src", "out.jsonl", "--source-type", "hf", "--split", "train",
                              "--hf-audio-column", "speech", "--hf-text-column", "sentence", "--streaming",
                              "--max-items", "5", "--skip-bad", "--max-duration", "20"])
    assert (args.source, args.output, args.source_type, args.split) == ("src", "out.jsonl", "hf", "train")
    assert (args.hf_audio_column, args.hf_text_column, args.streaming) == ("speech", "sentence", True)
    assert (args.max_items, args.skip_bad, args.max_duration) == (5, True, 20.0)
    assert callable(args.func)
    args = parser.parse_args(["data", "validate", "m.jsonl"])
    assert args.manifest == "m.jsonl" and callable(args.func)


def test_cli_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["prepare", "only-one-argument"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["prepare", "a", "b.jsonl", "--source-type", "tarball"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["prepare", "a", "b.jsonl", "--max-items", "0"])
    assert info.value.code == 2
    capsys.readouterr()

    rc, _, err = run(capsys, "prepare", tmp_path / "nope" / "x.jsonl", tmp_path / "o.jsonl")
    assert rc == 1 and "no such file or directory" in err
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    rc, _, err = run(capsys, "prepare", empty, tmp_path / "o.jsonl")
    assert rc == 1 and "cannot tell what kind of data set" in err
    rc, _, err = run(capsys, "prepare", tmp_path / "nope", tmp_path / "o.txt")
    assert rc == 1 and ".jsonl" in err


def test_max_items(librispeech, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    rc, _, _ = run(capsys, "prepare", librispeech / "dev-clean", out, "--max-items", "2", "--quiet")
    assert rc == 0 and [r["id"] for r in read_lines(out)] == ["19-198-0000", "19-198-0001"]


# ----------------------------------------------------------------------------- Hugging Face


@pytest.fixture
def hf(monkeypatch, tmp_path):
    datasets = pytest.importorskip(
        "datasets", reason="the Hugging Face source needs the optional 'datasets' package (pip install 'asr[hf]')"
    )
    # keep the datasets library's cache inside the test's directory
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return datasets


HF_ROWS = [  # id, audio bytes, sample rate, samples, text, speaker
    ("utt-a", "flac", 16000, 8000, "The first clip.", 11),
    ("utt-b", "wav", 8000, 2400, "A second clip at 8 kHz.", 12),
    ("utt-c", "ogg", 22050, 11025, "Third, in Ogg Vorbis.", 11),
]


def hf_table(rows=HF_ROWS, corrupt=False) -> dict:
    audio = [{"bytes": audio_bytes(n, sr, fmt.upper() if fmt != "ogg" else "OGG"), "path": f"{uid}.{fmt}"}
             for uid, fmt, sr, n, _, _ in rows]
    table = {
        "id": [r[0] for r in rows],
        "audio": audio,
        "text": [r[4] for r in rows],
        "speaker_id": [r[5] for r in rows],
    }
    if corrupt:
        table["id"].append("utt-bad")
        table["audio"].append({"bytes": b"definitely not audio" * 10, "path": "utt-bad.mp3"})
        table["text"].append("unreadable")
        table["speaker_id"].append(13)
    return table


def hf_dataset(datasets, table):
    # Built as a plain struct column, then cast: encoding into an Audio column would
    # need torchcodec, which this project does not use.
    return datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio(decode=False))


def check_hf_manifest(out: Path, rows=HF_ROWS, group=None):
    got = {r["id"]: r for r in read_lines(out)}
    assert sorted(got) == sorted(r[0] for r in rows)
    for uid, _, sr, n, text, speaker in rows:
        row = got[uid]
        assert row["text"] == text and row["speaker"] == str(speaker) and row.get("group") == group
        assert row["duration"] == pytest.approx(n / sr, abs=2e-3)
        # written next to the manifest as 16 kHz FLAC, decoded by our front-end
        path = out.parent / row["audio"]
        assert row["audio"] == f"{out.stem}_audio/{uid}.flac"
        info = sf.info(str(path))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
        samples, _ = sf.read(str(path), dtype="float32")
        expected_rms = 0.3 / np.sqrt(2)  # the tone's level survives decoding and resampling
        assert np.sqrt(np.mean(samples**2)) == pytest.approx(expected_rms, rel=0.05)


def test_hf_save_to_disk(hf, tmp_path, capsys):
    hf_dataset(hf, hf_table(corrupt=True)).save_to_disk(str(tmp_path / "saved"))
    assert detect_source_type(str(tmp_path / "saved")) == "hf"
    out = tmp_path / "out" / "hf.jsonl"
    rc, stdout, _ = run(capsys, "prepare", tmp_path / "saved", out, "--quiet")
    assert rc == 1 and "utt-bad: " in stdout and not out.exists()
    rc, stdout, _ = run(capsys, "prepare", tmp_path / "saved", out, "--quiet", "--skip-bad")
    assert rc == 0 and "skipped 1 bad utterances" in stdout
    check_hf_manifest(out)


def test_hf_dataset_dict_splits(hf, tmp_path, capsys):
    dd = hf.DatasetDict({
        "train": hf_dataset(hf, hf_table(HF_ROWS[:2])),
        "test": hf_dataset(hf, hf_table(HF_ROWS[2:])),
    })
    dd.save_to_disk(str(tmp_path / "dd"))
    out = tmp_path / "test.jsonl"
    rc, _, err = run(capsys, "prepare", tmp_path / "dd", out, "--quiet")
    assert rc == 1 and "choose one with --split" in err and "train" in err and "test" in err
    rc, _, err = run(capsys, "prepare", tmp_path / "dd", out, "--split", "validation", "--quiet")
    assert rc == 1 and "no split 'validation'" in err
    rc, _, _ = run(capsys, "prepare", tmp_path / "dd", out, "--split", "test", "--quiet")
    assert rc == 0
    check_hf_manifest(out, HF_ROWS[2:], group="test")


def test_hf_parquet_folder_streaming(hf, tmp_path, capsys):
    (tmp_path / "pq" / "data").mkdir(parents=True)
    hf_dataset(hf, hf_table()).to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    out = tmp_path / "pq.jsonl"
    rc, _, _ = run(capsys, "prepare", tmp_path / "pq", out, "--source-type", "hf", "--streaming",
                   "--max-items", "2", "--quiet")
    assert rc == 0
    check_hf_manifest(out, HF_ROWS[:2], group="train")
    rc, _, err = run(capsys, "prepare", tmp_path / "pq", out, "--hf-text-column", "sentence", "--quiet")
    assert rc == 1 and "no column 'sentence'" in err and "--hf-text-column" in err


def test_hf_jsonl_folder_with_paths(hf, tmp_path, capsys):
    # audio given as file paths relative to the data set: used in place, not copied
    root = tmp_path / "hfjson"
    write_audio(root / "clips" / "x.wav", 4000)
    write_audio(root / "clips" / "y.flac", 6000)
    rows = [{"audio": "clips/x.wav", "text": "ex"}, {"audio": "clips/y.flac", "text": "why"}]
    (root / "data").mkdir()
    (root / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "j.jsonl"
    rc, _, _ = run(capsys, "prepare", root, out, "--source-type", "hf", "--quiet")
    assert rc == 0
    got = read_lines(out)
    assert [(r["text"], r["duration"]) for r in got] == [("ex", 0.25), ("why", 0.375)]
    assert os.path.samefile(out.parent / got[1]["audio"], root / "clips" / "y.flac")


def test_hf_hub_name_offline(hf, tmp_path, capsys):
    # HF_HUB_OFFLINE=1 (set above): a Hub name fails fast with a clear one-line error
    rc, _, err = run(capsys, "prepare", "no-such-owner/no-such-dataset", tmp_path / "o.jsonl", "--quiet")
    assert rc == 1
    assert err.startswith("asr: error: no-such-owner/no-such-dataset: cannot load as a Hugging Face dataset")
    assert err.count("\n") == 1
