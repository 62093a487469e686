"""The Whisper log-mel front-end.

Everything the model hears goes through this module, so it follows Whisper's ``audio.py``
exactly where the numbers matter (window, hop, mel bank, log compression) and a pretrained
Whisper checkpoint sees the features it was trained on.
"""

from __future__ import annotations

import functools
import os
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from .constants import CHUNK_LENGTH, FRAMES_PER_SECOND, HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE

# Log-mel compression constants, as in Whisper.
LOG_FLOOR = 1e-10  # power floor before log10, so silence does not give -inf
DYNAMIC_RANGE = 8.0  # keep 8 orders of magnitude (80 dB) below the peak

AudioInput = Union[str, os.PathLike, np.ndarray, torch.Tensor]


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
MEL_LINEAR_HZ_PER_MEL = 200.0 / 3  # Hz per mel in the linear region
MEL_LOG_START_HZ = 1000.0  # where the logarithmic region begins
MEL_LOG_START_MEL = MEL_LOG_START_HZ / MEL_LINEAR_HZ_PER_MEL  # = 15 mels
MEL_LOG_STEP = np.log(6.4) / 27.0  # natural-log step per mel in the logarithmic region


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel of frequencies in Hz (float64), as librosa.hz_to_mel(htk=False)."""
    hz = np.atleast_1d(np.asarray(hz, dtype=np.float64))
    mels = hz / MEL_LINEAR_HZ_PER_MEL
    log_region = hz >= MEL_LOG_START_HZ
    mels[log_region] = MEL_LOG_START_MEL + np.log(hz[log_region] / MEL_LOG_START_HZ) / MEL_LOG_STEP
    return mels


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of hz_to_mel, as librosa.mel_to_hz(htk=False)."""
    mels = np.atleast_1d(np.asarray(mels, dtype=np.float64))
    hz = MEL_LINEAR_HZ_PER_MEL * mels
    log_region = mels >= MEL_LOG_START_MEL
    hz[log_region] = MEL_LOG_START_HZ * np.exp(MEL_LOG_STEP * (mels[log_region] - MEL_LOG_START_MEL))
    return hz


