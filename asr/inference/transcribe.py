"""Transcribing whole recordings: consecutive windows of the model's input length, each decoded
with temperature fallback, moving on from the last complete timestamp (Whisper's seek rule).

Several files advance together in batches: every step takes the next window of up to
`batch_size` unfinished files and decodes them in one batch, so a batch gives what the files
give one by one. Each window is featurised on its own, so features never exist for the whole
file at once; for pretrained Whisper models a first pass over each file finds the peak that
Whisper's log-mel floor follows (asr.whisper_features).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import math
import os
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..audio import FRAMES_PER_SECOND, HOP_LENGTH, N_SAMPLES, SAMPLE_RATE, AudioError, batch_log_mel
from ..audio.constants import FRAMES_PER_TIMESTAMP
from ..audio.stream import open_audio
from .decoding import DecodingOptions, DecodingResult, decode, detect_language
from ..text.tokenizer import TIMESTAMP_STEP, Tokenizer
from ..audio.whisper_windows import log10_mel_peak, whisper_window
from .options import TranscribeOptions
from .word_timing import add_word_timestamps, speech_end

MIN_SAMPLE_LEN = 16  # tokens any window may take, however short (timestamps, a few words)
ENCODER_SLICE = 2  # windows per encoder call (see encode_in_slices)


@dataclass
class FileState:
    """One recording on its way through the windows."""

    audio: object  # ArrayAudio or AudioStream: len() in samples, window(start, stop)
    index: int = 0  # position among the inputs of the call
    seek: int = 0  # mel frames already transcribed
    segments: list = field(default_factory=list)
    prompt: list = field(default_factory=list)
    language: Optional[str] = None  # given, or detected on the first decoded window
    language_probability: Optional[float] = None  # set when detected
    peak: Optional[float] = None  # whole-file log10 mel peak (fixed-window Whisper models)
    # the last window's text ran past its last complete segment, so the next window starts
    # inside speech: its no-speech verdict alone does not skip it (see decode_with_fallback)
    in_speech: bool = False
    last_speech_timestamp: float = 0.0  # where the last word ended (word timestamps' rules)

    @property
    def total_frames(self) -> int:
        return len(self.audio) // HOP_LENGTH

    def whisper_peak(self, n_mels: int) -> float:
        """The whole file's log10 mel peak, found in a first pass over it (once)."""
        if self.peak is None:
            self.peak = log10_mel_peak(self.audio, n_mels)
            self.audio.rewind()
        return self.peak

    @property
    def done(self) -> bool:
        return self.seek >= self.total_frames


def needs_fallback(result: DecodingResult, opts: TranscribeOptions, trust_silence: bool = True) -> bool:
    if trust_silence and is_silence(result, opts):
        return False
    if opts.compression_ratio_threshold is not None and result.compression_ratio > opts.compression_ratio_threshold:
        return True
    return opts.logprob_threshold is not None and result.avg_logprob < opts.logprob_threshold


def is_silence(result: DecodingResult, opts: TranscribeOptions) -> bool:
    if opts.no_speech_threshold is None or result.no_speech_prob <= opts.no_speech_threshold:
        return False
    return opts.logprob_threshold is None or result.avg_logprob < opts.logprob_threshold


def window_generator(seed: int, seek: int, temperature: float, candidate: int = 0) -> torch.Generator:
    """The random stream for sampling one window at one temperature (its `candidate`-th sample,
    with best_of): a function of the seed, where the window starts, the temperature and the
    candidate only, so a rerun (or another batch size) samples the same tokens, and best_of=k
    draws the first k samples of best_of=k+1."""
    key = [seed, seek, round(temperature * TEMPERATURE_KEY_SCALE)] + ([candidate] if candidate else [])
    return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))


TEMPERATURE_KEY_SCALE = 1000  # temperatures are told apart to 0.001 in the seed


