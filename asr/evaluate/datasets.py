"""What `asr evaluate --data SOURCE` reads: a manifest, a LibriSpeech directory, a Hugging Face
dataset (a local copy or the local cache; audio read undecoded, decoded by our front-end), or a
preset name.

Presets:
- ``librispeech-test-clean`` / ``librispeech-test-other``: found under $ASR_LIBRISPEECH (the
  LibriSpeech directory, or the split directory itself), else $ASR_DATA_DIR/LibriSpeech
  (default ~/.cache/asr/data/LibriSpeech), else a local Hugging Face copy of
  openslr/librispeech_asr in the datasets cache; a one-line message says what to download
  when none is there.
- ``offline-en``: built from Debian packages (and recipes/synth_en if found) by
  `asr benchmark build offline-en DIR`; used from $ASR_DATA_DIR/offline-en, built there on
  first use.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..data.manifest import ManifestError, Utterance
from ..data.sources import SourceError, detect_source_type, load_source

DATA_ENV = "ASR_DATA_DIR"
LIBRISPEECH_ENV = "ASR_LIBRISPEECH"
LIBRISPEECH_PRESETS = {"librispeech-test-clean": "test-clean", "librispeech-test-other": "test-other"}
OFFLINE_EN = "offline-en"
PRESETS = (*LIBRISPEECH_PRESETS, OFFLINE_EN)
# The Hugging Face copy of LibriSpeech: dataset name, and the config + split of each preset
HF_LIBRISPEECH = "openslr/librispeech_asr"
HF_LIBRISPEECH_SPLITS = {"test-clean": ("clean", "test"), "test-other": ("other", "test")}
OPENSLR_URL = "https://www.openslr.org/resources/12/{split}.tar.gz"


class DatasetError(ValueError):
    """A SOURCE that cannot be evaluated; str(err) is one line naming it."""


@dataclass
class Dataset:
    name: str  # the report's name for it: a preset name, or from the path
    source: str  # as given on the command line
    utterances: list[Utterance]


def data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "asr" / "data")


def _librispeech_split(split: str) -> Optional[Path]:
    """The split directory of a local LibriSpeech copy, or None."""
    candidates = []
    if os.environ.get(LIBRISPEECH_ENV):
        root = Path(os.environ[LIBRISPEECH_ENV])
        candidates += [root if root.name == split else root / split]
    candidates.append(data_dir() / "LibriSpeech" / split)
    return next((c for c in candidates if c.is_dir()), None)


def _hf_librispeech_cached(split: str) -> bool:
    """Whether the datasets cache holds openslr/librispeech_asr with this split's config."""
    cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(os.environ.get("HF_HOME") or
                 Path.home() / ".cache" / "huggingface") / "datasets")
    config = HF_LIBRISPEECH_SPLITS[split][0]
    return any(cache.glob(f"openslr___librispeech_asr/{config}*"))


def _preset(name: str, work_dir: Path, split: Optional[str]) -> list[Utterance]:
    if name == OFFLINE_EN:
        from .benchmark import build_offline_en, find_synth_en

        manifest = data_dir() / OFFLINE_EN / "manifest.jsonl"
        if not manifest.exists():
            print(f"offline-en: building it in {manifest.parent} (once)")
            build_offline_en(manifest.parent, synth_en=find_synth_en())
        return load_source(str(manifest), "manifest")
    librispeech_split = LIBRISPEECH_PRESETS[name]
    folder = _librispeech_split(librispeech_split)
    if folder is not None:
        return load_source(str(folder), "librispeech")
    if _hf_librispeech_cached(librispeech_split):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the cache only, never the network
        config, hf_split = HF_LIBRISPEECH_SPLITS[librispeech_split]
        utterances = load_source(HF_LIBRISPEECH, "hf", out_path=work_dir / f"{name}.jsonl",
                                 split=hf_split, hf_config=config)
        for u in utterances:
            u.group = librispeech_split
        return utterances
    raise DatasetError(
        f"{name}: no local LibriSpeech {librispeech_split}: download "
        f"{OPENSLR_URL.format(split=librispeech_split)} and unpack it into {data_dir()} "
        f"(giving {data_dir() / 'LibriSpeech' / librispeech_split}), or set {LIBRISPEECH_ENV} to "
        f"your LibriSpeech directory, or cache {HF_LIBRISPEECH} ({HF_LIBRISPEECH_SPLITS[librispeech_split][0]}) "
        "with the datasets library")


def _name_for(source: str, kind: str, utterances: list[Utterance]) -> str:
    path = Path(source)
    if kind == "librispeech":
        groups = {u.group for u in utterances}
        return groups.pop() if len(groups) == 1 else path.name
    if kind == "manifest":
        generic = path.stem in ("manifest", "test", "dev", "data")
        return f"{path.parent.name}-{path.stem}" if generic and path.parent.name else path.stem
    name = re.sub(r"[^\w.-]", "_", path.name or source)
    splits = {u.group for u in utterances if u.group}
    return f"{name}-{splits.pop()}" if len(splits) == 1 else name  # a Hugging Face split


def load_dataset(source: str, work_dir: Path, split: Optional[str] = None) -> Dataset:
    """The utterances of one SOURCE. ``work_dir`` is where a Hugging Face dataset's audio is
    written (as 16 kHz FLAC) so that our own decoder reads it."""
    try:
        if source in PRESETS:
            return Dataset(source, source, _preset(source, work_dir, split))
        kind = detect_source_type(source)
        out_path = work_dir / (re.sub(r"[^\w.-]", "_", source) + ".jsonl")
        utterances = load_source(source, kind, out_path=out_path, split=split)
    except (SourceError, ManifestError) as err:
        raise DatasetError(str(err)) from None
    if not utterances:
        raise DatasetError(f"{source}: no utterances")
    return Dataset(_name_for(source, kind, utterances), source, utterances)


def load_datasets(sources: Sequence[str], work_dir: Path, split: Optional[str] = None) -> list[Dataset]:
    """Every SOURCE, with names made unique (a second "test" becomes "test-2")."""
    datasets, seen = [], set()
    for source in sources:
        dataset = load_dataset(source, work_dir, split)
        name, n = dataset.name, 1
        while dataset.name in seen:
            n += 1
            dataset.name = f"{name}-{n}"
        seen.add(dataset.name)
        datasets.append(dataset)
    return datasets


__all__ = ["Dataset", "DatasetError", "PRESETS", "data_dir", "load_dataset", "load_datasets"]
