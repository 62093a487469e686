"""Text normalisation: one implementation for training text, validation and evaluation.

Numbers in words (`number_words`, `year_words`, `ordinal_words`) are what the synthetic recipe
uses to make sentences speakable and what the basic normaliser uses to compare transcripts, so
"10" in a hypothesis and "ten" in a reference meet in the middle the same way everywhere.

Normalisers, chosen by name with `get_normalizer`:
- ``whisper-english``: Whisper's English text normaliser (the `whisper-normalizer` package, a
  standalone port of openai/whisper's ``EnglishTextNormalizer``): the Open ASR Leaderboard's
  choice. Numbers become digits ("twenty one" -> "21"), British spellings American,
  contractions expanded ("let's" -> "let us"), fillers ("um", "hmm") removed.
- ``basic``: lower case, punctuation stripped, apostrophes dropped, integers written out in
  English words, Mr/Mrs/Dr spelled out. Small and predictable; the package's own.
- ``none``: the text as it is (raw WER), only whitespace runs collapsed.
"""
from __future__ import annotations

import re
from importlib import metadata
from typing import Callable, NamedTuple

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
MAX_NUMBER = 10**12 - 1  # people read longer numbers digit by digit


def number_words(n: int) -> str:
    """Cardinal in words, American style without "and": 1234 -> "one thousand two hundred thirty four".
    Defined for 0 <= n <= MAX_NUMBER; anything else raises ValueError."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (" " + _ONES[ones] if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + (" " + number_words(rest) if rest else "")
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return number_words(high) + " " + name + (" " + number_words(rest) if rest else "")
    raise AssertionError("unreachable")


def year_words(n: int) -> str:
    """How a year is read: 1984 -> "nineteen eighty four", 1900 -> "nineteen hundred",
    1905 -> "nineteen oh five", 2007 -> "two thousand seven"."""
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return number_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return number_words(high) + " hundred"
    if low < 10:
        return number_words(high) + " oh " + _ONES[low]
    return number_words(high) + " " + number_words(low)


def ordinal_words(n: int) -> str:
    """21 -> "twenty first", 40 -> "fortieth", 12 -> "twelfth"."""
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


# ---------------------------------------------------------------------------- normalisers

_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def basic_normalize(text: str) -> str:
    """Lower case, punctuation stripped, apostrophes dropped, integers in words."""
    t = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 -> 1000
    t = t.replace("%", " percent ").replace("&", " and ")
    t = re.sub(r"[^\w\s']|_", " ", t)  # punctuation (hyphens, dots, ...) -> space
    t = t.replace("'", "")
    t = re.sub(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)", " ", t)  # 10th -> 10 th
    words = []
    for w in t.split():
        if w.isascii() and w.isdigit():
            n = int(w)
            if n <= MAX_NUMBER:
                words.extend(number_words(n).split())
            else:  # too long to be read as one number: digit by digit
                words.extend(_ONES[int(d)] for d in w)
        else:
            words.append(_ABBREVIATIONS.get(w, w))
    return " ".join(words)


def no_normalize(text: str) -> str:
    return " ".join(text.split())


class Normalizer(NamedTuple):
    """A text normaliser with the name and version a report records for reproducibility."""

    name: str
    version: str
    apply: Callable[[str], str]

    def __call__(self, text: str) -> str:
        return self.apply(text)


NORMALIZERS = ("whisper-english", "basic", "none")


def _package_version() -> str:
    try:
        return metadata.version("asr")
    except metadata.PackageNotFoundError:
        return "unknown"


def get_normalizer(name: str) -> Normalizer:
    """The normaliser called ``name`` (one of NORMALIZERS); ValueError names the choices."""
    if name == "whisper-english":
        try:
            from whisper_normalizer.english import EnglishTextNormalizer
        except ImportError as err:
            raise ValueError("normalizer whisper-english needs the whisper-normalizer package "
                             "(pip install whisper-normalizer==0.1.15)") from err
        english = EnglishTextNormalizer()
        return Normalizer(name, "whisper-normalizer " + metadata.version("whisper-normalizer"),
                          lambda text: no_normalize(english(text)))
    if name == "basic":
        return Normalizer(name, "asr " + _package_version(), basic_normalize)
    if name == "none":
        return Normalizer(name, "asr " + _package_version(), no_normalize)
    raise ValueError(f"unknown normalizer {name!r}; choose one of {', '.join(NORMALIZERS)}")


__all__ = ["MAX_NUMBER", "NORMALIZERS", "Normalizer", "basic_normalize", "get_normalizer",
           "no_normalize", "number_words", "ordinal_words", "year_words"]
