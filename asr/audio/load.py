"""Decoding audio files to 16 kHz mono float32 samples.

soundfile (libsndfile) reads wav/flac/ogg/mp3 in-process; any other container (m4a, mp4,
webm, ...) goes through the ``ffmpeg`` executable if it is on PATH. Resampling is band-limited
(soxr), never linear interpolation, which would fold energy above the new Nyquist frequency
back into the speech band as aliasing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import soxr

from ..errors import InputError, one_line
from .constants import SAMPLE_RATE

SOUNDFILE_REASON_CHARS = 70  # how much of libsndfile's complaint goes into an error
FFMPEG_REASON_CHARS = 90  # the same for ffmpeg's stderr


class AudioError(InputError):
    """Any input that cannot be turned into audio samples.

    ``str(err)`` is a single line ``"<path>: <reason>"`` so that a data-loading loop can
    log it and move on; ``.path`` and ``.reason`` hold the two parts.
    """


class AudioWarning(UserWarning):
    """Audio that was read but had to be repaired (one line naming the file)."""


def replace_non_finite(samples: np.ndarray) -> int:
    """Set NaN and +-inf samples to 0 in place and return how many there were. One NaN reaches
    every STFT frame that overlaps it and, through the log-mel peak, a whole Whisper window:
    silence in its place costs 25 ms of audio instead of 30 s of transcript."""
    bad = ~np.isfinite(samples)
    count = int(bad.sum())
    if count:
        samples[bad] = 0.0
    return count


def warn_non_finite(path, count: int) -> None:
    warnings.warn(AudioWarning(f"{os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else path}: "
                               f"{count} non-finite samples (NaN/inf) replaced by 0"), stacklevel=2)


@contextmanager
def c_library_quiet():
    """Hide what C libraries print straight to file descriptor 2 while soundfile opens a file:
    libmpg123 writes "Warning: Xing stream size off by more than 1%..." for a cut mp3, a
    stray line among the one-line errors. libsndfile's own errors come back as exceptions."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded, captured): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def soundfile_name(path: Union[str, os.PathLike]) -> bytes:
    """The path as bytes for soundfile: it encodes str names strictly as UTF-8, which fails for
    names holding other bytes (os.fsdecode turns b"\xff" into a lone surrogate)."""
    return os.fsencode(path)


def check_audio_path(path: Union[str, os.PathLike]) -> None:
    """AudioError unless `path` is a readable, non-empty file: what can be told without decoding
    it (the command line checks its inputs this way before it loads a model)."""
    p = Path(path)
    try:
        os.stat(p)
    except FileNotFoundError:
        raise AudioError(path, "broken symbolic link" if p.is_symlink() else "file not found") from None
    except OSError as err:  # e.g. a symlink loop: "Too many levels of symbolic links"
        raise AudioError(path, err.strerror or str(err)) from None
    if p.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if not os.access(p, os.R_OK):
        raise AudioError(path, "permission denied")
    if p.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def load_audio(path: Union[str, os.PathLike], sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to a mono float32 waveform at ``sr`` Hz, shape [samples].

    Multichannel audio is averaged to mono. Raises AudioError for a missing path,
    a directory, an unreadable file, content that is not audio, or zero samples.
    """
    if not isinstance(sr, (int, np.integer)) or isinstance(sr, bool) or sr <= 0:
        raise ValueError(f"sr must be a positive int, got {sr!r}")
    check_audio_path(path)
    p = Path(path)
    try:
        with c_library_quiet():
            data, rate = sf.read(soundfile_name(p), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        sf_reason = (getattr(err, "error_string", None) or str(err)).rstrip(".")
        if sf_reason.startswith("File does not exist"):
            # libsndfile's mp3 reader says this for undecodable bytes; the file does exist
            sf_reason = "could not decode"
        data, rate = _decode_with_ffmpeg(p, path, sf_reason)

    samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if samples.size == 0:
        raise AudioError(path, "empty audio (0 samples)")
    bad = replace_non_finite(samples)  # before resampling, which would smear them out
    if bad:
        warn_non_finite(path, bad)
    if rate != sr:
        samples = soxr.resample(samples, rate, sr, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _decode_with_ffmpeg(p: Path, path, sf_reason: str) -> tuple[np.ndarray, int]:
    """Decode what libsndfile cannot read (m4a, mp4, webm, ...) with the ffmpeg CLI.

    ffmpeg writes a float32 WAV to a pipe at the file's own rate and channel count, so
    resampling (soxr) and downmixing (mean) stay the same as on the soundfile path.
    """
    sf_reason = one_line(sf_reason, SOUNDFILE_REASON_CHARS)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(
            path,
            f"not readable by soundfile ({sf_reason}); the ffmpeg executable is needed "
            "for this format (m4a, mp4, webm, ...) but is not on PATH",
        )
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(p), "-map", "0:a:0", "-vn",
        "-f", "wav", "-c:a", "pcm_f32le", "-",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        reason = _short_ffmpeg_error(proc.stderr.decode("utf-8", "replace"), p)
        raise AudioError(
            path,
            f"not an audio file or unsupported format (soundfile: {sf_reason}; "
            f"ffmpeg: {reason})",
        )
    try:
        data, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:  # should not happen: we chose the format
        raise AudioError(path, f"could not read ffmpeg's output ({err})") from None
    return data, rate


def _short_ffmpeg_error(stderr: str, p: Path) -> str:
    """Boil ffmpeg's stderr down to a short phrase without paths or '[mp3 @ 0x..]' tags."""
    lines = []
    for line in stderr.splitlines():
        line = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line.strip())
        for prefix in (str(p) + ":", p.name + ":"):
            if line.startswith(prefix):
                line = line[len(prefix) :].strip()
        if "matches no streams" in line:
            line = "no audio stream"
        elif "To ignore this" in line:  # ffmpeg's hint about '-map 0:a?', not for users
            continue
        if line and line not in lines:
            lines.append(line)
    return one_line("; ".join(lines) or "unknown error", FFMPEG_REASON_CHARS)
