"""Audio in: decoding files to 16 kHz mono samples, streaming them window by window, and the
one Whisper log-mel front-end.

Modules: ``constants`` (Whisper's sample rate, window and hop), ``load`` (load_audio,
AudioError), ``stream`` (files read window by window), ``features`` (mel filters, log-mel and its scaling) and ``whisper_windows`` (fixed 30 s windows
cut from whole-file features, as pretrained Whisper expects). Imports ``asr.errors`` and
third-party audio libraries only.
"""
from ..lazy import lazy_exports
from .constants import CHUNK_LENGTH, FRAMES_PER_SECOND, HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE
from .load import AudioError, load_audio

# the log-mel front-end needs torch: loaded on first use (asr.lazy)
__getattr__, __dir__ = lazy_exports(__name__, {name: ".features" for name in (
    "batch_log_mel", "log_mel_spectrogram", "mel_filters", "pad_or_trim")})

__all__ = ["AudioError", "CHUNK_LENGTH", "FRAMES_PER_SECOND", "HOP_LENGTH", "N_FFT", "N_FRAMES", "N_SAMPLES",
           "SAMPLE_RATE", "batch_log_mel", "load_audio", "log_mel_spectrogram", "mel_filters", "pad_or_trim"]
