"""The ``asr`` command: one module per command group, one shared error printer (``common``).

The CLI only parses, calls the library (``asr.api`` and the sub-packages) and prints; user
errors are one line naming the input, and a batch goes on past a bad file.
"""
from .main import entry, main

__all__ = ["entry", "main"]
