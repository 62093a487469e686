"""Reading a recording window by window, so transcribing a long file never holds all of it.

`open_audio(path)` gives a source of 16 kHz mono float32 samples with a length and
`window(start, stop)`. Files soundfile reads (wav, flac, ogg, mp3) are decoded block by block
and resampled with a streaming soxr resampler (the same output as resampling the whole file at
once); samples before the last window asked for are dropped, because transcription only moves
forward (a few hundred samples are kept behind it, for the STFT frames centred near the start
of the next window). `rewind()` starts a stream over, for a first pass over the file.
Containers only FFmpeg decodes (m4a, mp4, webm) are decoded whole.
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import soundfile as sf
import soxr

from .constants import N_FFT, SAMPLE_RATE
from .load import AudioError, c_library_quiet, load_audio, replace_non_finite, soundfile_name, warn_non_finite

READ_BLOCK_S = 10  # seconds of input decoded per read
KEEP_BEHIND = N_FFT  # samples kept before the last window start: an STFT frame reaches N_FFT/2 back


class ArrayAudio:
    """An in-memory waveform behind the same interface as AudioStream."""

    def __init__(self, samples: np.ndarray, name: str = "<array>"):
        self.samples = np.asarray(samples, dtype=np.float32)
        if not np.isfinite(self.samples).all():
            self.samples = self.samples.copy()  # the caller's array stays as it was
            warn_non_finite(name, replace_non_finite(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def window(self, start: int, stop: int) -> np.ndarray:
        return self.samples[start:stop]

    def rewind(self) -> None:
        """Nothing to do: every sample stays in memory."""


class AudioStream:
    def __init__(self, path: Union[str, os.PathLike], file: sf.SoundFile):
        self.path = path
        self.non_finite = 0  # NaN/inf samples replaced by 0 in this pass over the file
        self.warned = False
        self._start(file)

    def _start(self, file: sf.SoundFile) -> None:
        self.file = file
        rate = file.samplerate
        self.resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(
            rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        # soxr's output length for n input samples; corrected at the end of the file if needed
        self.length = file.frames if rate == SAMPLE_RATE else round(file.frames * SAMPLE_RATE / rate)
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0  # sample index of buffer[0]
        self.finished = False

    def __len__(self) -> int:
        return self.length

    def window(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop); anything more than KEEP_BEHIND samples before `start` is
        forgotten, and asking for it later is an error."""
        if start < self.buffer_start:
            raise ValueError(f"{self.path}: samples before {self.buffer_start} were already dropped "
                             f"(asked for {start}); rewind() to read them again")
        while not self.finished and self.buffer_start + len(self.buffer) < stop:
            self._read_block()
        keep_from = start - KEEP_BEHIND
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start:]
            self.buffer_start = keep_from
        return self.buffer[start - self.buffer_start:stop - self.buffer_start].copy()

    def rewind(self) -> None:
        """Start over from the first sample (reopening the file)."""
        if not self.file.closed:
            self.file.close()
        known_length = self.length if self.finished else None
        self.non_finite = 0
        try:
            with c_library_quiet():
                self._start(sf.SoundFile(soundfile_name(self.path)))
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise AudioError(self.path, f"cannot reopen ({err})") from None
        if known_length is not None:  # the exact length found at the end of the first pass
            self.length = known_length

    def _read_block(self) -> None:
        try:
            block = self.file.read(READ_BLOCK_S * self.file.samplerate, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioError(self.path, f"decoding failed mid-file ({err})") from None
        last = len(block) == 0 or self.file.tell() >= self.file.frames
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        self.non_finite += replace_non_finite(mono)  # before the resampler spreads them
        if self.resampler is not None:
            mono = self.resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
        self.buffer = np.concatenate([self.buffer, mono.astype(np.float32, copy=False)])
        if last:
            self.finished = True
            self.length = self.buffer_start + len(self.buffer)
            self.file.close()
            if self.non_finite and not self.warned:  # once per file, not per pass
                self.warned = True
                warn_non_finite(self.path, self.non_finite)


def open_audio(source) -> Union[AudioStream, ArrayAudio]:
    """A window-by-window source for a path, or a wrapper around a 16 kHz float array.
    Raises AudioError (one line naming the file) for anything unreadable or empty."""
    if isinstance(source, np.ndarray):
        return ArrayAudio(source)
    try:
        with c_library_quiet():
            file = sf.SoundFile(soundfile_name(source))
    except (sf.SoundFileError, RuntimeError, OSError, TypeError):
        # missing, not audio, or a container soundfile cannot read: load_audio tries FFmpeg
        # and raises the precise AudioError otherwise
        return ArrayAudio(load_audio(source))
    if file.frames == 0:
        file.close()
        raise AudioError(source, "empty audio (0 samples)")
    return AudioStream(source, file)
