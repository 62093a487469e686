"""Word-level timestamps, as Whisper and faster-whisper compute them (``word_timestamps=True``).

After a window is decoded, its text is fed back through the decoder once (teacher forcing). A
few cross-attention heads of a trained Whisper follow the audio in time: for each text token
they attend to the frames where it is spoken. Their attention over the window's real frames is
standardised per frame, smoothed along time with a median filter, averaged over the heads, and
a dynamic-time-warping path through it (tokens down, frames across, monotonic) gives each token
the frame where it starts. Tokens are grouped into words, punctuation is attached to its
neighbours, and a few rules tame words that the path stretched over a pause.

The heads are the model's own list (imported Whisper models keep it from their conversion);
a model without one uses every head of the second half of the decoder's layers, as Whisper does.
"""
from __future__ import annotations

import string
from typing import Optional, Sequence

import numpy as np
import torch

from ..audio.constants import FRAMES_PER_SECOND
from .options import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS

MEDIAN_FILTER_WIDTH = 7  # attention columns smoothed together (Whisper's and faster-whisper's)
SENTENCE_END_MARKS = ".。!！?？"
MAX_MEDIAN_WORD_SECONDS = 0.7  # the median word length used by the rules below is capped here
# Languages written without spaces between words: their words are whole characters
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
REPLACEMENT_CHARACTER = "\ufffd"  # what an incomplete UTF-8 sequence decodes to


