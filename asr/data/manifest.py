"""JSONL manifests: one utterance per line.

    {"id": "19-198-0001", "audio": "audio/19-198-0001.flac", "text": "...", "duration": 14.23,
     "speaker": "19", "group": "train-clean-100"}

``audio`` is relative to the manifest's own directory, so a manifest and its audio can
be moved or copied together. ``speaker`` and ``group`` are optional; any other keys
are kept as they are and written back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

from ..store.atomic import write_text_atomic

PathLike = Union[str, os.PathLike]

REQUIRED_KEYS = ("id", "audio", "text", "duration")
OPTIONAL_KEYS = ("speaker", "group")
DURATION_DECIMALS = 3  # millisecond precision is plenty for durations in a manifest


class ManifestError(ValueError):
    """A manifest that cannot be read; str(err) is one line "file:line: problem"."""


@dataclass
class Utterance:
    """One audio file and its transcript.

    ``audio`` is the path as written in the manifest; it is resolved against
    ``base_dir`` (the manifest's directory). Sources build utterances with absolute
    paths, and write_manifest makes them relative to where the manifest goes.
    ``duration`` is None until measured.
    """

    id: str
    audio: str
    text: str
    duration: Optional[float] = None
    speaker: Optional[str] = None
    group: Optional[str] = None
    extra: dict = field(default_factory=dict)
    base_dir: str = field(default="", repr=False, compare=False)

    @property
    def audio_path(self) -> Path:
        """Absolute path of the audio file (symlinks are not resolved)."""
        return Path(os.path.abspath(os.path.join(self.base_dir, self.audio)))

    def to_json(self, manifest_dir: PathLike) -> dict:
        """The manifest line's object, with ``audio`` relative to ``manifest_dir``."""
        if self.duration is None:
            raise ValueError(f"utterance {self.id!r} has no duration (measure it before writing)")
        obj = {
            "id": self.id,
            "audio": _relative(self.audio_path, manifest_dir),
            "text": self.text,
            "duration": round(float(self.duration), DURATION_DECIMALS),
        }
        for key in OPTIONAL_KEYS:
            if getattr(self, key) is not None:
                obj[key] = getattr(self, key)
        obj.update(self.extra)
        return obj


def _relative(path: Path, directory: PathLike) -> str:
    try:
        relative = os.path.relpath(path, os.path.abspath(directory))
    except ValueError:  # e.g. another drive on Windows: there is no relative path
        return str(path)
    return Path(relative).as_posix()  # "/" in manifests on every platform


def read_manifest(path: PathLike) -> list[Utterance]:
    """Read a JSONL manifest; raise ManifestError "file:line: problem" on the first bad line."""
    utterances, problems = read_manifest_lines(path, duplicates=True)
    if problems:
        raise ManifestError(problems[0])
    return utterances


def read_manifest_lines(path: PathLike, duplicates: bool = False) -> tuple[list[Utterance], list[str]]:
    """Read a JSONL manifest line by line: (the utterances of every good line, one
    "file:line: problem" per bad line), so a checker can report all of them at once.
    ``duplicates`` also counts a repeated id as a bad line (validate() reports those itself).
    Raises ManifestError when the file cannot be read at all."""
    path = Path(path)
    base_dir = str(path.parent.absolute())
    try:
        # split as bytes (on \n, \r\n, \r only: str.splitlines would also cut a line at a
        # U+2028 inside a transcript), then decode line by line so one bad line is one problem
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a directory, not a manifest file") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read ({err.strerror})") from None

    utterances: list[Utterance] = []
    problems: list[str] = []
    first_line_of: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})")
            continue
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) carry nothing
        try:
            utterance = _parse_line(line, where, base_dir)
        except ManifestError as err:
            problems.append(str(err))
            continue
        if duplicates and utterance.id in first_line_of:
            problems.append(f"{where}: duplicate id {utterance.id!r} (first on line {first_line_of[utterance.id]})")
            continue
        first_line_of.setdefault(utterance.id, number)
        utterances.append(utterance)
    return utterances, problems


def _parse_line(line: str, where: str, base_dir: str) -> Utterance:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        # json's messages may end in "at" ("Unterminated string starting at"): column first
        raise ManifestError(f"{where}: invalid JSON at column {err.colno}: {err.msg}") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in obj]
    if missing:
        raise ManifestError(f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")

    for key in ("id", "audio"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise ManifestError(f"{where}: {key!r} must be a non-empty string, got {obj[key]!r}")
    if not isinstance(obj["text"], str):
        raise ManifestError(f"{where}: 'text' must be a string, got {obj['text']!r}")
    duration = obj["duration"]
    # bool is an int in Python, but true/false is surely a mistake for a duration
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration >= 0:
        raise ManifestError(f"{where}: 'duration' must be a number of seconds >= 0, got {duration!r}")
    for key in OPTIONAL_KEYS:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ManifestError(f"{where}: {key!r} must be a string or null, got {obj[key]!r}")

    extra = {k: v for k, v in obj.items() if k not in REQUIRED_KEYS and k not in OPTIONAL_KEYS}
    return Utterance(
        id=obj["id"],
        audio=obj["audio"],
        text=obj["text"],
        duration=float(duration),
        speaker=obj.get("speaker"),
        group=obj.get("group"),
        extra=extra,
        base_dir=base_dir,
    )


def write_manifest(path: PathLike, utterances: Iterable[Utterance]) -> int:
    """Write utterances as JSONL with audio paths relative to the manifest's directory.

    The file is written to a temporary name and renamed into place, so a reader never
    sees half a manifest and an interrupted run leaves the old one intact.
    Returns the number of lines written.
    """
    path = Path(path)
    directory = path.parent.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(u.to_json(directory), ensure_ascii=False) for u in utterances]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)
