"""What every command shares: the one error printer and the expansion of audio inputs."""
from __future__ import annotations

import argparse
import gc
import glob
import math
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

# Containers the audio loader reads (soundfile in-process, the rest through FFmpeg)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".webm", ".opus")
EXIT_OK, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 130


def printable(text: object) -> str:
    """Text safe to print on any terminal: file names that are not UTF-8 reach Python as lone
    surrogates (b"\xff" -> "\udcff"), which a UTF-8 stdout refuses; they are shown as \xff."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def error(message: str, bar=None) -> None:
    """One line on stderr, ``asr: error: <input>: <problem>``; through ``bar.write`` while a tqdm
    bar is on screen so the bar is redrawn below the message."""
    say(f"asr: error: {message}", bar)


def warning(message: str, bar=None) -> None:
    say(f"asr: warning: {message}", bar)


def say(line: str, bar=None) -> None:
    line = " ".join(printable(line).split())  # one line, whatever the message held
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


@contextmanager
def collector_paused():
    """Python's cyclic garbage collector off while torch is imported and a model loaded, then
    those objects frozen (gc.freeze: left out of every later pass) and collection back on.
    Importing torch makes ~170,000 objects that live as long as the process, and the
    collector's passes over them took 0.25 s of `asr transcribe`'s start-up (3 full, 32 middle
    and 352 young passes, timed with gc.callbacks; 2-core AMD EPYC, 2026-12-06); no pass runs
    during the transcription itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def check_output_dir(directory: str) -> Optional[str]:
    """The problem with writing outputs into ``directory`` (created if missing), or None. Run
    before any decoding, so a typo costs seconds, not the results of a long run."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        return f"{directory}: --output-dir is not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # the only sure test: access() ignores ACLs, mounts
            pass
    except OSError as err:
        return f"{directory}: cannot write outputs there ({err.strerror or err})"
    return None


def expand_patterns(inputs: Iterable[str]) -> list[str]:
    """Quoted globs ("talks/*.wav") are expanded here; a pattern that matches nothing stays, so
    it is reported as missing."""
    expanded = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else []
        expanded.extend(matches or [item])
    return expanded


def expand_inputs(inputs: Iterable[str], suffixes=AUDIO_SUFFIXES) -> Iterator[Path]:
    """Files as given; directories expanded to the audio files inside them (sorted)."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
        else:
            yield path


def temperatures(text: str) -> tuple[float, ...]:
    """argparse type: one temperature or a comma-separated fallback sequence ("0,0.2,0.4"),
    each a finite number >= 0. One value keeps the inputs that follow it out of the option
    (``--temperature 0 talk.wav``)."""
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not a number (give e.g. 0 or 0,0.2,0.4)") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{item} is not a temperature >= 0")
        values.append(value)
    return tuple(values)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def optional_float(text: str) -> Optional[float]:
    """argparse type of Whisper's threshold options: a number, or "none" to turn the check off."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or none") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def ctc_weight(text: str) -> float:
    """argparse type of --ctc-weight: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a batch size of 0 or a beam of -3 is refused before any
    work, with argparse's one-line usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value
