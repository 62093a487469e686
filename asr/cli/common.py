"""What every command shares: the one error printer and the expansion of audio inputs."""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Iterable, Iterator

# Containers the audio loader reads (soundfile in-process, the rest through FFmpeg)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".webm", ".opus")
EXIT_OK, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 130


def error(message: str, bar=None) -> None:
    """One line on stderr, ``asr: error: <input>: <problem>``; through ``bar.write`` while a tqdm
    bar is on screen so the bar is redrawn below the message."""
    line = f"asr: error: {message}"
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


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
