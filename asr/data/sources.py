"""Turn the usual shapes of speech data into a list of Utterances.

Sources:
  manifest     an existing JSONL manifest (re-rooted to wherever the new one is written)
  librispeech  LibriSpeech's layout: SPLIT/SPEAKER/CHAPTER/*.flac + SPEAKER-CHAPTER.trans.txt
  folder       audio files plus metadata.csv or metadata.jsonl (file_name, text[, speaker])
  hf           a Hugging Face dataset, by hub name or local path (needs `pip install datasets`)

Local sources point at the audio where it lies. The Hugging Face source writes each
clip next to the output manifest as 16 kHz FLAC, decoded by our own front-end
(asr.audio.load_audio), never by the datasets library's decoder (torchcodec).
Durations are left for validate() to measure, which also reports what is broken.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import soundfile as sf

from ..errors import one_line
from ..audio import SAMPLE_RATE, AudioError, load_audio
from .manifest import ManifestError, PathLike, Utterance, read_manifest

SOURCE_TYPES = ("manifest", "librispeech", "folder", "hf")
MANIFEST_SUFFIXES = (".jsonl", ".json")
FOLDER_METADATA = ("metadata.csv", "metadata.jsonl")
LIBRISPEECH_TRANSCRIPTS = "*.trans.txt"
# Files that make a local directory a Hugging Face dataset: save_to_disk's bookkeeping,
# or data files the datasets library has a builder for.
HF_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
HF_DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json", ".csv")
# "name" or "owner/name" as the Hub spells dataset ids
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Characters allowed in file names derived from utterance ids; the rest become "_".
UNSAFE_FILE_CHARS = re.compile(r"[^\w.-]")
ERROR_CHARS = 300  # how much of a datasets library error goes into ours


class SourceError(ValueError):
    """A source that cannot be read at all; str(err) is one line naming it."""


def load_source(
    source: str,
    source_type: str = "auto",
    out_path: Optional[PathLike] = None,
    split: Optional[str] = None,
    hf_config: Optional[str] = None,
    hf_audio_column: str = "audio",
    hf_text_column: str = "text",
    streaming: bool = False,
    max_items: Optional[int] = None,
    progress: bool = False,
) -> list[Utterance]:
    """Read ``source`` as ``source_type`` ("auto" guesses it; see detect_source_type).

    ``out_path`` is the manifest to be written; the hf source puts its audio files
    in a folder next to it (``<stem>_audio/``). ``max_items`` keeps the first N.
    """
    if source_type == "auto":
        source_type = detect_source_type(source)
    if source_type == "manifest":
        utterances = from_manifest(source)
    elif source_type == "librispeech":
        utterances = from_librispeech(source, split=split)
    elif source_type == "folder":
        utterances = from_folder(source)
    elif source_type == "hf":
        if out_path is None:
            raise ValueError("the hf source needs out_path: its audio is written next to the manifest")
        return from_hf(
            source,
            audio_dir=hf_audio_dir(out_path),
            split=split,
            config=hf_config,
            audio_column=hf_audio_column,
            text_column=hf_text_column,
            streaming=streaming,
            max_items=max_items,
            progress=progress,
        )
    else:
        raise ValueError(f"source_type must be 'auto' or one of {SOURCE_TYPES}, got {source_type!r}")
    return utterances[:max_items] if max_items is not None else utterances


def detect_source_type(source: str) -> str:
    """Guess the type from what is at ``source`` (or that it looks like a Hub name)."""
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return "manifest"
        raise SourceError(f"{source}: a file, but not a .jsonl manifest; give --source-type")
    if path.is_dir():
        if _find_librispeech_transcripts(path, limit=1):
            return "librispeech"
        if any((path / name).is_file() for name in FOLDER_METADATA):
            return "folder"
        if any((path / name).is_file() for name in HF_MARKERS) or any(
            p.suffix.lower() in HF_DATA_SUFFIXES for p in path.rglob("*") if p.is_file()
        ):
            return "hf"
        raise SourceError(
            f"{source}: cannot tell what kind of data set this is (no *.trans.txt, "
            f"{' or '.join(FOLDER_METADATA)}, or Hugging Face data files); give --source-type"
        )
    if HUB_NAME.match(source) and not source.startswith("."):
        return "hf"  # not on disk, so it can only be a Hub dataset name
    raise SourceError(f"{source}: no such file or directory")


# ------------------------------------------------------------------ manifest


def from_manifest(path: PathLike) -> list[Utterance]:
    # The utterances keep their absolute audio paths; write_manifest re-roots them.
    return read_manifest(path)


# ------------------------------------------------------------------ LibriSpeech


def _find_librispeech_transcripts(root: Path, limit: Optional[int] = None) -> list[Path]:
    """SPEAKER-CHAPTER.trans.txt files two levels down (a split directory) or three
    (a LibriSpeech root holding several splits)."""
    found: list[Path] = []
    for pattern in (f"*/*/{LIBRISPEECH_TRANSCRIPTS}", f"*/*/*/{LIBRISPEECH_TRANSCRIPTS}"):
        for p in root.glob(pattern):
            found.append(p)
            if limit is not None and len(found) >= limit:
                return found
    return sorted(found)


def from_librispeech(root: PathLike, split: Optional[str] = None) -> list[Utterance]:
    """LibriSpeech layout: SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-NNNN.flac with one
    SPEAKER-CHAPTER.trans.txt per chapter ("UTTERANCE-ID TRANSCRIPT" lines).

    ``root`` is a split directory (e.g. .../LibriSpeech/train-clean-100) or the
    LibriSpeech directory above the splits; ``split`` picks one split under it.
    speaker = the speaker directory's name, group = the split directory's name.
    """
    root = Path(root)
    if split is not None and root.name != split:
        if not (root / split).is_dir():
            raise SourceError(f"{root}: no split directory {split!r} here")
        root = root / split
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    transcripts = _find_librispeech_transcripts(root)
    if not transcripts:
        raise SourceError(f"{root}: no SPEAKER/CHAPTER/{LIBRISPEECH_TRANSCRIPTS} files: not a LibriSpeech-layout directory")

    utterances = []
    for transcript in transcripts:
        chapter_dir = transcript.parent
        speaker = chapter_dir.parent.name
        group = chapter_dir.parent.parent.name
        try:
            lines = transcript.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise SourceError(f"{transcript}: cannot read ({err})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            # an id with no text is kept (text ""), so validation reports it by id
            uid, _, text = line.strip().partition(" ")
            utterances.append(
                Utterance(
                    id=uid,
                    audio=str((chapter_dir / f"{uid}.flac").absolute()),
                    text=text.strip(),
                    speaker=speaker,
                    group=group,
                )
            )
    return utterances


# ------------------------------------------------------------------ folder + metadata


def from_folder(folder: PathLike) -> list[Utterance]:
    """Audio files with a metadata.csv or metadata.jsonl beside them (the layout of the
    datasets library's "audiofolder"): columns file_name (relative to the folder) and
    text, optionally id, speaker and group. The id defaults to file_name without its
    extension."""
    folder = Path(folder)
    present = [folder / name for name in FOLDER_METADATA if (folder / name).is_file()]
    if not present:
        raise SourceError(f"{folder}: no {' or '.join(FOLDER_METADATA)} in this folder")
    if len(present) > 1:
        raise SourceError(f"{folder}: both {' and '.join(FOLDER_METADATA)}; keep one")
    metadata = present[0]
    rows = _read_csv(metadata) if metadata.suffix == ".csv" else _read_jsonl(metadata)

    utterances = []
    for where, row in rows:
        for column in ("file_name", "text"):
            if not isinstance(row.get(column), str):
                raise SourceError(f"{where}: column {column!r} missing or not text (columns: {', '.join(row)})")
        file_name = row["file_name"]
        default_id = Path(file_name).with_suffix("").as_posix()
        utterances.append(
            Utterance(
                id=str(row.get("id") or default_id),
                audio=str((folder / file_name).absolute()),
                text=row["text"].strip(),
                speaker=_optional_str(row.get("speaker")),
                group=_optional_str(row.get("group")),
            )
        )
    return utterances


def _optional_str(value) -> Optional[str]:
    return None if value is None or value == "" else str(value)


def _read_csv(path: Path) -> Iterable[tuple[str, dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate Excel's BOM
            reader = csv.DictReader(f)
            rows = [(f"{path}:{reader.line_num}", row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SourceError(f"{path}: cannot read ({err})") from None
    return rows


def _read_jsonl(path: Path) -> Iterable[tuple[str, dict]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SourceError(f"{path}: cannot read ({err})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SourceError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise SourceError(f"{path}:{number}: expected a JSON object")
        rows.append((f"{path}:{number}", row))
    return rows


# ------------------------------------------------------------------ Hugging Face


def hf_audio_dir(out_path: PathLike) -> Path:
    """Where the hf source writes audio for the manifest ``out_path``: <stem>_audio/ beside it."""
    out_path = Path(out_path)
    return out_path.parent / f"{out_path.stem}_audio"


def from_hf(
    name_or_path: str,
    audio_dir: PathLike,
    split: Optional[str] = None,
    config: Optional[str] = None,
    audio_column: str = "audio",
    text_column: str = "text",
    streaming: bool = False,
    max_items: Optional[int] = None,
    progress: bool = False,
) -> list[Utterance]:
    """A Hugging Face dataset (Hub name, save_to_disk directory, or a folder of
    parquet/jsonl/csv files), with each clip written to ``audio_dir`` as 16 kHz FLAC.

    The audio column is read undecoded (bytes or a path): decoding is ours. A clip
    our front-end cannot decode is kept as the original bytes so that validation
    names it. Optional columns used when present: id, speaker_id or speaker.
    """
    from tqdm import tqdm

    dataset, split = _open_hf(name_or_path, config, split, streaming)
    columns = dataset.column_names  # None for some streamed datasets: not known until read
    if columns is not None:
        for column, option in ((audio_column, "--hf-audio-column"), (text_column, "--hf-text-column")):
            if column not in columns:
                raise SourceError(f"{name_or_path}: no column {column!r} (columns: {', '.join(columns)}); see {option}")
    dataset = _undecoded(dataset, audio_column)

    local_root = Path(name_or_path) if Path(name_or_path).exists() else None
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    total = _length(dataset)
    if max_items is not None:
        total = max_items if total is None else min(total, max_items)

    utterances = []
    used_names: set[str] = set()
    rows = tqdm(dataset, desc=f"reading {name_or_path}", unit="utt", total=total, disable=not progress)
    for index, row in enumerate(rows):
        if max_items is not None and index >= max_items:
            break
        for column in (audio_column, text_column):
            if column not in row:
                raise SourceError(f"{name_or_path}: row {index} has no column {column!r} (columns: {', '.join(row)})")
        uid = str(row.get("id") if row.get("id") is not None else f"{split or 'row'}-{index:06d}")
        audio = _hf_audio_file(row[audio_column], uid, index, audio_dir, used_names, local_root, name_or_path)
        speaker = row.get("speaker_id", row.get("speaker"))
        text = row[text_column]
        utterances.append(
            Utterance(
                id=uid,
                audio=str(audio),
                text=text.strip() if isinstance(text, str) else "",
                speaker=None if speaker is None else str(speaker),
                group=split,
            )
        )
    rows.close()
    return utterances


def _open_hf(name_or_path: str, config: Optional[str], split: Optional[str], streaming: bool):
    """(Dataset or IterableDataset, split name) for a Hub name or a local directory."""
    try:
        import datasets
    except ImportError:
        raise SourceError(
            "the Hugging Face source needs the datasets library: pip install 'asr[hf]' (or pip install datasets)"
        ) from None

    path = Path(name_or_path)
    try:
        if path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(path))  # written by save_to_disk
            if streaming and isinstance(loaded, datasets.Dataset):
                loaded = loaded.to_iterable_dataset()
        else:
            loaded = datasets.load_dataset(name_or_path, config, split=split, streaming=streaming)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        hint = "" if path.exists() else " (a Hub dataset needs network access; a local copy works offline)"
        raise SourceError(f"{name_or_path}: cannot load as a Hugging Face dataset: {one_line(err, ERROR_CHARS)}{hint}") from None
    except Exception as err:  # the datasets library raises many of its own types
        raise SourceError(
            f"{name_or_path}: cannot load as a Hugging Face dataset: {type(err).__name__}: {one_line(err, ERROR_CHARS)}"
        ) from None

    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        names = list(loaded)
        if split is None and len(names) == 1:
            split = names[0]
        if split not in loaded:
            wanted = "choose one with --split" if split is None else f"no split {split!r}"
            raise SourceError(f"{name_or_path}: {wanted} (splits: {', '.join(names)})")
        if streaming and isinstance(loaded[split], datasets.Dataset):
            return loaded[split].to_iterable_dataset(), split
        return loaded[split], split
    return loaded, split or (str(loaded.split) if getattr(loaded, "split", None) else None)


def _undecoded(dataset, audio_column: str):
    """Cast an Audio column to Audio(decode=False), so rows give {"bytes", "path"}
    instead of going through the datasets library's torchcodec decoder. Columns of
    plain paths or {"bytes", "path"} structs are used as they are (casting a string
    column to Audio fails with pandas 3)."""
    from datasets import Audio

    features = dataset.features
    if features is not None and isinstance(features.get(audio_column), Audio):
        return dataset.cast_column(audio_column, Audio(decode=False))
    return dataset


def _length(dataset) -> Optional[int]:
    try:
        return len(dataset)
    except TypeError:  # an IterableDataset has no length
        return None


def _hf_audio_file(value, uid: str, index: int, audio_dir: Path, used_names: set, local_root, source: str) -> Path:
    """The file an hf row's audio ends up in (written as FLAC when it came as bytes)."""
    if isinstance(value, str):
        value = {"bytes": None, "path": value}
    if not isinstance(value, dict) or not ("bytes" in value or "path" in value):
        raise SourceError(
            f"{source}: row {index}: the audio column holds {type(value).__name__}, expected "
            "encoded audio bytes or a file path (decoded arrays are not supported)"
        )
    data, original = value.get("bytes"), value.get("path")
    if data is None:
        if not original:
            raise SourceError(f"{source}: row {index}: audio has neither bytes nor a path")
        path = Path(original)
        if not path.is_absolute() and local_root is not None and local_root.is_dir():
            path = local_root / path  # relative paths in a local data set are relative to it
        return path.absolute()  # an existing file stays where it is

    name = _unique_name(UNSAFE_FILE_CHARS.sub("_", uid), used_names)
    suffix = Path(original).suffix.lower() if original else ""
    raw = audio_dir / f"{name}.source{suffix or '.bin'}"
    raw.write_bytes(data)
    try:
        samples = load_audio(raw, sr=SAMPLE_RATE)
    except AudioError:
        return raw.absolute()  # keep the undecodable bytes: validation reports this file
    flac = audio_dir / f"{name}.flac"
    # 16-bit FLAC is lossless for 16-bit sources; clip first, since float samples beyond
    # full scale would wrap around when converted to integers
    sf.write(str(flac), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    raw.unlink()
    return flac.absolute()


def _unique_name(name: str, used: set) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}"
    used.add(candidate)
    return candidate


__all__ = [
    "SOURCE_TYPES",
    "SourceError",
    "ManifestError",
    "detect_source_type",
    "load_source",
    "from_manifest",
    "from_librispeech",
    "from_folder",
    "from_hf",
    "hf_audio_dir",
]