def alignment_heads(model) -> list[tuple[int, int]]:
    """(layer, head) pairs of the decoder's cross-attention used for timing: the model's own list
    when it has one, else every head of the second half of its layers (Whisper's default)."""
    if getattr(model, "alignment_heads", None):
        return [(int(layer), int(head)) for layer, head in model.alignment_heads]
    n_layer, n_head = model.dims.n_text_layer, model.dims.n_text_head
    return [(layer, head) for layer in range(n_layer // 2, n_layer) for head in range(n_head)]


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Running median of odd `width` along the last axis, the edges mirrored without repeating
    the edge value (d c b | a b c d ..., numpy's "reflect" padding). Rows shorter than half the
    width are returned as they are."""
    half = width // 2
    if x.shape[-1] <= half:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1)


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotonic path through `cost` [rows, columns] from (0, 0) to the last cell with the
    least total cost, steps going down, right or diagonally. Returns (row indices, column
    indices), one pair per step. Ties go as in Whisper and CTranslate2: diagonal only when
    strictly cheaper than both others, then down, else right.

    The cells of one anti-diagonal depend only on the two before it, so each anti-diagonal is
    computed at once (a few thousand numpy steps instead of a Python loop over every cell)."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for diagonal in range(2, n + m + 1):
        i = np.arange(max(1, diagonal - m), min(n, diagonal - 1) + 1)
        j = diagonal - i
        diag, down, right = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        step = np.where((diag < down) & (diag < right), 0, np.where((down < diag) & (down < right), 1, 2))
        total[i, j] = cost[i - 1, j - 1] + np.choose(step, (diag, down, right))
        trace[i, j] = step
    rows, columns = [], []
    i, j = n, m
    while i > 0 and j > 0:  # total[0, j > 0] and total[i > 0, 0] are infinite: the path ends at (1, 1)
        rows.append(i - 1)
        columns.append(j - 1)
        step = trace[i, j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return np.array(rows[::-1]), np.array(columns[::-1])


def split_words(tokenizer, tokens: Sequence[int], language: Optional[str]) -> tuple[list[str], list[list[int]]]:
    """The words of `tokens` (text tokens, then <|endoftext|>) and the tokens of each.

    First the tokens are cut into the shortest runs that decode to whole characters (a character
    may take several byte-level tokens). Each run's text is read off the decoded prefix, not
    decoded alone, because SentencePiece drops the space of a word-start piece at the start of a
    text. In languages written with spaces, a run that starts with a space, is punctuation or
    is a special token starts a new word; the other runs join the word before them."""
    tokens = list(tokens)
    full = tokenizer.decode_with_timestamps(tokens)
    runs: list[str] = []
    run_tokens: list[list[int]] = []
    done = 0  # tokens already in runs
    decoded = ""  # their text
    for end in range(1, len(tokens) + 1):
        text = tokenizer.decode_with_timestamps(tokens[:end])
        piece = text[len(decoded):]
        broken = piece.find(REPLACEMENT_CHARACTER)
        # an incomplete character waits for its next byte, unless the whole text has the
        # replacement character there too (bytes that never make a character)
        if broken >= 0 and full[len(decoded) + broken: len(decoded) + broken + 1] != REPLACEMENT_CHARACTER:
            continue
        runs.append(piece)
        run_tokens.append(tokens[done:end])
        done, decoded = end, text
    if language in NO_SPACE_LANGUAGES:
        return runs, run_tokens
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for piece, piece_tokens in zip(runs, run_tokens):
        if (not words or tokenizer.is_special(piece_tokens[0]) or piece.startswith(" ")
                or piece.strip() in string.punctuation):
            words.append(piece)
            word_tokens.append(list(piece_tokens))
        else:
            words[-1] += piece
            word_tokens[-1].extend(piece_tokens)
    return words, word_tokens


def token_alignment(model, tokenizer, sot_sequence: Sequence[int], text_tokens: Sequence[int],
                    audio: torch.Tensor, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align one window's text with its audio. `audio` is the window's encoder output [1,
    positions, d], `n_frames` its real mel frames. Returns (token indices, attention columns)
    along the DTW path over text_tokens + <|endoftext|>, and the probability of each text token
    (softmax over the text vocabulary, as the decoder predicted it)."""
    tokens = [*sot_sequence, tokenizer.no_timestamps, *text_tokens, tokenizer.eot]
    scores: list[torch.Tensor] = []
    with torch.inference_mode():
        logits = model.decoder(torch.tensor([tokens], device=audio.device), audio, cross_scores=scores)
    first = len(sot_sequence)  # the <|notimestamps|> position predicts the first text token
    text_logits = logits[0, first: first + len(text_tokens), : tokenizer.eot].float()
    probabilities = torch.softmax(text_logits, dim=-1)
    rows = torch.arange(len(text_tokens), device=probabilities.device)
    token_probabilities = probabilities[rows, torch.tensor(text_tokens, device=probabilities.device)].cpu().numpy()
    columns = n_frames // model.audio_stride  # one attention column per encoder position (as Whisper: floor)
    weights = torch.stack([scores[layer][0, head, :, :columns] for layer, head in alignment_heads(model)])
    weights = torch.softmax(weights.float(), dim=-1).cpu().numpy().astype(np.float64)  # [heads, tokens, columns]
    # each column standardised over the tokens, so loud frames do not pull every token to them
    weights = (weights - weights.mean(axis=-2, keepdims=True)) / weights.std(axis=-2, keepdims=True)
    weights = median_filter(weights, MEDIAN_FILTER_WIDTH)
    matrix = weights.mean(axis=0)[first: first + len(text_tokens) + 1]  # rows predicting text and <|endoftext|>
    rows, cols = dtw_path(-matrix)
    return rows, cols, token_probabilities


def find_word_timings(model, tokenizer, sot_sequence: Sequence[int], text_tokens: Sequence[int],
                      audio: torch.Tensor, n_frames: int, language: Optional[str]) -> list[dict]:
    """Words of one window with start and end (seconds from the window's start), mean token
    probability and tokens."""
    if not text_tokens:
        return []
    rows, cols, token_probabilities = token_alignment(model, tokenizer, sot_sequence, text_tokens, audio, n_frames)
    words, word_tokens = split_words(tokenizer, [*text_tokens, tokenizer.eot], language)
    if len(word_tokens) <= 1:  # <|endoftext|> alone
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    # the path's first step onto each token is where that token starts
    jumps = np.pad(np.diff(rows), (1, 0), constant_values=1).astype(bool)
    jump_times = cols[jumps] * model.audio_stride / FRAMES_PER_SECOND
    starts, ends = jump_times[boundaries[:-1]], jump_times[boundaries[1:]]
    return [{"word": word, "tokens": tokens, "start": float(start), "end": float(end),
             "probability": float(np.mean(token_probabilities[i:j]))}
            for word, tokens, start, end, i, j in zip(words, word_tokens, starts, ends, boundaries[:-1],
                                                      boundaries[1:])]


def merge_punctuations(words: list[dict], prepended: str, appended: str) -> None:
    """Attach opening punctuation to the word after it and closing punctuation to the word
    before it, in place; the emptied entries keep their place with word "" and no tokens."""
    i, j = len(words) - 2, len(words) - 1
    while i >= 0:  # opening marks, right to left
        previous, following = words[i], words[j]
        if previous["word"].startswith(" ") and previous["word"].strip() in prepended:
            following["word"] = previous["word"] + following["word"]
            following["tokens"] = previous["tokens"] + following["tokens"]
            previous["word"], previous["tokens"] = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(words):  # closing marks, left to right
        previous, following = words[i], words[j]
        if not previous["word"].endswith(" ") and following["word"] in appended:
            previous["word"] = previous["word"] + following["word"]
            previous["tokens"] = previous["tokens"] + following["tokens"]
            following["word"], following["tokens"] = "", []
        else:
            i = j
        j += 1


def add_word_timestamps(model, tokenizer, segments: list[dict], sot_sequence: Sequence[int],
                        audio: torch.Tensor, n_frames: int, time_offset: float, language: Optional[str],
                        last_speech_timestamp: float, prepended: str = PREPEND_PUNCTUATIONS,
                        appended: str = APPEND_PUNCTUATIONS) -> float:
    """Give the segments of one window (asr.inference.transcribe's dicts, in order) their
    "words" [{"word", "start", "end", "probability"}] in seconds of the file, and move each
    segment's start and end to its first and last word, as faster-whisper does; returns the end
    of the last speech, which the next window's rules read (0.0 before a file's first)."""
    per_segment = [[t for t in segment["tokens"] if t < tokenizer.eot] for segment in segments]
    timings = find_word_timings(model, tokenizer, sot_sequence, [t for ts in per_segment for t in ts], audio,
                                n_frames, language)
    durations = np.array([w["end"] - w["start"] for w in timings])
    durations = durations[durations.nonzero()]
    median = min(MAX_MEDIAN_WORD_SECONDS, float(np.median(durations))) if len(durations) else 0.0
    longest = 2 * median
    if len(durations):  # a word at a sentence end is not stretched over the pause that follows
        for i in range(1, len(timings)):
            if timings[i]["end"] - timings[i]["start"] > longest:
                if timings[i]["word"] in SENTENCE_END_MARKS:
                    timings[i]["end"] = timings[i]["start"] + longest
                elif timings[i - 1]["word"] in SENTENCE_END_MARKS:
                    timings[i]["start"] = timings[i]["end"] - longest
    merge_punctuations(timings, prepended, appended)
    index = 0
    for segment, segment_tokens in zip(segments, per_segment):
        taken, words = 0, []
        while index < len(timings) and taken < len(segment_tokens):
            timing = timings[index]
            if timing["word"]:
                words.append({"word": timing["word"], "start": round(time_offset + timing["start"], 2),
                              "end": round(time_offset + timing["end"], 2),
                              "probability": round(timing["probability"], 4)})
            taken += len(timing["tokens"])
            index += 1
        if words:
            last_speech_timestamp = fit_segment_to_words(segment, words, median, longest, last_speech_timestamp)
        segment["words"] = words
    return speech_end(segments, last_speech_timestamp)


def speech_end(segments: list[dict], default: float) -> float:
    """Where the speech of these segments ends: the last word's end, else the last segment's."""
    ends = [word["end"] for segment in segments for word in segment.get("words", ())]
    return ends[-1] if ends else segments[-1]["end"] if segments else default


def fit_segment_to_words(segment: dict, words: list[dict], median: float, longest: float,
                         last_speech_timestamp: float) -> float:
    """Faster-whisper's rules for the ends of a segment's words: the first word after a pause
    is not stretched back over it, and the segment's own timestamps win over a first or last word
    that reaches half a second past them; otherwise the segment takes its words' ends."""
    first = words[0]
    if first["end"] - last_speech_timestamp > 4 * median and (
            first["end"] - first["start"] > longest
            or (len(words) > 1 and words[1]["end"] - first["start"] > 2 * longest)):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > longest:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - longest)
            first["end"] = words[1]["start"] = boundary
        first["start"] = max(0.0, first["end"] - longest)
    if segment["start"] < first["end"] and segment["start"] - 0.5 > first["start"]:
        first["start"] = max(0.0, min(first["end"] - median, segment["start"]))
    else:
        segment["start"] = first["start"]
    last = words[-1]
    if segment["end"] > last["start"] and segment["end"] + 0.5 < last["end"]:
        last["end"] = max(last["start"] + median, segment["end"])
    else:
        segment["end"] = last["end"]
    return segment["end"]
