"""Output writers: every file is parsed back with a strict parser written here (exact timing
syntax, cue layout, column counts, JSON schema) and compared with the result it came from."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from asr.inference import writers
from asr.inference.writers import FORMATS, format_timestamp, write_result

ALL_FILES = ("txt", "vtt", "srt", "tsv", "json")

SRT_TIME = r"(\d{2,}):(\d{2}):(\d{2}),(\d{3})"
SRT_TIMING = re.compile(rf"{SRT_TIME} --> {SRT_TIME}")
VTT_TIME = r"(?:(\d{2,}):)?(\d{2}):(\d{2})\.(\d{3})"  # hours only from one hour on, as whisper
VTT_TIMING = re.compile(rf"{VTT_TIME} --> {VTT_TIME}")
VTT_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}


def segment(id, start, end, text):
    return {"id": id, "seek": 0, "start": start, "end": end, "text": text, "tokens": [50364, 400 + id],
            "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 1.5, "no_speech_prob": 0.01}


# (segment, text expected in srt/vtt/tsv/txt, or None when the segment must be skipped)
CASES = [
    (segment(0, 0.0, 1.2344, " Hello world."), "Hello world."),
    (segment(1, 1.2346, 59.9996, " Ça va? 日本語のテキスト 🎤"), "Ça va? 日本語のテキスト 🎤"),
    (segment(2, 59.9996, 61.0, "   "), None),
    (segment(3, 61.0, 62.5, " arrows --> and ---> here"), "arrows -> and -> here"),
    (segment(4, 62.5, 64.0, " tab\there\nnew line\r\n\nblank\u2028sep"), "tab here new line blank sep"),
    (segment(5, 64.0, 65.0, ""), None),
    (segment(6, 65.0, 3599.9996, " <b>AT&T</b> 42"), "<b>AT&T</b> 42"),
    (segment(7, 3599.9996, 3661.5, " past one hour"), "past one hour"),
    (segment(8, 3661.5, 360000.25, " a hundred hours"), "a hundred hours"),
]
# the cue-sanitising rule (no "-->") applies only to subtitles; txt and tsv keep the arrows
PLAIN_TEXT = {3: "arrows --> and ---> here"}


def make_result(cases=CASES) -> dict:
    segments = [case[0] for case in cases]
    return {"text": "".join(s["text"] for s in segments).strip(), "segments": segments,
            "language": "en", "duration": 360001.0}


def spoken(cases=CASES):
    return [(seg, text) for seg, text in cases if text is not None]


def ms(seconds: float) -> int:
    # none of the test times lies on a half millisecond, so plain rounding is unambiguous
    return round(seconds * 1000)


def clock_ms(hours, minutes, seconds, millis) -> int:
    assert int(minutes) < 60 and int(seconds) < 60, "minutes and seconds must be below 60"
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def split_blocks(content: str) -> list[str]:
    """Blocks separated by exactly one blank line, the file ending with one; nothing else allowed."""
    assert "\r" not in content
    if not content:
        return []
    assert content.endswith("\n\n") and not content.endswith("\n\n\n")
    blocks = content[:-2].split("\n\n")
    assert all(block and not block.startswith("\n") for block in blocks), "stray blank line"
    return blocks


def parse_srt(content: str) -> list[tuple[int, int, str]]:
    cues = []
    for number, block in enumerate(split_blocks(content), start=1):
        lines = block.split("\n")
        assert len(lines) == 3, f"cue {number} is not index, timing, one text line: {lines!r}"
        assert lines[0] == str(number), "indices must run 1, 2, 3, ..."
        timing = SRT_TIMING.fullmatch(lines[1])
        assert timing, f"bad SRT timing line {lines[1]!r}"
        assert lines[2] == lines[2].strip() and "-->" not in lines[2]
        cues.append((clock_ms(*timing.groups()[:4]), clock_ms(*timing.groups()[4:]), lines[2]))
    return cues


def unescape_vtt(text: str) -> str:
    assert not re.search(r"[<>]|&(?!amp;|lt;|gt;)", text), f"unescaped markup in {text!r}"
    return re.sub(r"&(amp|lt|gt);", lambda m: VTT_ENTITIES[m.group(0)], text)


def parse_vtt_time(hours, minutes, seconds, millis) -> int:
    value = clock_ms(hours, minutes, seconds, millis)
    assert (hours is not None) == (value >= 3_600_000), "hours present exactly from one hour on"
    return value


def parse_vtt(content: str) -> list[tuple[int, int, str]]:
    blocks = split_blocks(content)
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        lines = block.split("\n")
        assert len(lines) == 2, f"cue is not timing and one text line: {lines!r}"
        timing = VTT_TIMING.fullmatch(lines[0])
        assert timing, f"bad VTT timing line {lines[0]!r}"
        assert lines[1] == lines[1].strip()
        cues.append((parse_vtt_time(*timing.groups()[:4]), parse_vtt_time(*timing.groups()[4:]),
                     unescape_vtt(lines[1])))
    return cues


def parse_tsv(content: str) -> list[tuple[int, int, str]]:
    assert content.endswith("\n") and "\r" not in content
    header, *rows = content[:-1].split("\n")
    assert header == "start\tend\ttext"
    parsed = []
    for row in rows:
        columns = row.split("\t")
        assert len(columns) == 3, f"row {row!r} has {len(columns)} columns"
        assert re.fullmatch(r"\d+", columns[0]) and re.fullmatch(r"\d+", columns[1]), "times are integer ms"
        assert columns[2] and columns[2] == columns[2].strip()
        parsed.append((int(columns[0]), int(columns[1]), columns[2]))
    return parsed


SEGMENT_SCHEMA = {"id": int, "seek": int, "start": float, "end": float, "text": str, "tokens": list,
                  "temperature": float, "avg_logprob": float, "compression_ratio": float, "no_speech_prob": float}


def validate_json_schema(data) -> None:
    assert isinstance(data, dict) and set(data) == {"text", "segments", "language", "duration"}
    assert isinstance(data["text"], str) and isinstance(data["language"], str)
    assert isinstance(data["duration"], float) and isinstance(data["segments"], list)
    for seg in data["segments"]:
        assert set(seg) == set(SEGMENT_SCHEMA)
        for key, kind in SEGMENT_SCHEMA.items():
            # bool is a subclass of int; a True id would be a bug, not an int
            assert isinstance(seg[key], kind) and not isinstance(seg[key], bool), f"{key}: {seg[key]!r}"
        assert all(isinstance(t, int) and not isinstance(t, bool) for t in seg["tokens"])


def expected_cues(cases=CASES):
    return [(ms(seg["start"]), ms(seg["end"]), text) for seg, text in spoken(cases)]


def assert_monotonic(cues):
    for (start, end, _), (next_start, _, _) in zip(cues, cues[1:] + [(float("inf"), 0, "")]):
        assert start <= end <= next_start


# ---------------------------------------------------------------------------------------------
# timestamps

@pytest.mark.parametrize("seconds, marker, hours, expected", [
    (0.0, ".", True, "00:00:00.000"),
    (0.0, ".", False, "00:00.000"),
    (1.2344, ",", True, "00:00:01,234"),
    (1.2346, ",", True, "00:00:01,235"),
    (59.9996, ".", True, "00:01:00.000"),  # the carry ripples through seconds into minutes
    (59.9996, ".", False, "01:00.000"),
    (3599.9996, ".", False, "01:00:00.000"),  # ... and into hours, which then must be shown
    (3599.9994, ".", False, "59:59.999"),
    (3661.5, ",", True, "01:01:01,500"),
    (360000.25, ".", False, "100:00:00.250"),
])
def test_format_timestamp(seconds, marker, hours, expected):
    assert format_timestamp(seconds, marker, hours) == expected


@pytest.mark.parametrize("seconds", [-0.001, -1e-9, -3600.0, float("nan"), float("inf")])
def test_format_timestamp_rejects_negative_and_non_finite(seconds):
    with pytest.raises(ValueError):
        format_timestamp(seconds, ".", True)


# ---------------------------------------------------------------------------------------------
# formats, parsed back

def parsed_back(path: Path):
    """The file read back with the strict parser of its format."""
    content = path.read_text(encoding="utf-8")
    parse = {"srt": parse_srt, "vtt": parse_vtt, "tsv": parse_tsv, "json": json.loads,
             "txt": lambda text: text[:-1].split("\n")}[path.suffix[1:]]
    return parse(content)


def expected_back(fmt: str):
    if fmt in ("srt", "vtt"):
        return expected_cues()
    if fmt == "tsv":
        return [(start, end, PLAIN_TEXT.get(seg["id"], text)) for (start, end, text), (seg, _) in
                zip(expected_cues(), spoken())]
    if fmt == "txt":
        return [PLAIN_TEXT.get(seg["id"], text) for seg, text in spoken()]
    return make_result()


@pytest.mark.parametrize("output_format", FORMATS)
def test_every_offered_format_writes_what_its_parser_reads_back(tmp_path, output_format):
    """FORMATS is what the CLI offers (--output-format): each name writes files named by format
    ("all": every format) that parse back to the result."""
    paths = write_result(make_result(), "talk.wav", tmp_path, output_format)
    written = [p.suffix[1:] for p in paths]
    assert written == (list(ALL_FILES) if output_format == "all" else [output_format])
    for path, fmt in zip(paths, written):
        assert path.name == f"talk.{fmt}"
        assert parsed_back(path) == expected_back(fmt)


def test_srt_round_trip(tmp_path):
    [path] = write_result(make_result(), "talk.wav", tmp_path, "srt")
    cues = parse_srt(path.read_text(encoding="utf-8"))
    assert cues == expected_cues()
    assert_monotonic(cues)


def test_srt_exact_text(tmp_path):
    cases = CASES[:2] + [CASES[7]]
    [path] = write_result(make_result(cases), "talk.wav", tmp_path, "srt")
    assert path.read_bytes().decode("utf-8") == (
        "1\n00:00:00,000 --> 00:00:01,234\nHello world.\n\n"
        "2\n00:00:01,235 --> 00:01:00,000\nÇa va? 日本語のテキスト 🎤\n\n"
        "3\n01:00:00,000 --> 01:01:01,500\npast one hour\n\n"
    )


def test_vtt_round_trip(tmp_path):
    [path] = write_result(make_result(), "talk.wav", tmp_path, "vtt")
    content = path.read_text(encoding="utf-8")
    cues = parse_vtt(content)
    assert cues == expected_cues()
    assert_monotonic(cues)
    assert "&lt;b&gt;AT&amp;T&lt;/b&gt; 42" in content


def test_vtt_exact_text(tmp_path):
    cases = CASES[:2] + [CASES[7]]
    [path] = write_result(make_result(cases), "talk.wav", tmp_path, "vtt")
    assert path.read_text(encoding="utf-8") == (
        "WEBVTT\n\n"
        "00:00.000 --> 00:01.234\nHello world.\n\n"
        "00:01.235 --> 01:00.000\nÇa va? 日本語のテキスト 🎤\n\n"
        "01:00:00.000 --> 01:01:01.500\npast one hour\n\n"
    )


def test_tsv_round_trip(tmp_path):
    [path] = write_result(make_result(), "talk.wav", tmp_path, "tsv")
    rows = parse_tsv(path.read_text(encoding="utf-8"))
    expected = [(start, end, PLAIN_TEXT.get(seg["id"], text))
                for (start, end, text), (seg, _) in zip(expected_cues(), spoken())]
    assert rows == expected
    assert rows[0] == (0, 1234, "Hello world.") and rows[-1][:2] == (3661500, 360000250)


def test_txt_lines(tmp_path):
    [path] = write_result(make_result(), "talk.wav", tmp_path, "txt")
    content = path.read_text(encoding="utf-8")
    assert content.endswith("\n")
    assert content[:-1].split("\n") == [PLAIN_TEXT.get(seg["id"], text) for seg, text in spoken()]


@pytest.mark.parametrize("indent", [None, 2])
def test_json_round_trip(tmp_path, indent):
    result = make_result()
    [path] = write_result(result, "talk.wav", tmp_path, "json", json_indent=indent)
    content = path.read_text(encoding="utf-8")
    assert "日本語" in content and "\\u" not in content  # written as UTF-8, not \u escapes
    data = json.loads(content)
    validate_json_schema(data)
    assert data == result
    assert len(data["segments"]) == len(CASES)  # empty segments are kept in json


def test_no_segments(tmp_path):
    result = make_result([])
    paths = write_result(result, "quiet.wav", tmp_path, "all")
    content = {p.suffix[1:]: p.read_text(encoding="utf-8") for p in paths}
    assert content["txt"] == "" and content["srt"] == ""
    assert parse_srt(content["srt"]) == [] and parse_vtt(content["vtt"]) == []
    assert parse_tsv(content["tsv"]) == []
    assert json.loads(content["json"]) == result


def test_negative_time_writes_nothing(tmp_path):
    bad = make_result([(segment(0, -0.5, 1.0, " early"), "early")])
    with pytest.raises(ValueError):
        write_result(bad, "talk.wav", tmp_path, "all")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# files

def test_output_naming_and_directory_creation(tmp_path):
    output_dir = tmp_path / "out" / "nested"
    paths = write_result(make_result(), "/x/y/talk.final.wav", output_dir, "srt")
    assert paths == [output_dir / "talk.final.srt"]
    assert paths[0].is_file()


def test_all_writes_five_files(tmp_path):
    result = make_result()
    paths = write_result(result, Path("/x/y/talk.final.wav"), str(tmp_path), "all")
    assert paths == [tmp_path / f"talk.final.{ext}" for ext in ALL_FILES]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    # each file is what writing that format alone gives
    for path, ext in zip(paths, ALL_FILES):
        single = tmp_path / "single"
        [alone] = write_result(result, "talk.final.wav", single, ext)
        assert path.read_bytes() == alone.read_bytes()


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown output format"):
        write_result(make_result(), "talk.wav", tmp_path / "out", "docx")
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "talk.txt"
    target.write_text("old and much longer content\n" * 10, encoding="utf-8")
    reference = tmp_path / "reference"
    reference.write_text("x", encoding="utf-8")  # a file as open() creates it, under this umask
    [path] = write_result(make_result(CASES[:1]), "talk.wav", tmp_path, "txt")
    assert path == target and target.read_text(encoding="utf-8") == "Hello world.\n"
    assert (target.stat().st_mode & 0o777) == (reference.stat().st_mode & 0o777)


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "talk.srt"
    target.write_text("old\n", encoding="utf-8")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(writers.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_result(make_result(), "talk.wav", tmp_path, "srt")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["talk.srt"]