def best_attempt(attempts: list[DecodingResult], opts: TranscribeOptions) -> DecodingResult:
    """When every temperature fails its thresholds, the attempt to keep: the most probable
    (highest avg_logprob) of those that do not repeat themselves, else of all, as
    faster-whisper does. The last (hottest) attempt is usually the worst."""
    threshold = opts.compression_ratio_threshold
    fluent = [r for r in attempts if threshold is None or r.compression_ratio <= threshold]
    return max(fluent or attempts, key=lambda r: r.avg_logprob)


def decode_with_fallback(model, tokenizer, features, mask, base: DecodingOptions,
                         opts: TranscribeOptions, seeks: Optional[Sequence[int]] = None,
                         in_speech: Optional[Sequence[bool]] = None) -> list[DecodingResult]:
    """Decode at the first temperature; windows whose result repeats itself or is unsure are
    decoded again, alone with the others that failed, at the next temperature. A window that
    fails at every temperature keeps its best attempt (best_attempt). ``seeks`` (each window's
    start frame) seed the sampling per window.

    A no-speech verdict (is_silence) normally ends a window's fallback at once, as in Whisper.
    For windows known to start inside speech (``in_speech``: the previous window was cut at a
    timestamp with text running on) it does not: such a window, begun mid-word, often gets
    two words and <|endoftext|> at temperature 0 (P(no speech) 0.68, avg_logprob -1.9) and was
    dropped whole, 30 s of clear speech, while at 0.4 it decodes well (-0.39). The kept attempt
    is still judged by the rule afterwards, so silence stays silence."""
    seeks = list(seeks) if seeks is not None else [0] * features.shape[0]
    trust = [not s for s in in_speech] if in_speech is not None else [True] * features.shape[0]
    attempts: list[list[DecodingResult]] = [[] for _ in range(features.shape[0])]
    pending = list(range(features.shape[0]))
    for temperature in opts.temperatures:
        options = replace(base, temperature=temperature)
        index = torch.tensor(pending, device=features.device)
        sub_mask = None if mask is None else mask[index]
        if temperature > 0:
            # sampling instead of beam search: best_of samples of each window, the best ranked
            # kept, as Whisper does (one decode per candidate, so memory stays that of one)
            options = replace(options, beam_size=None)
            candidates = []
            for candidate in range(max(1, opts.best_of)):
                generators = [window_generator(opts.seed, seeks[i], temperature, candidate) for i in pending]
                candidates.append(decode(model, tokenizer, features[index], sub_mask, options, generators))
            results = [max(samples, key=lambda r: r.rank(options.length_penalty)) for samples in zip(*candidates)]
        else:
            results = decode(model, tokenizer, features[index], sub_mask, options)
        for i, result in zip(pending, results):
            attempts[i].append(result)
        pending = [i for i in pending if needs_fallback(attempts[i][-1], opts, trust[i])]
        if not pending:
            break
    return [best_attempt(a, opts) if i in pending else a[-1] for i, a in enumerate(attempts)]


def read_windows(model, states: list[FileState]) -> tuple[list[FileState], list, list[tuple[FileState, AudioError]]]:
    """Each file's next window: samples, or for pretrained Whisper models the log-mel window.
    Returns (files read, their windows, (file, error) for files that failed to decode), so a
    file that breaks half-way costs no other file its transcript."""
    window = model.window_frames
    n_mels = model.dims.n_mels
    read, pieces, failed = [], [], []
    for s in states:
        try:
            if model.options.fixed_audio_window:
                # Whisper's input exactly as openai-whisper and faster-whisper build it from the
                # whole file's features (edge frames see the neighbouring audio, the floor follows
                # the file's peak), padded with 0.0 in the log-mel domain to 30 s. Padding the
                # audio with silence instead changes the first tokens of many short clips.
                piece = whisper_window(s.audio, s.seek, s.whisper_peak(n_mels), n_mels, window)
            else:
                piece = s.audio.window(s.seek * HOP_LENGTH, (s.seek + window) * HOP_LENGTH)
        except AudioError as err:
            failed.append((s, err))
            continue
        read.append(s)
        pieces.append(piece)
    return read, pieces, failed


