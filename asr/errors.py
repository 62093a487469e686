"""One-line error text, shared by every module that reports bad input.

A user error reads ``"<input>: <problem>"`` on a single line, so a batch can log it and move
on, and a person can see at once which file or option is at fault.
"""
from __future__ import annotations

import os
from typing import Optional, Union

MAX_REASON_CHARS = 200  # longer reasons (decoder messages, tracebacks' last lines) are cut


def one_line(text: object, limit: Optional[int] = None) -> str:
    """``text`` on a single line: every run of whitespace (newlines, tabs, Unicode line and
    paragraph separators) becomes one space, the ends are stripped, and past ``limit``
    characters it is cut with "..."."""
    text = " ".join(str(text).split())
    if limit is not None and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors often append pages of detail),
    or its type name when it has no message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class InputError(ValueError):
    """Bad input named by a path (or any other name): ``str(err)`` is ``"<path>: <reason>"``.

    ``.path`` and ``.reason`` hold the two parts; the reason is one line of at most
    MAX_REASON_CHARS characters.
    """

    def __init__(self, path: Union[str, os.PathLike], reason: object):
        self.path = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
        self.reason = one_line(reason, MAX_REASON_CHARS)
        super().__init__(f"{self.path}: {self.reason}")


__all__ = ["InputError", "MAX_REASON_CHARS", "first_line", "one_line"]
