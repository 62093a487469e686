"""Audio in: decoding files to 16 kHz mono samples, streaming them window by window, and the
one Whisper log-mel front-end.

Modules: ``load`` (load_audio, AudioError), ``stream`` (files read window by window),
``features`` (mel filters, log-mel and its scaling) and ``whisper_windows`` (fixed 30 s windows
cut from whole-file features, as pretrained Whisper expects). Imports ``asr.errors`` and
third-party audio libraries only.
"""
from .features import (CHUNK_LENGTH, FRAMES_PER_SECOND, HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE,
                       batch_log_mel, log_mel_spectrogram, mel_filters, pad_or_trim)
from .load import AudioError, load_audio

__all__ = ["AudioError", "CHUNK_LENGTH", "FRAMES_PER_SECOND", "HOP_LENGTH", "N_FFT", "N_FRAMES", "N_SAMPLES",
           "SAMPLE_RATE", "batch_log_mel", "load_audio", "log_mel_spectrogram", "mel_filters", "pad_or_trim"]
