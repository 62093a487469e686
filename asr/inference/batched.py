"""Batched long-form transcription: the windows of one file decoded together.

Sequential long-form (asr.inference.transcribe) moves window by window, each starting where the
last complete segment of the previous one ended, so window k+1 cannot start before window k is
decoded. When no window conditions on the text of the one before, that dependence can be
removed: cut the file into chunks of at most one model window (30 s) at pauses, where no word
is split, and decode all the chunks of a file in batches, as faster-whisper's
BatchedInferencePipeline does.

Pauses come from an energy detector (`find_pauses`): frame RMS against a threshold set by the
file's own loudness. It needs no model file and no dependency and takes ~5 ms per minute of
audio; the cuts only need to fall between words, not to label speech precisely. (It has not yet
been compared with a trained detector such as Silero VAD or webrtcvad.)

Each chunk is a contiguous span of the recording (nothing is spliced out), so a timestamp t in
chunk c is at c.start + t in the file and segment times stay exact. For pretrained Whisper models
the chunk's features are the whole file's features cut to the chunk (same floor, same edge
frames) and padded with 0.0 to 30 s, as the sequential path pads the file's last window.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np
import torch

from ..audio import HOP_LENGTH, SAMPLE_RATE, AudioError, batch_log_mel
from ..audio.features import scale_log_mel
from ..audio.stream import ArrayAudio, open_audio
from ..audio.whisper_windows import log10_mel_frames, log10_mel_peak
from ..text.tokenizer import Tokenizer
from .decoding import DecodingOptions, DecodingResult, detect_language
from .word_timing import add_word_timestamps
from .transcribe import (FileState, encode_in_slices, TranscribeOptions, add_segment, decode_with_fallback, decoding_setup,
                         is_silence, make_result)

# energy detector
VAD_FRAME_S = 0.02  # seconds of audio per energy frame
VAD_HOP_S = 0.01  # seconds between energy frames (= one mel frame)
SPEECH_BELOW_PEAK_DB = 35.0  # a frame quieter than the file's loud frames by more is a pause
LOUD_PERCENTILE = 95  # "the file's loud frames": this percentile of frame energies
SILENCE_FLOOR_DBFS = -60.0  # below this a frame is a pause whatever the file's level
MIN_PAUSE_S = 0.2  # shorter dips are inside words or between close words: never cut there


@dataclass(frozen=True)
class Chunk:
    start: int  # first sample in the recording
    stop: int  # one past the last sample

    @property
    def seek(self) -> int:
        """The chunk's first mel frame."""
        return self.start // HOP_LENGTH


