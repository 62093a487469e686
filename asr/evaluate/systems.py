"""The systems `asr evaluate` can score, behind one small interface:

    system.name                      how reports and `asr compare` name it
    system.settings()                what makes its numbers reproducible (goes in the report)
    system.transcribe(audios)        16 kHz float32 arrays -> yields (index, text) as each is done

``asr``: a model of this package (asr.api.load_model), decoded by asr.inference's batched
transcription; the caller loads it, so this module stays below asr.api. Peers, for side-by-side
tables over the same utterances and normaliser (`asr evaluate --system NAME`):
``faster-whisper-int8`` / ``faster-whisper-float32`` run the same Whisper tiny.en weights
(the CTranslate2 model the default asr model is converted from) through CTranslate2, with the
same decoding options; ``pocketsphinx`` runs CMU PocketSphinx 5 with the en-us acoustic model,
language model and dictionary its wheel ships. Peers are optional installs
(pip install faster-whisper==1.2.1 pocketsphinx==5.1.1).
"""
from __future__ import annotations

from importlib import metadata
from typing import Iterator, Optional, Sequence

import numpy as np

# Decoding length tied to audio length: English speech takes ~4-7 Whisper tokens a second
# (words and timestamps); twice that stops only a hypothesis that loops.
MAX_TOKENS_PER_SECOND = 12.0
PEERS = ("faster-whisper-int8", "faster-whisper-float32", "pocketsphinx")
SYSTEMS = ("asr", *PEERS)


def package_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class AsrSystem:
    """A SpeechModel (asr.api) decoded with asr.inference.transcribe_stream, files batched."""

    batched = True  # results of a batch arrive together: per-utterance time is apportioned

    def __init__(self, speech_model, model_name: str, beam_size: Optional[int] = None, batch_size: int = 8,
                 temperatures: Sequence[float] = (0.0,), without_timestamps: bool = False, seed: int = 0,
                 ctc_weight: float = 0.0):
        from ..inference.transcribe import TranscribeOptions

        self.speech_model = speech_model
        self.model_name = model_name
        self.name = f"asr {model_name}"
        self.options = TranscribeOptions(language=None if speech_model.english_only else "en",
                                         beam_size=beam_size, batch_size=batch_size,
                                         temperatures=tuple(temperatures),
                                         without_timestamps=without_timestamps,
                                         condition_on_previous_text=False,
                                         suppress_tokens=tuple(speech_model.suppress_tokens),
                                         max_tokens_per_second=MAX_TOKENS_PER_SECOND, seed=seed,
                                         ctc_weight=ctc_weight)

    def settings(self) -> dict:
        import torch

        model = self.speech_model.model
        o = self.options
        return {"system": self.name, "model": self.model_name, "checkpoint": str(self.speech_model.path),
                "decoding": {"beam_size": o.beam_size or 1, "temperatures": list(o.temperatures),
                             "best_of": o.best_of if any(o.temperatures) else None,
                             "language": o.language or "en (English-only model)",
                             "without_timestamps": o.without_timestamps,
                             "condition_on_previous_text": o.condition_on_previous_text, "batch_size": o.batch_size,
                             "max_tokens_per_second": o.max_tokens_per_second, "seed": o.seed,
                             "ctc_weight": o.ctc_weight},
                "dtype": getattr(self.speech_model, "compute_type", None)
                or str(next(model.parameters()).dtype).replace("torch.", ""), "device": str(model.device),
                "threads": torch.get_num_threads(),
                "versions": {"asr": package_version("asr"), "torch": torch.__version__}}

    def transcribe(self, audios: Sequence[np.ndarray]) -> Iterator[tuple[int, str]]:
        from ..inference.transcribe import transcribe_stream

        m = self.speech_model
        for index, result in transcribe_stream(m.model, m.tokenizer, list(audios), self.options,
                                               english_only=m.english_only):
            if isinstance(result, Exception):
                raise result
            yield index, result["text"]


class FasterWhisperSystem:
    """faster-whisper on the bundled tiny.en CTranslate2 weights, one utterance at a time."""

    def __init__(self, compute_type: str, threads: int, beam_size: Optional[int] = None,
                 temperatures: Sequence[float] = (0.0,)):
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise ValueError("--system faster-whisper-*: pip install faster-whisper==1.2.1") from err
        from ..convert import bundled_model_dir

        self.compute_type = compute_type
        self.name = f"faster-whisper-{compute_type}"
        self.model_dir = bundled_model_dir()
        self.threads = threads
        self.beam_size = beam_size or 1
        self.temperatures = list(temperatures)
        self.model = WhisperModel(str(self.model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads)

    def settings(self) -> dict:
        return {"system": self.name, "model": "tiny.en (CTranslate2, bundled)", "checkpoint": str(self.model_dir),
                "decoding": {"beam_size": self.beam_size, "temperatures": self.temperatures, "language": "en",
                             "without_timestamps": False, "condition_on_previous_text": False, "batch_size": 1},
                "dtype": self.compute_type, "device": "cpu", "threads": self.threads,
                "versions": {"faster-whisper": package_version("faster-whisper"),
                             "ctranslate2": package_version("ctranslate2")}}

    def transcribe(self, audios: Sequence[np.ndarray]) -> Iterator[tuple[int, str]]:
        for index, audio in enumerate(audios):
            segments, _ = self.model.transcribe(
                audio, language="en", beam_size=self.beam_size, best_of=1, temperature=self.temperatures,
                condition_on_previous_text=False, without_timestamps=False, vad_filter=False, word_timestamps=False)
            yield index, "".join(s.text for s in segments).strip()


class PocketsphinxSystem:
    """CMU PocketSphinx with the models its wheel ships (en-us), one utterance at a time."""

    def __init__(self):
        try:
            from pocketsphinx import Decoder
        except ImportError as err:
            raise ValueError("--system pocketsphinx: pip install pocketsphinx==5.1.1") from err
        self.name = "pocketsphinx"
        self.decoder = Decoder(loglevel="FATAL")

    def settings(self) -> dict:
        config = self.decoder.config
        return {"system": self.name, "model": "en-us (bundled acoustic model, LM and dictionary)",
                "checkpoint": str(config["hmm"]), "decoding": {"samprate": int(config["samprate"]), "batch_size": 1},
                "dtype": "float32", "device": "cpu", "threads": 1,
                "versions": {"pocketsphinx": package_version("pocketsphinx")}}

    def transcribe(self, audios: Sequence[np.ndarray]) -> Iterator[tuple[int, str]]:
        for index, audio in enumerate(audios):
            pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hypothesis = self.decoder.hyp()
            yield index, hypothesis.hypstr if hypothesis is not None else ""


def make_peer(name: str, threads: int, beam_size: Optional[int] = None, temperatures: Sequence[float] = (0.0,)):
    if name.startswith("faster-whisper-") and name in PEERS:
        return FasterWhisperSystem(name.rsplit("-", 1)[1], threads, beam_size, temperatures)
    if name == "pocketsphinx":
        return PocketsphinxSystem()
    raise ValueError(f"unknown system {name!r}; choose one of {', '.join(SYSTEMS)}")


__all__ = ["AsrSystem", "FasterWhisperSystem", "PEERS", "PocketsphinxSystem", "SYSTEMS", "make_peer"]
