"""The one way the package writes a file: all of it or none of it, even across a crash.

A temporary file in the same directory (a rename is atomic only within one file system) is
written, flushed and fsynced, renamed over the target, and then the directory is fsynced so the
rename itself survives a power cut. Readers see the old file or the complete new one, never a
part; a failed write (a full disk, an exception, a signal) leaves the old file untouched.

This module imports nothing from ``asr``, so any layer may use it.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, os.PathLike]


def _new_file_mode() -> int:
    """0o666 less the process umask: what open() would give (mkstemp's 0600 would make shared
    caches and outputs private)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_directory(directory: PathLike) -> None:
    """Make a rename or a new entry in ``directory`` durable (a no-op where directories cannot be
    opened, as on Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` to create the content, then put it in place at ``path``.

    For writers that want a path of their own (safetensors, torch.save). The temporary file is
    fsynced before the rename; on any exception it is removed and the old ``path`` stays.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _new_file_mode()))
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    atomic_write(path, lambda temporary: temporary.write_bytes(data))


def write_text_atomic(path: PathLike, text: str) -> None:
    """UTF-8 text, newlines as given (no platform translation)."""
    write_bytes_atomic(path, text.encode("utf-8"))


__all__ = ["atomic_write", "fsync_directory", "write_bytes_atomic", "write_text_atomic"]
