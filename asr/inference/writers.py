"""Writing transcription results to disk as txt, srt, vtt, tsv or json files, named after the
input audio as openai-whisper names them (`talk.final.wav` -> `talk.final.srt`).

Every format is rendered to a string first and then written atomically, so a crash or a bad
segment never leaves a half-written subtitle file behind, and an older file of the same name
survives until the new one is complete.

Subtitle cues are one line of text, or with word-shaped cues (asr.inference.subtitles) the lines
those options break them into: a blank line would end an SRT/VTT cue early and a line holding
"-->" would be read as a timing line, so such text is sanitised (see cue_body).
Segments with no text after stripping are left out of txt, srt, vtt and tsv (an empty cue is
invalid in some players) but kept in json, which is the result exactly as given.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Callable, Optional, Union

from ..errors import one_line
from ..store.atomic import write_text_atomic
from .subtitles import Cue, SubtitleOptions, has_words, word_cues

FORMATS = ("txt", "vtt", "srt", "tsv", "json", "all")
ALL_FORMATS = ("txt", "vtt", "srt", "tsv", "json")  # what "all" writes, in whisper's order

MS_PER_SECOND = 1000
MS_PER_MINUTE = 60 * MS_PER_SECOND
MS_PER_HOUR = 60 * MS_PER_MINUTE

ARROW = re.compile(r"-{2,}>")  # "-->" and longer runs like "--->", which a single replace would turn back into "-->"
VTT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # the characters WebVTT cue text reserves for markup
TSV_HEADER = "start\tend\ttext"


def to_milliseconds(seconds: float) -> int:
    """Whole milliseconds, to the nearest (ties up). Rounding the total once, before splitting it
    into fields, is what carries 59.9996 s over to 00:01:00.000 instead of 00:00:59.1000."""
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp must be a finite number of seconds, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"timestamp must not be negative, got {seconds!r}")
    return math.floor(seconds * MS_PER_SECOND + 0.5)


def format_timestamp(seconds: float, decimal_marker: str = ".", always_include_hours: bool = False) -> str:
    """HH:MM:SS.mmm; without always_include_hours the hours are left out below one hour (MM:SS.mmm),
    as whisper's VTT does. Hours are not capped at 24: a 100-hour recording gives 100:00:00.000."""
    milliseconds = to_milliseconds(seconds)
    hours, milliseconds = divmod(milliseconds, MS_PER_HOUR)
    minutes, milliseconds = divmod(milliseconds, MS_PER_MINUTE)
    secs, milliseconds = divmod(milliseconds, MS_PER_SECOND)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def spoken_segments(result: dict) -> list[dict]:
    """The segments that have text to show."""
    return [segment for segment in result["segments"] if one_line(segment["text"])]


def render_txt(result: dict) -> str:
    return "".join(f"{one_line(segment['text'])}\n" for segment in spoken_segments(result))


def subtitle_cues(result: dict, options: SubtitleOptions) -> list[Cue]:
    """One cue per segment with text, or with word options and words, cues shaped from the
    words (asr.inference.subtitles)."""
    if options.by_words and has_words(result):
        return word_cues(result, options)
    return [Cue(segment["start"], segment["end"], [[segment["text"]]]) for segment in spoken_segments(result)]


def cue_body(cue: Cue, escape: Callable[[str], str] = lambda text: text) -> str:
    """The cue's lines, each on one line of text (escaped), the highlighted word underlined as
    Whisper does (<u>word</u>, its leading space outside), no "-->" anywhere."""
    lines, index = [], 0
    for line in cue.lines:
        parts = []
        for word in line:
            word = escape(ARROW.sub("->", word))
            if index == cue.highlight:
                core = word.lstrip()
                word = f"{word[: len(word) - len(core)]}<u>{core}</u>"
            parts.append(word)
            index += 1
        lines.append(ARROW.sub("->", one_line("".join(parts))))
    return "\n".join(line for line in lines if line)


def render_srt(result: dict, options: SubtitleOptions = SubtitleOptions()) -> str:
    cues = []
    for index, cue in enumerate(subtitle_cues(result, options), start=1):
        start = format_timestamp(cue.start, ",", always_include_hours=True)
        end = format_timestamp(cue.end, ",", always_include_hours=True)
        cues.append(f"{index}\n{start} --> {end}\n{cue_body(cue)}\n\n")
    return "".join(cues)


def escape_vtt(text: str) -> str:
    # without this "<" starts a tag in browsers and swallows the rest of the line
    return "".join(VTT_ESCAPES.get(char, char) for char in text)


def render_vtt(result: dict, options: SubtitleOptions = SubtitleOptions()) -> str:
    cues = ["WEBVTT\n\n"]
    for cue in subtitle_cues(result, options):
        start = format_timestamp(cue.start, ".")
        end = format_timestamp(cue.end, ".")
        cues.append(f"{start} --> {end}\n{cue_body(cue, escape_vtt)}\n\n")
    return "".join(cues)


def render_tsv(result: dict) -> str:
    """Start and end in integer milliseconds, as whisper's tsv: no decimal marker to mis-parse."""
    rows = [f"{TSV_HEADER}\n"]
    for segment in spoken_segments(result):
        start, end = to_milliseconds(segment["start"]), to_milliseconds(segment["end"])
        rows.append(f"{start}\t{end}\t{one_line(segment['text'])}\n")
    return "".join(rows)


def render_json(result: dict, indent: Optional[int] = None) -> str:
    return json.dumps(result, ensure_ascii=False, indent=indent)


RENDERERS: dict[str, Callable[[dict], str]] = {
    "txt": render_txt,
    "vtt": render_vtt,
    "srt": render_srt,
    "tsv": render_tsv,
    "json": render_json,
}


def render(result: dict, fmt: str, json_indent: Optional[int] = None,
           subtitles: SubtitleOptions = SubtitleOptions()) -> str:
    if fmt == "json":
        return render_json(result, json_indent)
    if fmt in ("srt", "vtt"):
        return RENDERERS[fmt](result, subtitles)
    return RENDERERS[fmt](result)


def write_result(result: dict, audio_path: Union[str, os.PathLike], output_dir: Union[str, os.PathLike],
                 output_format: str, *, json_indent: Optional[int] = None,
                 subtitles: SubtitleOptions = SubtitleOptions()) -> list[Path]:
    """Write `result` as `<audio stem>.<format>` in output_dir (created if missing); "all" writes
    every format. `subtitles` shapes the srt and vtt cues from word timestamps. Returns the paths
    written, in the order of ALL_FORMATS."""
    if output_format not in FORMATS:
        raise ValueError(f"unknown output format {output_format!r}; choose from {', '.join(FORMATS)}")
    formats = ALL_FORMATS if output_format == "all" else (output_format,)
    # render everything before touching the disk, so a bad segment writes no file at all
    texts = {fmt: render(result, fmt, json_indent, subtitles) for fmt in formats}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(audio_path).stem  # only the last suffix goes: talk.final.wav -> talk.final
    paths = []
    for fmt, text in texts.items():
        path = output_dir / f"{stem}.{fmt}"
        write_text_atomic(path, text)
        paths.append(path)
    return paths
