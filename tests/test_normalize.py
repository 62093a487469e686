"""asr.text.normalize and asr.evaluate.metrics: number words against hand-written expectations,
Whisper's English normaliser against openai/whisper's own published tests, and WER counts
against an independent edit-distance count."""
from __future__ import annotations

import math
import random

import pytest

from asr.evaluate.metrics import (agreement, align_words, char_counts, corpus_wer, score_corpus,
                                  word_counts)
from asr.text.normalize import (MAX_NUMBER, basic_normalize, get_normalizer, number_words,
                                ordinal_words, year_words)

# ---------------------------------------------------------------------------- number words


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (40, "forty"), (99, "ninety nine"),
    (100, "one hundred"), (101, "one hundred one"), (999, "nine hundred ninety nine"),
    (1000, "one thousand"), (1234, "one thousand two hundred thirty four"),
    (2_000_017, "two million seventeen"), (999_999_999, "nine hundred ninety nine million nine "
     "hundred ninety nine thousand nine hundred ninety nine"),
    (10**9, "one billion"), (1_000_000_001, "one billion one"),
    (12_345_678_901, "twelve billion three hundred forty five million six hundred seventy eight "
     "thousand nine hundred one"),
    (10**12 - 1, "nine hundred ninety nine billion nine hundred ninety nine million nine hundred "
     "ninety nine thousand nine hundred ninety nine"),
])  # fmt: skip
def test_number_words(n, words):
    assert number_words(n) == words


def test_number_words_range_is_checked():
    assert MAX_NUMBER == 10**12 - 1
    for bad in (-1, 10**12):
        with pytest.raises(ValueError, match="out of range"):
            number_words(bad)


@pytest.mark.parametrize("n, words", [
    (1984, "nineteen eighty four"), (1905, "nineteen oh five"), (1900, "nineteen hundred"),
    (2007, "two thousand seven"), (2000, "two thousand"), (2024, "twenty twenty four"),
])  # fmt: skip
def test_year_words(n, words):
    assert year_words(n) == words


