"""scripts/diagnose_checkpoint.py's split of the dev loss by token kind: the kinds it gives the
tokens of a transcript, against kinds written out by hand for a tokenizer whose pieces are known
(leading spaces, a piece that is only a space, punctuation glued to a word, a multi-byte
character cut in two)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "diagnose_checkpoint.py"


def load_script():
    spec = importlib.util.spec_from_file_location("diagnose_checkpoint", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PieceTokenizer:
    """Decodes as sentencepiece does: pieces joined, the leading space dropped; byte pieces
    joined as UTF-8, an incomplete character shown as U+FFFD."""

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace").lstrip()


def test_kinds_of_a_transcript():
    script = load_script()
    pieces = [b" the", b" c", b"at", b" ", b"s", b"at", b"!", b" caf", b"\xc3", b"\xa9"]
    tokenizer = PieceTokenizer(pieces)
    ids = list(range(len(pieces)))  # "the cat sat! café"
    seen = {"the", "sat"}
    assert tokenizer.decode(ids) == "the cat sat! café"
    assert script.token_kinds(ids, tokenizer, seen) == [
        "seen word, first token",  # "the"
        "unseen word, first token",  # " c"
        "unseen word, later token",  # "at"
        "word boundary",  # " "
        "seen word, first token",  # "s" of "sat!", whose key is "sat"
        "seen word, later token",
        "seen word, later token",  # "!"
        "unseen word, first token",  # " caf"
        "other",  # the first byte of "é": no clean prefix
        "unseen word, later token",  # the second byte completes "é"
    ]
