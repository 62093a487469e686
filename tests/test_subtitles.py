"""Subtitle cues shaped from word timestamps (asr.inference.subtitles, the srt/vtt writers):
checked by the rules the options promise (line widths, line counts, words per line, cues that
keep to segments or break at long pauses, one highlighted word per cue) on random word
timings, read back with a small SRT parser written here."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from asr.inference.subtitles import LONG_PAUSE_SECONDS, SubtitleOptions
from asr.inference.writers import render_srt, render_vtt
from test_train_resume import REPO

VOCABULARY = ["the", "a", "kettle", "library", "opened", "forward", "ten", "meters", "extraordinarily", "on",
              "Sunday", "rain", "x"]


def random_result(seed: int, segments: int = 4) -> dict:
    """Segments of random words with increasing times, some separated by long pauses."""
    rng = np.random.default_rng(seed)
    time, out = 0.0, []
    for _ in range(segments):
        words = []
        for k in range(int(rng.integers(1, 12))):
            time += float(rng.choice([0.05, 0.1, 3.5])) if k == 0 else float(rng.uniform(0.0, 0.2))
            start = round(time, 2)
            time += float(rng.uniform(0.1, 0.6))
            words.append({"word": " " + str(rng.choice(VOCABULARY)), "start": start, "end": round(time, 2),
                          "probability": 0.9})
        out.append({"start": words[0]["start"], "end": words[-1]["end"], "text": "".join(w["word"] for w in words),
                    "words": words})
    return {"text": "".join(s["text"] for s in out).strip(), "segments": out}


def parse_srt(text: str) -> list[tuple[float, float, list[str]]]:
    """(start, end, lines) of every cue."""
    def seconds(stamp):
        h, m, s = stamp.replace(",", ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        start, end = lines[1].split(" --> ")
        cues.append((seconds(start), seconds(end), lines[2:]))
    return cues


def words_of(lines: list[str]) -> list[str]:
    return " ".join(re.sub(r"</?u>", "", line) for line in lines).split()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("width, count", [(20, 2), (12, 1), (40, 3)])
def test_width_and_count_bound_every_cue_and_long_pauses_start_a_new_one(seed, width, count):
    result = random_result(seed)
    words = [w for s in result["segments"] for w in s["words"]]
    cues = parse_srt(render_srt(result, SubtitleOptions(max_line_width=width, max_line_count=count)))
    assert [w for _, _, lines in cues for w in words_of(lines)] == [w["word"].strip() for w in words]
    at = 0
    for start, end, lines in cues:
        assert 1 <= len(lines) <= count
        for line in lines:  # a line is over the width only when it is one long word
            assert len(line) <= width or len(line.split()) == 1, (line, width)
        n = len(words_of(lines))
        assert (start, end) == pytest.approx((words[at]["start"], words[at + n - 1]["end"]), abs=1e-3)
        # no pause of more than 3 s between word starts inside a cue
        starts = [w["start"] for w in words[at: at + n]]
        assert all(b - a <= LONG_PAUSE_SECONDS + 1e-9 for a, b in zip(starts, starts[1:]))
        at += n
    # and every such pause did start a cue (cues run across segments otherwise)
    firsts, at = set(), 0
    for _, _, lines in cues:
        firsts.add(at)
        at += len(words_of(lines))
    for i in range(1, len(words)):
        if words[i]["start"] - words[i - 1]["start"] > LONG_PAUSE_SECONDS:
            assert i in firsts


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("per_line", [1, 3])
def test_words_per_line_keeps_to_segments(seed, per_line):
    result = random_result(seed)
    cues = parse_srt(render_srt(result, SubtitleOptions(max_words_per_line=per_line)))
    expected = []  # each segment cut into runs of per_line words, one cue each
    for segment in result["segments"]:
        words = [w["word"].strip() for w in segment["words"]]
        expected += [words[i: i + per_line] for i in range(0, len(words), per_line)]
    assert [words_of(lines) for _, _, lines in cues] == expected


@pytest.mark.parametrize("seed", range(6))
def test_highlight_underlines_each_word_in_turn(seed):
    result = random_result(seed, segments=2)
    words = [w for s in result["segments"] for w in s["words"]]
    cues = parse_srt(render_srt(result, SubtitleOptions(highlight_words=True)))
    highlighted = [(start, end, lines) for start, end, lines in cues if "<u>" in "".join(lines)]
    assert len(highlighted) == len(words)
    for (start, end, lines), word in zip(highlighted, words):
        text = " ".join(lines)
        assert text.count("<u>") == 1 and re.search(r"<u>(.*?)</u>", text).group(1) == word["word"].strip()
        assert (start, end) == pytest.approx((word["start"], word["end"]), abs=1e-3)
    # between words the cue is shown without a highlight, and the cues never overlap
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(cues, cues[1:]))


def test_vtt_escapes_words_but_not_the_highlight():
    result = {"segments": [{"start": 0.0, "end": 1.0, "text": " a <b> & c",
                            "words": [{"word": " a", "start": 0.0, "end": 0.3}, {"word": " <b>", "start": 0.3, "end": 0.6},
                                      {"word": " &", "start": 0.6, "end": 0.8}, {"word": " c", "start": 0.8, "end": 1.0}]}]}
    vtt = render_vtt(result, SubtitleOptions(highlight_words=True))
    assert "a <u>&lt;b&gt;</u> &amp; c" in vtt and "<b>" not in vtt


def test_without_word_options_cues_are_segments():
    result = random_result(3)
    cues = parse_srt(render_srt(result))
    assert [(s, e) for s, e, _ in cues] == [(seg["start"], seg["end"]) for seg in result["segments"]]


@pytest.mark.parametrize("extra, message", [
    (["--max-line-width", "20"], "--max-line-width: subtitles are shaped from word timestamps"),
    (["--word-timestamps", "--max-line-count", "2"], "--max-line-count: lines only break at a width"),
    (["--word-timestamps", "--max-line-width", "20", "--max-line-count", "2", "--max-words-per-line", "3"],
     "--max-words-per-line does nothing"),
])
def test_cli_refuses_options_that_would_do_nothing(extra, message):
    command = [sys.executable, "-m", "asr", "transcribe", str(REPO / "data/audio/goforward.flac"), *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.strip() == f"asr: error: {result.stderr.strip()[12:]}"
    assert message in result.stderr and "Traceback" not in result.stderr
