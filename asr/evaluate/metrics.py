"""Error counts for WER and CER, from jiwer's alignments of normalised text.

Counts are kept per utterance and summed, so the corpus WER is total errors over total
reference words (the leaderboard's corpus-level WER, not a mean of per-utterance rates), and a
bootstrap or a shard merge only has to add counts.

An empty reference has no words to get wrong: every hypothesis word is an insertion. A corpus
with no reference words at all has WER 0 when nothing was inserted and infinity otherwise,
never a division by zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import jiwer

from ..text.normalize import basic_normalize


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations of one alignment (or a sum of them), over words or characters."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                           self.insertions + other.insertions, self.hits + other.hits)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def hypothesis_length(self) -> int:
        return self.substitutions + self.insertions + self.hits

    @property
    def rate(self) -> float:
        """errors / reference length (WER for word counts, CER for character counts)."""
        return error_rate(self.errors, self.reference_length)

    def as_dict(self) -> dict:
        return {"substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "hits": self.hits}


def error_rate(errors: int, reference_length: int) -> float:
    if reference_length == 0:
        return 0.0 if errors == 0 else math.inf
    return errors / reference_length


def _counts(output) -> ErrorCounts:
    return ErrorCounts(output.substitutions, output.deletions, output.insertions, output.hits)


def word_counts(reference: str, hypothesis: str) -> ErrorCounts:
    """Word edit counts of two (already normalised) texts; either may be empty."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref or not hyp:  # nothing to align: all insertions or all deletions
        return ErrorCounts(deletions=len(ref), insertions=len(hyp))
    return _counts(jiwer.process_words(" ".join(ref), " ".join(hyp)))


def char_counts(reference: str, hypothesis: str) -> ErrorCounts:
    """Character edit counts (spaces between words count as characters, as in jiwer's CER)."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    if not ref or not hyp:
        return ErrorCounts(deletions=len(ref), insertions=len(hyp))
    return _counts(jiwer.process_characters(ref, hyp))


class AlignedWord(NamedTuple):
    op: str  # "=" hit, "S" substitution, "D" deletion, "I" insertion
    ref: Optional[str]
    hyp: Optional[str]


_JIWER_OPS = {"equal": "=", "substitute": "S", "delete": "D", "insert": "I"}


def align_words(reference: str, hypothesis: str) -> list[AlignedWord]:
    """The word alignment behind `word_counts`, one entry per reference or inserted word."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref or not hyp:
        return [AlignedWord("D", w, None) for w in ref] + [AlignedWord("I", None, w) for w in hyp]
    out = []
    for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        op = _JIWER_OPS[chunk.type]
        refs = ref[chunk.ref_start_idx:chunk.ref_end_idx]
        hyps = hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if op == "I":
            out += [AlignedWord(op, None, h) for h in hyps]
        elif op == "D":
            out += [AlignedWord(op, r, None) for r in refs]
        else:  # "=" and "S" pair words one to one
            out += [AlignedWord(op, r, h) for r, h in zip(refs, hyps, strict=True)]
    return out


@dataclass(frozen=True)
class CorpusScore:
    words: ErrorCounts
    chars: ErrorCounts
    utterances: int
    sentence_errors: int  # utterances with at least one word error

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate

    @property
    def ser(self) -> float:
        return self.sentence_errors / self.utterances if self.utterances else 0.0


def score_corpus(references: Sequence[str], hypotheses: Sequence[str]) -> CorpusScore:
    """Summed word and character counts over (already normalised) pairs."""
    words, chars, wrong = ErrorCounts(), ErrorCounts(), 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        w = word_counts(ref, hyp)
        words, chars = words + w, chars + char_counts(ref, hyp)
        wrong += w.errors > 0
    return CorpusScore(words, chars, len(references), wrong)


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str],
               normalize: Callable[[str], str] = basic_normalize) -> float:
    """Corpus WER of raw texts after `normalize` (default: the basic normaliser) on both sides."""
    return score_corpus([normalize(r) for r in references], [normalize(h) for h in hypotheses]).wer


def agreement(hypotheses: Sequence[str], other: Sequence[str],
              normalize: Callable[[str], str] = basic_normalize) -> float:
    """Word-level agreement: 1 - WER of `hypotheses` measured against `other` as reference."""
    return 1.0 - corpus_wer(other, hypotheses, normalize)


__all__ = ["AlignedWord", "CorpusScore", "ErrorCounts", "agreement", "align_words", "char_counts",
           "corpus_wer", "error_rate", "score_corpus", "word_counts"]
