"""Whisper's log-mel features of a whole recording, computed one window at a time.

openai-whisper and faster-whisper featurise a recording once, whole: HOP_LENGTH zeros are
appended, the STFT frames are centred (reflect padding at the two ends of the recording only),
and the log compression is floored at 8 orders of magnitude below the peak of the WHOLE file.
A window cut out of those features differs from the log-mel of the window's samples alone in
two ways: frames at the window's edges see the neighbouring audio, and the floor follows the
file's peak, not the window's.

This module gives exactly the whole-file features while holding only one window of samples:
`log10_mel_frames` frames any range of the recording as the whole-file STFT would, and
`log10_mel_peak` finds the file's peak in a first pass, window by window. Pretrained Whisper
models (fixed 30 s windows) are fed this way; with it, asr's windows equal faster-whisper's.

A source is anything with len() in samples and window(start, stop) -> float32 samples
(asr.audio_stream's ArrayAudio and AudioStream).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .features import HOP_LENGTH, N_FFT, N_FRAMES, log10_mel, scale_log_mel

HALF_WINDOW = N_FFT // 2  # samples each side of a frame's centre


def content_frames(n_samples: int) -> int:
    """Frames a transcription steps through: one per hop of real audio."""
    return n_samples // HOP_LENGTH


def all_frames(n_samples: int) -> int:
    """Frames of the whole-file features: after the HOP_LENGTH appended zeros, the centred STFT
    has n // HOP + 2 frames and the last is dropped. The peak is taken over all of these."""
    return n_samples // HOP_LENGTH + 1


def _padded_samples(source, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of the recording with HOP_LENGTH zeros appended, reflected at its
    two ends as the centred STFT pads them (start may be negative, stop past the end)."""
    n_audio = len(source)
    total = n_audio + HOP_LENGTH  # the recording with its appended zeros
    lo, hi = max(start, 0), min(stop, total)
    audio = source.window(lo, min(hi, n_audio)) if lo < n_audio else np.zeros(0, np.float32)
    segment = np.concatenate([audio, np.zeros(hi - lo - len(audio), np.float32)])
    left, right = lo - start, stop - hi
    if left or right:
        if len(segment) <= max(left, right):
            raise ValueError(f"audio too short for the STFT: {n_audio} samples")
        segment = np.pad(segment, (left, right), mode="reflect")
    return segment


def log10_mel_frames(source, first: int, count: int, n_mels: int) -> Tensor:
    """log10 mel power [n_mels, count] of frames first .. first + count - 1, each exactly as in
    the STFT of the whole recording (frame k is centred on sample k * HOP_LENGTH)."""
    samples = _padded_samples(source, first * HOP_LENGTH - HALF_WINDOW,
                              (first + count - 1) * HOP_LENGTH + HALF_WINDOW)
    stft = torch.stft(torch.from_numpy(samples), N_FFT, HOP_LENGTH,
                      window=torch.hann_window(N_FFT), center=False, return_complex=True)
    return log10_mel(stft.abs() ** 2, n_mels)


def log10_mel_peak(source, n_mels: int, frames_per_pass: int = N_FRAMES) -> float:
    """The largest log10 mel power over all frames of the recording, read window by window."""
    total = all_frames(len(source))
    peak = -np.inf
    for first in range(0, total, frames_per_pass):
        count = min(frames_per_pass, total - first)
        peak = max(peak, float(log10_mel_frames(source, first, count, n_mels).max()))
    return peak


def whisper_window(source, seek: int, peak: float, n_mels: int, n_frames: int = N_FRAMES,
                   for_language: bool = False) -> Tensor:
    """The model input for the window starting at frame `seek`: up to n_frames frames of the
    whole-file features, right-padded with 0.0 (in the log-mel domain) to n_frames.

    `for_language`: the window faster-whisper detects the language on, which also takes the
    features' last frame (centred on the end of the audio), one more than transcription steps
    through; it differs from the transcription window only at the end of the file."""
    available = all_frames(len(source)) if for_language else content_frames(len(source))
    count = min(n_frames, available - seek)
    window = torch.zeros(n_mels, n_frames)
    if count > 0:
        window[:, :count] = scale_log_mel(log10_mel_frames(source, seek, count, n_mels), peak)
    return window


__all__ = ["content_frames", "all_frames", "log10_mel_frames", "log10_mel_peak", "whisper_window"]