def window_features(model, pieces: list):
    """Model input for windows from read_windows: [files, n_mels, frames] and real frame counts
    (None for fixed Whisper windows, which are all full length)."""
    if model.options.fixed_audio_window:
        return torch.stack(pieces), None
    return batch_log_mel(pieces, model.dims.n_mels)


def ends_on_lone_timestamp(tokens: Sequence[int], tokenizer: Tokenizer) -> bool:
    """Text then one timestamp at the end: the window's last segment is complete and the next
    window starts after the whole window."""
    return [t >= tokenizer.timestamp_begin for t in tokens[-2:]] == [False, True]


def add_window_result(state: FileState, result: DecodingResult, tokenizer: Tokenizer,
                      window_frames: int, opts: TranscribeOptions) -> None:
    """Turn one window's tokens into segments and move the file's seek on."""
    frames = min(window_frames, state.total_frames - state.seek)
    offset = state.seek * HOP_LENGTH / SAMPLE_RATE
    state.in_speech = False
    if is_silence(result, opts):
        state.seek += frames
        return
    tokens = result.tokens
    begin = tokenizer.timestamp_begin
    is_ts = [t >= begin for t in tokens]
    single_timestamp_ending = ends_on_lone_timestamp(tokens, tokenizer)
    # positions right after a pair of timestamps: the boundaries between segments
    boundaries = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if boundaries:
        if single_timestamp_ending:
            boundaries.append(len(tokens))
        start = 0
        for end in boundaries:
            piece = tokens[start:end]
            add_segment(state, tokenizer, piece, offset + tokenizer.timestamp_of(piece[0]),
                        offset + tokenizer.timestamp_of(piece[-1]), result)
            start = end
        if single_timestamp_ending:
            advance = frames
        else:  # the text after the last complete segment is decoded again in the next window
            advance = (tokens[start - 1] - begin) * FRAMES_PER_TIMESTAMP
            state.in_speech = 0 < advance < frames
    else:
        timestamps = [t for t in tokens if t >= begin]
        duration = frames * HOP_LENGTH / SAMPLE_RATE
        if timestamps and timestamps[-1] != begin:
            duration = tokenizer.timestamp_of(timestamps[-1])
        add_segment(state, tokenizer, tokens, offset, offset + duration, result)
        advance = frames
    state.seek += advance if advance > 0 else frames
    if opts.condition_on_previous_text and result.temperature <= 0.5:
        state.prompt.extend(tokens)
    else:
        # as Whisper: an initial prompt conditions the first window only, and a hot (unsure)
        # window conditions nothing
        state.prompt = []


def add_segment(state: FileState, tokenizer: Tokenizer, tokens: list[int], start: float, end: float,
                result: DecodingResult) -> None:
    text = tokenizer.decode(tokens)
    if not text.strip():
        return
    # a timestamp token may point past the end of the audio (the last window is padded to
    # 30 s): no segment reaches beyond the recording
    duration = len(state.audio) / SAMPLE_RATE
    start, end = min(start, duration), min(end, duration)
    state.segments.append({
        "id": len(state.segments), "seek": state.seek, "start": round(start, 3), "end": round(end, 3),
        "text": text, "tokens": [int(t) for t in tokens], "temperature": result.temperature,
        "avg_logprob": result.avg_logprob, "compression_ratio": result.compression_ratio,
        "no_speech_prob": result.no_speech_prob,
    })


def skip_silent_windows(state: FileState, window: int, threshold_dbfs: Optional[float],
                        on_progress: Optional[Callable[[float], None]]) -> None:
    """Move past whole windows of (near-)digital silence without decoding them."""
    if threshold_dbfs is None:
        return
    floor = 10 ** (threshold_dbfs / 20)
    while not state.done:
        chunk = state.audio.window(state.seek * HOP_LENGTH, (state.seek + window) * HOP_LENGTH)
        if np.sqrt(np.mean(np.square(chunk, dtype=np.float64))) >= floor:
            return
        frames = min(window, state.total_frames - state.seek)
        state.seek += frames
        if on_progress:
            on_progress(frames * HOP_LENGTH / SAMPLE_RATE)