@pytest.mark.parametrize("n, words", [
    (1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (8, "eighth"), (9, "ninth"),
    (12, "twelfth"), (21, "twenty first"), (40, "fortieth"), (100, "one hundredth"),
    (10**9, "one billionth"),
])  # fmt: skip
def test_ordinal_words(n, words):
    assert ordinal_words(n) == words


# ---------------------------------------------------------------------------- basic normaliser


@pytest.mark.parametrize("raw, normalised", [
    ("Hello, World!", "hello world"),
    ("It's 10 o'clock.", "its ten oclock"),
    ("Mr. Smith paid 1,000 dollars", "mister smith paid one thousand dollars"),
    ("50% & more", "fifty percent and more"),
    ("the 3rd time", "the three rd time"),
    ("a well-known fact", "a well known fact"),
    ("call 5000000000000 now", "call five zero zero zero zero zero zero zero zero zero zero zero zero now"),
    ("\u2018quoted\u2019   text\n", "quoted text"),
])  # fmt: skip
def test_basic_normalize(raw, normalised):
    assert basic_normalize(raw) == normalised


def test_basic_normalize_reaches_billions():
    # the old scripts/offline_testset.py copy read numbers from 10^9 digit by digit
    assert basic_normalize("3000000000 stars") == "three billion stars"


# ---------------------------------------------------------------------------- whisper-english

# From openai/whisper tests/test_normalizer.py (the published behaviour the port must keep).
WHISPER_PUBLISHED = [
    ("two", "2"), ("thirty one", "31"), ("five twenty four", "524"),
    ("nineteen ninety nine", "1999"), ("twenty nineteen", "2019"),
    ("two point five million", "2500000"), ("200 thousand dollars", "$200000"),
    ("three thousand twenty nine", "3029"), ("forty three thousand two hundred and sixty", "43260"),
    ("nineteen fifties", "1950s"), ("thirty first", "31st"), ("three billion", "3000000000"),
    ("july third twenty twenty", "july 3rd 2020"), ("3.14", "3.14"), ("ninety percent", "90%"),
    ("seventy six per cent", "76%"), ("double oh seven", "007"), ("nine one one", "911"),
    ("two dollars and seventy cents", "$2.70"), ("minus 500", "-500"), ("10th", "10th"),
    ("b747", "b 747"),
    ("mobilisation", "mobilization"),
    ("Let's", "let us"), ("he's like", "he is like"), ("she's been like", "she has been like"),
    ("10km", "10 km"), ("RC232", "rc 232"),
    ("Mr. Park visited Assoc. Prof. Kim Jr.", "mister park visited associate professor kim junior"),
]  # fmt: skip


@pytest.mark.parametrize("raw, normalised", WHISPER_PUBLISHED)
def test_whisper_english_published_behaviour(raw, normalised):
    assert get_normalizer("whisper-english")(raw) == normalised


def test_whisper_english_british_american_and_punctuation():
    english = get_normalizer("whisper-english")
    assert english("The colour of the theatre's centre.") == english("the color of the theater's center")
    assert english("Hmm, I organised it!") == "i organized it"  # filler dropped, spelling American
    assert english.version.startswith("whisper-normalizer 0.1.15")


def test_normalizer_names():
    assert get_normalizer("none")("  Keep  It, As IS ") == "Keep It, As IS"
    assert get_normalizer("basic")("Keep It") == "keep it"
    with pytest.raises(ValueError, match="unknown normalizer 'klingon'.*whisper-english"):
        get_normalizer("klingon")


# ---------------------------------------------------------------------------- metrics


def levenshtein_ops(ref: list[str], hyp: list[str]) -> int:
    """Minimum substitutions + deletions + insertions, by the textbook dynamic programme."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


HAND_MADE = [  # (reference, hypothesis, S, D, I, hits)
    ("the cat sat", "the cat sat", 0, 0, 0, 3),
    ("the cat sat", "the bat sat", 1, 0, 0, 2),
    ("the cat sat on the mat", "the cat on the mat", 0, 1, 0, 5),
    ("go forward", "go go forward", 0, 0, 1, 2),
    ("a b c d", "", 0, 4, 0, 0),
    ("", "an insertion here", 0, 0, 3, 0),
    ("", "", 0, 0, 0, 0),
]  # fmt: skip


@pytest.mark.parametrize("ref, hyp, s, d, i, h", HAND_MADE)
def test_word_counts_on_hand_made_pairs(ref, hyp, s, d, i, h):
    counts = word_counts(ref, hyp)
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.hits) == (s, d, i, h)
    assert counts.reference_length == len(ref.split())
    assert counts.hypothesis_length == len(hyp.split())


def test_word_counts_match_independent_edit_distance():
    rng = random.Random(0)
    vocabulary = "a b c d e f".split()
    refs, hyps = [], []
    for _ in range(300):
        refs.append(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 9))))
        hyps.append(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 9))))
    expected_errors = sum(levenshtein_ops(r.split(), h.split()) for r, h in zip(refs, hyps))
    expected_words = sum(len(r.split()) for r in refs)
    score = score_corpus(refs, hyps)
    assert score.words.errors == expected_errors
    assert score.words.reference_length == expected_words
    assert score.wer == pytest.approx(expected_errors / expected_words)
    chars = sum(levenshtein_ops(list(r), list(h)) for r, h in zip(refs, hyps))
    assert score.chars.errors == chars
    assert score.chars.reference_length == sum(len(r) for r in refs)


def test_alignment_agrees_with_counts():
    for ref, hyp, s, d, i, h in HAND_MADE:
        ops = [a.op for a in align_words(ref, hyp)]
        assert (ops.count("S"), ops.count("D"), ops.count("I"), ops.count("=")) == (s, d, i, h)
    assert align_words("the cat sat", "the bat sat")[1] == ("S", "cat", "bat")


def test_empty_references_are_insertions_never_division_by_zero():
    score = score_corpus(["", ""], ["hello", ""])
    assert score.words.insertions == 1 and score.words.reference_length == 0
    assert math.isinf(score.wer) and score.sentence_errors == 1
    assert score_corpus([""], [""]).wer == 0.0
    assert score_corpus([], []).wer == 0.0 and score_corpus([], []).ser == 0.0
    # mixed: the empty reference's insertions count against the other utterances' words
    assert score_corpus(["one two", ""], ["one two", "three"]).wer == pytest.approx(0.5)


def test_char_counts_and_sentence_errors():
    assert char_counts("abc", "abd").substitutions == 1
    score = score_corpus(["a b", "c d", "e"], ["a b", "c x", "e"])
    assert (score.sentence_errors, score.utterances) == (1, 3)
    assert score.ser == pytest.approx(1 / 3)


def test_corpus_wer_normalises_both_sides():
    assert corpus_wer(["He paid 10 dollars."], ["he paid ten dollars"]) == 0.0
    assert corpus_wer(["one two three four"], ["one two three"]) == pytest.approx(0.25)
    assert agreement(["one two three"], ["one two three four"]) == pytest.approx(0.75)
