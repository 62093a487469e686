"""How training transcripts are written before they are tokenised.

Corpora such as synth_en store transcripts lower case without punctuation. A model trained from
scratch learns that format and evaluation normalises it away, but a pretrained Whisper model
writes " Meanwhile, make sure..." (a leading space, sentence case, a final full stop): training
it on the bare format teaches it a new style of writing on top of the new acoustics, and every
transcript users get loses its capitals. ``whisper`` restores what can be restored without
knowing the original text: the leading space of Whisper's word tokens, a capital first letter,
a capital pronoun "I", and a full stop at the end.
"""
from __future__ import annotations

import re

TARGET_STYLES = ("as_is", "whisper")
SENTENCE_END = ".?!"
# the pronoun and its contractions (i, i'm, i've, i'll, i'd), as whole words
_PRONOUN_I = re.compile(r"\bi(?=$|[\s,;:?!]|'(?:m|ve|ll|d)\b)")


def whisper_style(text: str) -> str:
    """``"i think so"`` -> ``" I think so."``; text that is empty or blank stays as it is."""
    text = text.strip()
    if not text:
        return text
    text = _PRONOUN_I.sub("I", text)
    text = text[0].upper() + text[1:]
    if text[-1] not in SENTENCE_END:
        text += "."
    return " " + text


def apply_target_style(text: str, style: str) -> str:
    if style == "as_is":
        return text
    if style == "whisper":
        return whisper_style(text)
    raise ValueError(f"unknown target style {style!r} (choose from {', '.join(TARGET_STYLES)})")