def make_result(state: FileState) -> dict:
    result = {
        "text": "".join(s["text"] for s in state.segments).strip(),
        "segments": state.segments,
        "language": state.language,
        "duration": round(len(state.audio) / SAMPLE_RATE, 3),
    }
    if state.language_probability is not None:
        result["language_probability"] = round(state.language_probability, 4)
    return result


def check_language(tokenizer: Tokenizer, opts: TranscribeOptions, english_only: bool) -> TranscribeOptions:
    """The options with the language settled where it can be without listening: English-only
    models and single-language tokenizers need no detection."""
    if english_only:
        if opts.task != "transcribe":
            raise ValueError(f"this model is English-only: it cannot {opts.task} "
                             "(use a multilingual model, e.g. --model base)")
        if opts.language not in (None, "en"):
            raise ValueError(f"this model is English-only: it cannot transcribe language {opts.language!r}")
        return replace(opts, language="en")
    if opts.language is None:
        if len(tokenizer.languages) == 1:
            return replace(opts, language=tokenizer.languages[0])
        return opts
    if opts.language not in tokenizer.languages:
        raise ValueError(f"language {opts.language!r} is not one this model knows; "
                         f"choose from {', '.join(tokenizer.languages)}")
    return opts


def decoding_setup(tokenizer: Tokenizer, opts: TranscribeOptions,
                   english_only: bool) -> tuple[TranscribeOptions, list[int], DecodingOptions]:
    """What every window of a transcription starts from: the options with the language settled,
    the initial prompt's tokens, and the decoding options shared by all windows."""
    opts = check_language(tokenizer, opts, english_only)
    initial = tokenizer.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt else []
    base = DecodingOptions(task=None if english_only else opts.task,
                           language=None if english_only else opts.language, beam_size=opts.beam_size,
                           patience=opts.patience, length_penalty=opts.length_penalty,
                           without_timestamps=opts.without_timestamps, suppress_tokens=tuple(opts.suppress_tokens),
                           ctc_weight=opts.ctc_weight)
    return opts, initial, base


def settle_languages(model, tokenizer: Tokenizer, states: list[FileState], features, mask) -> None:
    """Detect the language of the files in this batch that have none yet, from this window.

    The window is the one about to be transcribed. (faster-whisper detects on a window with one
    more frame when the file ends within it, the last of its features; re-encoding for that
    frame would cost a second encoder pass per short file, and it moves the probabilities by a
    few hundredths at most. `detect_file_language` uses faster-whisper's window exactly.)"""
    unknown = [i for i, s in enumerate(states) if s.language is None]
    if not unknown:
        return
    index = torch.tensor(unknown, device=features.device)
    probabilities = detect_language(model, tokenizer, features[index], None if mask is None else mask[index])
    for i, probs in zip(unknown, probabilities):
        states[i].language, states[i].language_probability = max(probs.items(), key=lambda kv: kv[1])


def detect_file_language(model, tokenizer: Tokenizer, audio) -> tuple[str, float, dict[str, float]]:
    """(language, its probability, every language's probability) of one recording from its
    first window, for Whisper models the window faster-whisper's detect_language uses."""
    state = FileState(audio)
    if model.options.fixed_audio_window:
        mels = whisper_window(audio, 0, state.whisper_peak(model.dims.n_mels), model.dims.n_mels,
                              model.window_frames, for_language=True)[None]
        n_frames = None
    else:
        _, pieces, failed = read_windows(model, [state])
        if failed:
            raise failed[0][1]
        mels, n_frames = window_features(model, pieces)
    with torch.inference_mode():
        features, mask = model.embed_audio(mels.to(device=model.device, dtype=next(model.parameters()).dtype),
                                           None if n_frames is None else n_frames.to(model.device))
    probabilities = detect_language(model, tokenizer, features, mask)[0]
    language = max(probabilities, key=probabilities.get)
    return language, probabilities[language], probabilities


