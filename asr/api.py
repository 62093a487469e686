"""The Python API: `model = asr.load_model("tiny.en")`, then `model.transcribe("talk.wav")`."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .nn.ctc_head import CTC_HEAD_FILE
from .store.checkpoint import WEIGHTS_FILE, CheckpointError, load_checkpoint, load_tokenizer
from .store.registry import DEFAULT_MODEL, resolve
from .audio import AudioError
from .inference.transcribe import (TranscribeOptions, check_language, detect_file_language, transcribe_arrays,
                                   transcribe_stream)
from .audio.stream import open_audio
from .inference.batched import transcribe_stream_batched
from .inference.compute import FLOAT16_DECODER, SHORTLIST_TYPES, apply_compute_type, loading_converter, resolve_compute_type

OPTION_NAMES = {f.name for f in fields(TranscribeOptions)}


def transcribe_options(temperature: Union[float, Sequence[float], None] = None, **options) -> TranscribeOptions:
    """TranscribeOptions from whisper-style keyword arguments (temperature may be one value or
    the fallback sequence)."""
    unknown = set(options) - OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown transcribe option(s): {', '.join(sorted(unknown))}")
    if temperature is not None:
        options["temperatures"] = (temperature,) if isinstance(temperature, (int, float)) else tuple(temperature)
    return TranscribeOptions(**options)


class SpeechModel:
    """A loaded checkpoint with its tokenizer, ready to transcribe."""

    def __init__(self, model, tokenizer, path: Path, config: Optional[dict] = None,
                 compute_type: str = "float32"):
        if tokenizer is None:
            raise CheckpointError(f"{path}: checkpoint has no tokenizer, cannot transcribe")
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.compute_type = compute_type  # the concrete type the weights run in (auto resolved)
        whisper = (config or {}).get("whisper") or {}
        # imported English-only Whisper models take a bare <|startoftranscript|>
        self.english_only = whisper.get("multilingual") is False
        # Whisper's own list of non-speech tokens (symbols, music notes...), as faster-whisper
        # suppresses them by default
        self.suppress_tokens = tuple(whisper.get("suppress_ids") or ())
        # the cross-attention heads that follow the audio in time, for word timestamps (Whisper's
        # list, kept by the conversion; models trained here have none and use the default)
        if whisper.get("alignment_heads"):
            model.alignment_heads = [tuple(pair) for pair in whisper["alignment_heads"]]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def transcribe(self, audio: Union[str, Path, np.ndarray], **options) -> dict:
        """Transcribe a file path or a 16 kHz mono float array; returns the json output's dict:
        text, segments (start, end, text, avg_logprob, no_speech_prob, compression_ratio, ...),
        language, duration."""
        return self.transcribe_many([audio], **options)[0]

    def detect_language(self, audio: Union[str, Path, np.ndarray]) -> tuple[str, float, dict]:
        """(language code, its probability, every language's probability) from the first 30 s,
        as faster-whisper's WhisperModel.detect_language."""
        return detect_file_language(self.model, self.tokenizer, open_audio(audio))

    def _suppressing(self, options: dict) -> dict:
        """options with suppress_tokens as Whisper reads it: token ids (a list, or a string of
        comma-separated ids) in which -1 stands for the model's non-speech symbols; not given:
        those symbols. Raises ValueError for a string that is not such a list."""
        given = options.get("suppress_tokens")
        if given is None:
            return {**options, "suppress_tokens": self.suppress_tokens}
        if isinstance(given, str):
            try:
                given = [int(item) for item in given.split(",") if item.strip()]
            except ValueError:
                raise ValueError(f"suppress tokens {options['suppress_tokens']!r}: expected comma-separated "
                                 "token ids (-1: the model's non-speech symbols)") from None
        ids = []
        for token in given:
            ids.extend(self.suppress_tokens if token == -1 else [int(token)])
        return {**options, "suppress_tokens": tuple(dict.fromkeys(ids))}

    def check_options(self, batched: bool = False, **options) -> None:
        """Raise ValueError (one line) for options this model cannot honour, before any audio
        is read: an unknown language, translation with an English-only model, or batched
        decoding conditioned on previous text, joint CTC decoding without a CTC head."""
        opts = transcribe_options(**self._suppressing(options))
        bad = [t for t in opts.suppress_tokens if not 0 <= t < self.tokenizer.n_vocab]
        if bad:
            raise ValueError(f"suppress tokens: {bad[0]} is not a token id of this model (0 to "
                             f"{self.tokenizer.n_vocab - 1}, or -1 for its non-speech symbols)")
        if batched and opts.condition_on_previous_text:
            raise ValueError("batched transcription decodes the windows of a file independently: "
                             "it cannot condition on previous text")
        if opts.ctc_weight:
            if not 0.0 < opts.ctc_weight <= 1.0:
                raise ValueError(f"CTC weight {opts.ctc_weight}: must be between 0 and 1")
            if not opts.without_timestamps:
                raise ValueError("a CTC weight > 0 (joint CTC/attention decoding) runs without timestamps: "
                                 "add --without-timestamps (without_timestamps=True)")
            if self.model.ctc_head is None:
                raise ValueError(f"a CTC weight > 0: {self.path} has no CTC head ({CTC_HEAD_FILE}); only "
                                 "models trained with loss.ctc_weight > 0 have one")
        check_language(self.tokenizer, opts, self.english_only)

    def transcribe_many(self, audios: Sequence, on_progress=None, batched: bool = False, **options) -> list[dict]:
        """``batched=True``: each file's windows are cut at pauses and decoded batch_size at a
        time (asr.inference.batched), instead of files side by side window after window."""
        if batched:
            results = dict(self.transcribe_stream(audios, on_progress, batched=True, **options))
            for result in results.values():
                if isinstance(result, AudioError):
                    raise result
            return [results[i] for i in range(len(audios))]
        opts = transcribe_options(**self._suppressing(options))
        return transcribe_arrays(self.model, self.tokenizer, list(audios), opts, on_progress, self.english_only)

    def transcribe_stream(self, audios: Iterable, on_progress=None, batched: bool = False,
                          **options) -> Iterator[tuple[int, Union[dict, AudioError]]]:
        """Yield (index, result dict or AudioError) as each input finishes; a file that cannot be
        decoded costs no other file its transcript. At most batch_size files are open at once
        (with ``batched``: one file at a time, batch_size of its windows at once)."""
        opts = transcribe_options(**self._suppressing(options))
        run = transcribe_stream_batched if batched else transcribe_stream
        return run(self.model, self.tokenizer, audios, opts, on_progress, self.english_only)


def load_model(name_or_path: Union[str, Path] = DEFAULT_MODEL, device: Optional[str] = None,
               quiet: bool = False, compute_type: str = "auto") -> SpeechModel:
    """A built-in model name (e.g. "tiny.en") or a checkpoint directory. ``compute_type`` is
    auto (the default) or one of asr.inference.options.COMPUTE_TYPES (see
    asr.inference.compute); a type the device cannot run raises ValueError (ComputeTypeError)
    before anything is loaded."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    compute_type = resolve_compute_type(compute_type, device)
    path = resolve(name_or_path, quiet=quiet)
    convert = loading_converter(compute_type, path / WEIGHTS_FILE)
    # the shortlist reads rows of the embedding, so it keeps the table's own (mapped) layout
    keep_embedding = compute_type in SHORTLIST_TYPES
    # the float16 decoder types read the decoder's step weights from the file themselves
    model, config = load_checkpoint(path, device=device, convert=convert, for_inference=True,
                                    keep_embedding=keep_embedding, step_layout=compute_type not in FLOAT16_DECODER)
    tokenizer = load_tokenizer(path, config)
    if convert is None and tokenizer is not None:  # (without one, SpeechModel says so)
        apply_compute_type(model, compute_type, tokenizer.n_text, path / WEIGHTS_FILE)
    return SpeechModel(model, tokenizer, path, config, compute_type)
