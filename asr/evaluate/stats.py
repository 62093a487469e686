"""Bootstrap statistics over utterances (Bisani & Ney 2004; Koehn 2004).

The corpus WER is a ratio of sums, so a resample draws utterances with replacement and
recomputes sum(errors) / sum(reference words) on the draw. Both functions are seeded, so a
report is reproducible to the digit.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 1000  # resamples; the interval's ends move by well under 0.1% WER beyond this
CONFIDENCE = 0.95
SEED = 0
MAX_DRAW_ELEMENTS = 4_000_000  # indices drawn per block (32 MB as int64), to bound memory


def _ratios(errors: np.ndarray, words: np.ndarray, indices: np.ndarray) -> np.ndarray:
    total = words[indices].sum(axis=1)
    wrong = errors[indices].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, wrong / np.maximum(total, 1), np.where(wrong > 0, np.inf, 0.0))


def _draws(n: int, samples: int, seed: int):
    """Blocks of resampled index rows, `samples` rows of `n` indices in all."""
    rng = np.random.default_rng(seed)
    rows = max(1, MAX_DRAW_ELEMENTS // max(n, 1))
    done = 0
    while done < samples:
        k = min(rows, samples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


class Interval(NamedTuple):
    low: float
    high: float


def bootstrap_interval(errors: Sequence[int], words: Sequence[int], samples: int = BOOTSTRAP_SAMPLES,
                       confidence: float = CONFIDENCE, seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of the corpus error rate sum(errors) / sum(words)."""
    errors, words = np.asarray(errors, dtype=np.int64), np.asarray(words, dtype=np.int64)
    if len(errors) == 0:
        return Interval(0.0, 0.0)
    rates = np.concatenate([_ratios(errors, words, idx) for idx in _draws(len(errors), samples, seed)])
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(rates, tail, method="lower"), np.percentile(rates, 100 - tail, method="higher")
    return Interval(float(low), float(high))


class PairedResult(NamedTuple):
    a_better: float  # share of resamples where system A's corpus WER is lower than B's
    b_better: float
    ties: float


def paired_bootstrap(errors_a: Sequence[int], errors_b: Sequence[int], words: Sequence[int],
                     samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED) -> PairedResult:
    """Koehn's paired bootstrap: both systems scored on the same resampled utterances."""
    a, b = np.asarray(errors_a, dtype=np.int64), np.asarray(errors_b, dtype=np.int64)
    words = np.asarray(words, dtype=np.int64)
    if not (len(a) == len(b) == len(words)):
        raise ValueError("paired_bootstrap needs the same utterances for both systems")
    if len(a) == 0:
        return PairedResult(0.0, 0.0, 1.0)
    counts = np.zeros(3)
    for idx in _draws(len(a), samples, seed):
        # same words on both sides, so comparing error sums compares the WERs
        diff = a[idx].sum(axis=1) - b[idx].sum(axis=1)
        counts += [(diff < 0).sum(), (diff > 0).sum(), (diff == 0).sum()]
    return PairedResult(*(counts / samples))


__all__ = ["BOOTSTRAP_SAMPLES", "CONFIDENCE", "Interval", "PairedResult", "bootstrap_interval",
           "paired_bootstrap"]