def transcribe_stream(model, tokenizer: Tokenizer, audios: Iterable,
                      opts: TranscribeOptions = TranscribeOptions(),
                      on_progress: Optional[Callable[[float], None]] = None,
                      english_only: bool = False) -> Iterator[tuple[int, Union[dict, AudioError]]]:
    """Transcribe inputs (paths, 16 kHz mono float arrays, or sources from asr.audio.stream) and
    yield ``(index, result)`` as each one finishes, ``result`` being the result dict or, for an
    input that cannot be decoded (when opened or half-way), its AudioError; the others go on.

    At most ``opts.batch_size`` files are open at once; each step decodes the next window of
    the open files together, and a finished file's place goes to the next input. English-only
    Whisper models were trained with a bare <|startoftranscript|> (no language or task token):
    ``english_only`` decodes that way. With no language given, a multilingual model detects each
    file's language on its first decoded window, as Whisper does."""
    opts, initial, base = decoding_setup(tokenizer, opts, english_only)
    window = model.window_frames
    inputs = enumerate(audios)
    open_files: list[FileState] = []
    while True:
        while len(open_files) < max(1, opts.batch_size):  # refill the open files from the inputs
            index, audio = next(inputs, (None, None))
            if index is None:
                break
            try:
                source = open_audio(audio) if isinstance(audio, (str, os.PathLike, np.ndarray)) else audio
            except AudioError as err:
                yield index, err
                continue
            open_files.append(FileState(source, index=index, language=opts.language, prompt=list(initial)))
        for state in list(open_files):
            try:
                skip_silent_windows(state, window, opts.silence_rms_dbfs, on_progress)
            except AudioError as err:
                open_files.remove(state)
                yield state.index, err
        finished = [s for s in open_files if s.done]
        for state in finished:
            open_files.remove(state)
            yield state.index, make_result(state)
        if finished:
            continue  # their places go to the next inputs first
        if not open_files:
            return
        # one prompt per decoding batch: files whose prompt differs wait for a later step
        active = [s for s in open_files if s.prompt == open_files[0].prompt]
        active, pieces, failed = read_windows(model, active)
        for state, err in failed:
            open_files.remove(state)
            yield state.index, err
        if active:
            decode_step(model, tokenizer, active, pieces, base, opts, english_only, on_progress)


def encode_in_slices(model, mels: torch.Tensor, n_frames: Optional[torch.Tensor]):
    """The encoder output of a batch of windows, computed ENCODER_SLICE windows at a time: one
    30 s window already fills the matrix kernels (1500 rows), while the activations of 8 at once
    (MLP hidden states of 8 x 1500 x 1536 floats, twice) would add ~300 MB of peak memory and,
    no longer fitting the caches, take longer per window: Whisper tiny, 2 threads, per window at
    1, 2, 4 and 8 windows a call: float32 ~230, 230, 250, 250 ms; bfloat16_encoder 170, 170,
    210, 235 ms (2-core AMD EPYC with AVX512-BF16, 2026-12-06)."""
    features, masks = [], []
    with torch.inference_mode():
        for i in range(0, mels.shape[0], ENCODER_SLICE):
            out, mask = model.embed_audio(mels[i:i + ENCODER_SLICE], None if n_frames is None else n_frames[i:i + ENCODER_SLICE])
            features.append(out)
            masks.append(mask)
    if mels.shape[0] > ENCODER_SLICE and features[0].shape[1:] != features[-1].shape[1:]:
        # variable-length models: slices padded to different lengths, pad to the longest
        longest = max(f.shape[1] for f in features)
        features = [torch.nn.functional.pad(f, (0, 0, 0, longest - f.shape[1])) for f in features]
        masks = [torch.nn.functional.pad(m, (0, longest - m.shape[1])) for m in masks]
    mask = None if masks[0] is None else torch.cat(masks)
    return torch.cat(features), mask