def frame_energies_db(samples: np.ndarray) -> np.ndarray:
    """RMS in dB full scale of each VAD_FRAME_S frame, one per VAD_HOP_S."""
    frame, hop = int(VAD_FRAME_S * SAMPLE_RATE), int(VAD_HOP_S * SAMPLE_RATE)
    n = max(0, (len(samples) - frame) // hop + 1)
    if n == 0:
        return np.full(1, -np.inf)
    squares = np.concatenate([[0.0], np.cumsum(np.square(samples, dtype=np.float64))])
    starts = np.arange(n) * hop
    mean_square = (squares[starts + frame] - squares[starts]) / frame
    return 10 * np.log10(np.maximum(mean_square, 1e-20))


def find_pauses(samples: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(speech flags per VAD frame, pauses as (first, last + 1) frame ranges of at least
    MIN_PAUSE_S)."""
    energy = frame_energies_db(samples)
    loud = np.percentile(energy[np.isfinite(energy)], LOUD_PERCENTILE) if np.isfinite(energy).any() else -np.inf
    threshold = max(loud - SPEECH_BELOW_PEAK_DB, SILENCE_FLOOR_DBFS)
    speech = energy > threshold
    pauses, start = [], None
    min_frames = int(round(MIN_PAUSE_S / VAD_HOP_S))
    for i, is_speech in enumerate(np.append(speech, True)):
        if not is_speech and start is None:
            start = i
        elif is_speech and start is not None:
            if i - start >= min_frames:
                pauses.append((start, i))
            start = None
    return speech, pauses


def speech_span(samples: np.ndarray) -> tuple[float, float]:
    """(first, last) second of speech in a clip by the same energy rule as find_pauses; the
    whole clip when no frame counts as speech."""
    speech, _ = find_pauses(samples)
    frames = np.flatnonzero(speech)
    if len(frames) == 0:
        return 0.0, len(samples) / SAMPLE_RATE
    return frames[0] * VAD_HOP_S, min(frames[-1] * VAD_HOP_S + VAD_FRAME_S, len(samples) / SAMPLE_RATE)


def plan_chunks(samples: np.ndarray, max_samples: int, found=None) -> list[Chunk]:
    """Cut the recording into chunks of at most max_samples at the middle of pauses, taking the
    furthest pause that keeps the chunk short enough (fewest chunks); with no pause in reach, cut
    at max_samples. Chunks without a speech frame are dropped. ``found``: find_pauses(samples)
    if already computed."""
    speech, pauses = found or find_pauses(samples)
    hop = int(VAD_HOP_S * SAMPLE_RATE)
    cuts = [((a + b) // 2) * hop for a, b in pauses]
    chunks, start, total = [], 0, len(samples)
    while start < total:
        limit = start + max_samples
        if limit >= total:
            stop = total
        else:
            reachable = [c for c in cuts if start < c <= limit]
            stop = reachable[-1] if reachable else limit
        chunks.append(Chunk(start, stop))
        start = stop
    return [c for c in chunks if speech[c.start // hop:max(c.start // hop + 1, c.stop // hop)].any()]


def snap_to_speech(start: float, end: float, pauses_s: list[tuple[float, float]]) -> tuple[float, float]:
    """Segment times moved out of pauses: a start inside a pause goes to where speech resumes,
    an end inside a pause to where speech stopped. Whisper's timestamps are coarse at a chunk's
    start (a chunk opening with silence often gets <|0.00|>) and between sentences (one shared
    timestamp in the middle of the pause); the detector knows where the pauses are."""
    new_start, new_end = start, end
    for a, b in pauses_s:
        if a <= start < b:
            new_start = b
        if a < end <= b:
            new_end = a
    if new_end <= new_start:  # the segment lies inside one pause: nothing better to say
        return start, end
    return new_start, new_end


def chunk_input(model, source: ArrayAudio, chunk: Chunk, peak: Optional[float]):
    """The model input of one chunk: for fixed-window Whisper models the whole file's log-mel
    frames of the chunk padded with 0.0 to the window; otherwise its samples."""
    if not model.options.fixed_audio_window:
        return source.window(chunk.start, chunk.stop)
    n_frames, n_mels = model.window_frames, model.dims.n_mels
    count = min(n_frames, (chunk.stop - chunk.start) // HOP_LENGTH)
    window = torch.zeros(n_mels, n_frames)
    window[:, :count] = scale_log_mel(log10_mel_frames(source, chunk.seek, count, n_mels), peak)
    return window


def chunk_segments(state: FileState, chunk: Chunk, result: DecodingResult, tokenizer: Tokenizer,
                   opts: TranscribeOptions, pauses_s: list[tuple[float, float]]) -> None:
    """The segments of one decoded chunk, in file time. Pieces are split at timestamp pairs; a
    last piece without a closing timestamp runs to the chunk's end (there is no next window to
    decode it again). Times are then moved out of the detector's pauses (snap_to_speech)."""
    if is_silence(result, opts):
        return
    offset = chunk.start / SAMPLE_RATE
    chunk_end = chunk.stop / SAMPLE_RATE
    tokens = result.tokens
    begin = tokenizer.timestamp_begin
    pieces, start = [], 0
    for i in range(len(tokens) - 1):
        if tokens[i] >= begin and tokens[i + 1] >= begin:
            pieces.append(tokens[start:i + 1])
            start = i + 1
    pieces.append(tokens[start:])
    for piece in pieces:
        text_tokens = [t for t in piece if t < begin]
        if not text_tokens:
            continue
        times = [tokenizer.timestamp_of(t) for t in piece if t >= begin]
        seg_start = offset + times[0] if piece[0] >= begin else offset
        seg_end = offset + times[-1] if piece[-1] >= begin and len(times) > 1 else chunk_end
        seg_start, seg_end = snap_to_speech(seg_start, min(max(seg_end, seg_start), chunk_end), pauses_s)
        state.seek = chunk.seek
        add_segment(state, tokenizer, piece, seg_start, seg_end, result)


@dataclass
class PlannedFile:
    """A file read whole and cut into chunks, waiting for its chunks to be decoded."""

    state: FileState
    source: ArrayAudio
    chunks: list[Chunk]
    peak: Optional[float]  # whole-file log10 mel peak (fixed-window Whisper models)
    pauses_s: list[tuple[float, float]]
    left: int = 0  # chunks not decoded yet


def plan_file(model, state: FileState) -> PlannedFile:
    samples = state.audio.window(0, len(state.audio))
    source = ArrayAudio(samples)
    found = find_pauses(samples)
    chunks = plan_chunks(samples, model.window_frames * HOP_LENGTH, found)
    peak = log10_mel_peak(source, model.dims.n_mels) if model.options.fixed_audio_window and chunks else None
    pauses_s = [(a * VAD_HOP_S, b * VAD_HOP_S) for a, b in found[1]]
    return PlannedFile(state, source, chunks, peak, pauses_s, left=len(chunks))


def decode_chunks(model, tokenizer: Tokenizer, batch: list[tuple[PlannedFile, Chunk]], base: DecodingOptions,
                  opts: TranscribeOptions, english_only: bool,
                  on_progress: Optional[Callable[[float], None]]) -> None:
    """Encode a batch of chunks (of one or several files) and decode them, one decode per
    (prompt, language): a file's initial prompt conditions its first chunk only, as in Whisper."""
    pieces = [chunk_input(model, f.source, c, f.peak) for f, c in batch]
    if model.options.fixed_audio_window:
        mels, n_frames = torch.stack(pieces), None
    else:
        mels, n_frames = batch_log_mel(pieces, model.dims.n_mels)
        n_frames = n_frames.to(model.device)
    features, mask = encode_in_slices(model, mels.to(device=model.device, dtype=next(model.parameters()).dtype),
                                      n_frames)
    for i, (f, _) in enumerate(batch):
        if f.state.language is None:  # detected once per file, on its first chunk
            probs = detect_language(model, tokenizer, features[i:i + 1], None if mask is None else mask[i:i + 1])[0]
            f.state.language, f.state.language_probability = max(probs.items(), key=lambda kv: kv[1])
    groups: dict = {}
    for i, (f, c) in enumerate(batch):
        prompt = tuple(f.state.prompt) if c is f.chunks[0] else ()
        groups.setdefault((prompt, f.state.language), []).append(i)
    results: list = [None] * len(batch)
    for (prompt, language), rows in groups.items():
        options = replace(base, prompt=prompt, language=None if english_only else language)
        index = torch.tensor(rows, device=features.device)
        sub_features = features if len(rows) == len(batch) else features[index]
        sub_mask = None if mask is None else (mask if len(rows) == len(batch) else mask[index])
        decoded = decode_with_fallback(model, tokenizer, sub_features, sub_mask, options, opts,
                                       [batch[i][1].seek for i in rows])
        for i, result in zip(rows, decoded):
            results[i] = result
    for i, ((f, chunk), result) in enumerate(zip(batch, results)):
        n_segments = len(f.state.segments)
        chunk_segments(f.state, chunk, result, tokenizer, opts, f.pauses_s)
        if opts.word_timestamps and len(f.state.segments) > n_segments:
            # a file's chunks are decoded in order, so the rules that look back at the last
            # word read the chunk before
            sot = tokenizer.sot_sequence(None if english_only else f.state.language, base.task)
            f.state.last_speech_timestamp = add_word_timestamps(
                model, tokenizer, f.state.segments[n_segments:], sot, features[i:i + 1],
                (chunk.stop - chunk.start) // HOP_LENGTH, chunk.start / SAMPLE_RATE, f.state.language,
                f.state.last_speech_timestamp, opts.prepend_punctuations, opts.append_punctuations)
        f.left -= 1
    if on_progress:
        on_progress(sum(c.stop - c.start for _, c in batch) / SAMPLE_RATE)


def transcribe_stream_batched(model, tokenizer: Tokenizer, audios: Iterable,
                              opts: TranscribeOptions = TranscribeOptions(),
                              on_progress: Optional[Callable[[float], None]] = None,
                              english_only: bool = False) -> Iterator[tuple[int, Union[dict, AudioError]]]:
    """As transcribe_stream, with every file cut into chunks at pauses and the chunks decoded
    opts.batch_size at a time: the windows of one long file together, short files side by side.
    A file's result is yielded once its last chunk is decoded. Refuses
    condition_on_previous_text: the chunks would depend on each other again."""
    if opts.condition_on_previous_text:
        raise ValueError("batched transcription decodes the windows of a file independently: "
                         "it cannot condition on previous text")
    opts, initial, base = decoding_setup(tokenizer, opts, english_only)
    batch_size = max(1, opts.batch_size)
    queue: list[tuple[PlannedFile, Chunk]] = []  # chunks waiting, in file order
    waiting: list[PlannedFile] = []  # files with chunks not decoded yet, in input order

    def finished_files():
        for f in [f for f in waiting if f.left == 0]:
            waiting.remove(f)
            f.state.seek = f.state.total_frames
            yield f.state.index, make_result(f.state)

    inputs = enumerate(audios)
    while True:
        index, audio = next(inputs, (None, None))
        if index is not None:
            try:
                source = open_audio(audio) if isinstance(audio, (str, os.PathLike, np.ndarray)) else audio
                planned = plan_file(model, FileState(source, index=index, language=opts.language,
                                                     prompt=list(initial)))
            except AudioError as err:
                yield index, err
                continue
            waiting.append(planned)
            queue += [(planned, c) for c in planned.chunks]
            if len(queue) < batch_size:
                yield from finished_files()  # files without speech are done at once
                continue
        if not queue:
            yield from finished_files()
            return
        batch, queue = queue[:batch_size], queue[batch_size:]
        decode_chunks(model, tokenizer, batch, base, opts, english_only, on_progress)
        yield from finished_files()
