"""Subtitle cues from word timestamps, with Whisper's options for their shape: lines of at most
`max_line_width` characters, cues of at most `max_line_count` lines, lines of at most
`max_words_per_line` words, and `highlight_words` (one cue per spoken word, that word
underlined).

Without these options, or for a result without words, a cue is a segment (asr.inference.writers).
As in Whisper: when a line width and a line count are both given, cues run across segments and a
pause of more than 3 s starts a new one; otherwise every segment (or every `max_words_per_line`
words of it) starts a new cue, and a line only breaks where the width runs out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

LONG_PAUSE_SECONDS = 3.0  # a silence this long between words starts a new cue


@dataclass(frozen=True)
class SubtitleOptions:
    max_line_width: Optional[int] = None  # characters
    max_line_count: Optional[int] = None  # lines per cue
    max_words_per_line: Optional[int] = None
    highlight_words: bool = False

    @property
    def by_words(self) -> bool:
        """Whether cues are built from words rather than segments."""
        return (self.highlight_words or self.max_line_width is not None or self.max_line_count is not None
                or self.max_words_per_line is not None)


@dataclass
class Cue:
    start: float
    end: float
    lines: list[list[str]]  # the words of each line, as spoken (a word keeps its leading space)
    highlight: Optional[int] = None  # index among the cue's words of the one underlined


def has_words(result: dict) -> bool:
    return any(segment.get("words") for segment in result["segments"])


def word_groups(segments: list[dict], options: SubtitleOptions) -> Iterator[list[list[dict]]]:
    """The words of each cue, line by line."""
    keep_segments = options.max_line_count is None or options.max_line_width is None
    width = options.max_line_width if options.max_line_width is not None else math.inf
    per_line = options.max_words_per_line or math.inf
    cue: list[list[dict]] = []
    length = 0  # characters on the current line
    last_start = None
    for segment in segments:
        for index, word in enumerate(segment.get("words") or ()):
            new_chunk = index % per_line == 0  # (index 0 only, when per_line is infinite)
            pause = (not keep_segments and last_start is not None
                     and word["start"] - last_start > LONG_PAUSE_SECONDS)
            segment_break = keep_segments and new_chunk and bool(cue)
            if length > 0 and length + len(word["word"]) <= width and not pause and not segment_break:
                cue[-1].append(word)
                length += len(word["word"])
            else:
                full = options.max_line_count is not None and len(cue) >= options.max_line_count
                if cue and (segment_break or (options.max_line_count is not None and (pause or full))):
                    yield cue
                    cue = []
                cue.append([word])  # a new line, of a new cue or of this one
                length = len(word["word"].strip())
            last_start = word["start"]
    if cue:
        yield cue


def word_cues(result: dict, options: SubtitleOptions) -> list[Cue]:
    cues = []
    for group in word_groups(result["segments"], options):
        words = [word for line in group for word in line]
        lines = [[word["word"] for word in line] for line in group]
        start, end = words[0]["start"], words[-1]["end"]
        if not options.highlight_words:
            cues.append(Cue(start, end, lines))
            continue
        shown = start
        for index, word in enumerate(words):
            if word["start"] > shown:  # the gap before this word: the cue without a highlight
                cues.append(Cue(shown, word["start"], lines))
            cues.append(Cue(word["start"], word["end"], lines, highlight=index))
            shown = word["end"]
    return cues
