"""Package attributes imported on first use (PEP 562).

`asr` and `asr.audio` re-export names whose modules import torch, and importing torch takes
about 2 s. The command line only needs torch once it runs a model: `asr --help`, a typo in an
option or a missing file should answer at once. A package lists its re-exports here instead of
importing them, and they load when first read."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """(__getattr__, __dir__) for `package`, serving `table` (public name -> relative module)."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        namespace[name] = value  # later reads skip this function
        return value

    def __dir__() -> list:
        return sorted({*namespace, *table})

    return __getattr__, __dir__