@functools.lru_cache(maxsize=None)
def _mel_filters_numpy(n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels) written out in numpy, in
    librosa's order of operations (float64 ramps, float32 weights), so it agrees with librosa to
    float32 rounding. librosa itself is not imported: its numba-compiled helpers cost over a
    second on the first call of every process (tested equal in tests/test_mel_filters.py)."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)  # centre of each STFT bin
    # n_mels + 2 band edges equally spaced in mel between 0 Hz and Nyquist
    lowest, highest = hz_to_mel(np.array([0.0, SAMPLE_RATE / 2]))
    edges_hz = mel_to_hz(np.linspace(lowest, highest, n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = np.subtract.outer(edges_hz, fft_hz)
    filters = np.zeros((n_mels, 1 + N_FFT // 2), dtype=np.float32)
    for i in range(n_mels):  # triangle i rises over band i and falls over band i + 1
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        filters[i] = np.maximum(0, np.minimum(rising, falling))
    # Slaney normalisation: each triangle has unit area (constant energy per channel)
    filters *= (2.0 / (edges_hz[2:n_mels + 2] - edges_hz[:n_mels]))[:, np.newaxis]
    filters.setflags(write=False)  # shared by every caller through the cache
    return filters


def mel_filters(n_mels: int, device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Mel filterbank matrix [n_mels, N_FFT // 2 + 1] projecting an STFT power spectrum.

    Same as Whisper's ``mel_filters.npz``: ``librosa.filters.mel(sr=16000, n_fft=400,
    n_mels=n_mels)`` with librosa's defaults, i.e. the Slaney mel scale and Slaney
    (area) normalisation. Whisper uses 80 (most models) or 128 (large-v3); any positive
    number is allowed for models trained from scratch. Computed once per n_mels.
    """
    if not isinstance(n_mels, (int, np.integer)) or isinstance(n_mels, bool) or n_mels <= 0:
        raise ValueError(f"n_mels must be a positive int, got {n_mels!r}")
    return torch.tensor(_mel_filters_numpy(int(n_mels)), device=device)


def log_mel_spectrogram(
    audio: AudioInput,
    n_mels: int = 80,
    padding: int = 0,
    device: Union[str, torch.device, None] = None,
) -> torch.Tensor:
    """Whisper's log-mel spectrogram.

    ``audio`` is a file path (loaded at 16 kHz with load_audio), a 16 kHz waveform
    [samples] giving [n_mels, samples // HOP_LENGTH], or a batch [batch, samples] of
    equal-length waveforms giving [batch, n_mels, samples // HOP_LENGTH]. ``padding``
    zero samples are appended on the right first. Computed on ``device`` if given,
    otherwise where the tensor lives.

    The log compression clips each utterance at 8 orders of magnitude below ITS OWN
    peak (Whisper computes one utterance at a time), so batching a quiet clip with a
    loud one does not change its features.
    """
    if isinstance(audio, (str, os.PathLike)):
        from .load import load_audio  # load imports this module's constants

        audio = load_audio(audio)
    if not torch.is_tensor(audio):
        audio = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if device is not None:
        audio = audio.to(device)
    audio = audio.to(torch.float32)
    if audio.dim() not in (1, 2):
        raise ValueError(f"audio must be [samples] or [batch, samples], got shape {tuple(audio.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    if audio.shape[-1] <= N_FFT // 2:
        # reflect padding of the centred STFT needs more than N_FFT // 2 samples
        raise ValueError(
            f"audio too short for the STFT: {audio.shape[-1]} samples (with padding), "
            f"need more than {N_FFT // 2}"
        )

    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(
        audio, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    # center=True gives samples // HOP_LENGTH + 1 frames; Whisper drops the last one so
    # that 30 s map to exactly N_FRAMES.
    power = stft[..., :-1].abs() ** 2

    log10_power = log10_mel(power, n_mels)
    peak = log10_power.amax(dim=(-2, -1), keepdim=True)  # one peak per utterance
    return scale_log_mel(log10_power, peak)


def log10_mel(power: torch.Tensor, n_mels: int) -> torch.Tensor:
    """log10 of the mel power [..., n_mels, frames] of an STFT power spectrum [..., N_FFT // 2 + 1,
    frames], floored at LOG_FLOOR."""
    return torch.clamp(mel_filters(n_mels, power.device) @ power, min=LOG_FLOOR).log10()


def scale_log_mel(log10_power: torch.Tensor, peak: Union[float, torch.Tensor]) -> torch.Tensor:
    """Whisper's compression of log10 mel power: floor DYNAMIC_RANGE orders of magnitude below
    ``peak`` (the utterance's, or for pretrained Whisper windows the whole file's), then
    (x + 4) / 4, which puts speech roughly in [-1, 1]."""
    return (torch.clamp(log10_power, min=peak - DYNAMIC_RANGE) + 4.0) / 4.0


def batch_log_mel(
    audios: list,
    n_mels: int = 80,
    device: Union[str, torch.device, None] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features for clips of different lengths: (mels [B, n_mels, T_max], n_frames [B]).

    Each clip is featurised on its own, so the result equals calling
    log_mel_spectrogram one by one (zero padding of the waveform would leak into the
    last STFT frames and into the per-utterance peak). The mels are then right-padded
    with 0.0 to the longest; ``n_frames`` (int64, on the same device) gives each
    clip's real length for masking.
    """
    if len(audios) == 0:
        raise ValueError("batch_log_mel needs at least one clip")
    mels = []
    for i, audio in enumerate(audios):
        mel = log_mel_spectrogram(audio, n_mels=n_mels, device=device)
        if mel.dim() != 2:
            raise ValueError(f"clip {i}: expected a 1-D waveform, got features of shape {tuple(mel.shape)}")
        mels.append(mel)
    n_frames = [mel.shape[-1] for mel in mels]
    batch = mels[0].new_zeros(len(mels), n_mels, max(n_frames))
    for i, mel in enumerate(mels):
        batch[i, :, : mel.shape[-1]] = mel
    return batch, torch.tensor(n_frames, dtype=torch.long, device=batch.device)


def pad_or_trim(array, length: int = N_SAMPLES, axis: int = -1):
    """Zero-pad or cut ``array`` (numpy or torch) along ``axis`` to ``length``.

    Whisper feeds its encoder fixed 30 s windows (N_SAMPLES samples or N_FRAMES
    frames); models with a length mask do not need this.
    """
    if torch.is_tensor(array):
        n = array.shape[axis]
        if n > length:
            return array.narrow(axis, 0, length)
        if n < length:
            pad = [0] * (2 * array.dim())
            dim = axis % array.dim()
            # F.pad lists (left, right) pairs starting from the LAST dimension
            pad[2 * (array.dim() - 1 - dim) + 1] = length - n
            return F.pad(array, pad)
        return array

    array = np.asarray(array)
    n = array.shape[axis]
    if n > length:
        return array.take(indices=range(length), axis=axis)
    if n < length:
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, length - n)
        return np.pad(array, widths)
    return array