def decode_step(model, tokenizer: Tokenizer, active: list[FileState], pieces: list, base: DecodingOptions,
                opts: TranscribeOptions, english_only: bool, on_progress) -> None:
    """Encode the files' next windows in one batch, decode them (one decode per language), and
    move each file on."""
    window = model.window_frames
    mels, n_frames = window_features(model, pieces)
    mels = mels.to(device=model.device, dtype=next(model.parameters()).dtype)
    n_frames = None if n_frames is None else n_frames.to(model.device)
    features, mask = encode_in_slices(model, mels, n_frames)
    settle_languages(model, tokenizer, active, features, mask)
    if opts.max_tokens_per_second is not None:
        seconds = max(min(window, s.total_frames - s.seek) for s in active) * HOP_LENGTH / SAMPLE_RATE
        cap = MIN_SAMPLE_LEN + math.ceil(opts.max_tokens_per_second * seconds)
        base = replace(base, sample_len=min(cap, model.dims.n_text_ctx // 2))
    results = [None] * len(active)
    for language in dict.fromkeys(s.language for s in active):
        rows = [i for i, s in enumerate(active) if s.language == language]
        options = replace(base, prompt=tuple(active[0].prompt), language=None if english_only else language)
        rows_features, rows_mask = features, mask
        if len(rows) < len(active):
            index = torch.tensor(rows, device=features.device)
            rows_features, rows_mask = features[index], None if mask is None else mask[index]
        seeks = [active[i].seek for i in rows]
        in_speech = [active[i].in_speech for i in rows]
        for i, result in zip(rows, decode_with_fallback(model, tokenizer, rows_features, rows_mask, options, opts,
                                                        seeks, in_speech)):
            results[i] = result
    for i, (state, result) in enumerate(zip(active, results)):
        before, n_segments = state.seek, len(state.segments)
        add_window_result(state, result, tokenizer, window, opts)
        if opts.word_timestamps and len(state.segments) > n_segments:
            sot = tokenizer.sot_sequence(None if english_only else state.language, base.task)
            time_window_words(model, tokenizer, state, state.segments[n_segments:], result, sot, features[i: i + 1],
                              min(window, state.total_frames - before), before, opts)
        if on_progress:
            on_progress((min(state.seek, state.total_frames) - before) * HOP_LENGTH / SAMPLE_RATE)


def time_window_words(model, tokenizer: Tokenizer, state: FileState, segments: list[dict], result: DecodingResult,
                      sot_sequence: Sequence[int], audio, frames: int, seek: int, opts: TranscribeOptions) -> None:
    """Word timestamps for the segments one window added (asr.inference.word_timing). As in
    Whisper and faster-whisper, a window that did not end on a lone timestamp is followed from
    the end of its last word, not from its last timestamp."""
    offset = seek * HOP_LENGTH / SAMPLE_RATE
    state.last_speech_timestamp = add_word_timestamps(
        model, tokenizer, segments, sot_sequence, audio, frames, offset, state.language, state.last_speech_timestamp,
        opts.prepend_punctuations, opts.append_punctuations)
    last_word_end = speech_end(segments, None)
    if not ends_on_lone_timestamp(result.tokens, tokenizer) and last_word_end is not None and last_word_end > offset:
        state.seek = round(last_word_end * FRAMES_PER_SECOND)


def transcribe_arrays(model, tokenizer: Tokenizer, audios: Sequence,
                      opts: TranscribeOptions = TranscribeOptions(),
                      on_progress: Optional[Callable[[float], None]] = None,
                      english_only: bool = False) -> list[dict]:
    """transcribe_stream collected in input order; the first input that cannot be decoded raises
    its AudioError once every other input is done."""
    results: list = [None] * len(audios)
    for index, result in transcribe_stream(model, tokenizer, audios, opts, on_progress, english_only):
        results[index] = result
    for result in results:
        if isinstance(result, AudioError):
            raise result
    return results


__all__ = ["TranscribeOptions", "transcribe_arrays", "transcribe_stream", "N_SAMPLES", "TIMESTAMP_STEP"]
