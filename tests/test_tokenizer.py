"""Tests for asr.tokenizer: Whisper's token layout over a sentencepiece text vocabulary.

Expected ids are computed here from the layout written out in full (n_text + offset),
not read back from the tokenizer's own tables.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sentencepiece", reason="sentencepiece is not installed (pip install sentencepiece)")

from asr.text.tokenizer import Tokenizer  # noqa: E402

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, doesn't she?",
    "In 1969, Apollo 11 landed on the Moon at 20:17 UTC.",
    "Mr. Smith paid $42.50 for 3 books -- a bargain!",
    "HELLO there; how are you (today)?",
    "and mister john dashwood had then leisure to consider how much there might be",
    "He was not an ill disposed young man, unless to be rather cold hearted.",
] * 20

ROUND_TRIP = [
    "The quick brown fox jumps over the lazy dog.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9, 3.14159, 1,000,000 and 2024-05-17.",
    "MiXeD CaSe, UPPER and lower.",
    "Punctuation!? \"quotes\" 'single' (parens) [brackets] {braces} #hash @at 100% & more...",
    "Café, naïve, façade, Zürich, São Paulo.",  # letters not in the corpus: byte fallback
    "Unicode beyond Latin: Ελληνικά, русский, 日本語, emoji 🎉.",
    "double  spaces and a trailing space ",
    "<|endoftext|> written as text stays text",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(CORPUS, vocab_size=320, languages=("en", "de"))


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_round_trip(model_type):
    tokenizer = Tokenizer.train(CORPUS, vocab_size=320, model_type=model_type)
    for text in ROUND_TRIP:
        ids = tokenizer.encode(text)
        assert all(0 <= i < tokenizer.n_text for i in ids), text
        assert tokenizer.decode(ids) == text


def test_special_text_is_not_a_special_token(tok):
    ids = tok.encode("<|endoftext|>")
    assert tok.eot not in ids and all(i < tok.n_text for i in ids)


def test_layout(tok):
    n = tok.n_text
    # Whisper's order: eot, sot, languages..., translate, transcribe, startoflm,
    # startofprev, nospeech, notimestamps, then 1501 timestamps.
    assert tok.eot == n + 0
    assert tok.sot == n + 1
    assert tok.language_token("en") == n + 2
    assert tok.language_token("de") == n + 3
    assert tok.translate == n + 4
    assert tok.transcribe == n + 5
    assert tok.sot_lm == n + 6
    assert tok.sot_prev == n + 7
    assert tok.no_speech == n + 8
    assert tok.no_timestamps == n + 9
    assert tok.timestamp_begin == n + 10
    assert tok.n_vocab == n + 10 + 1501
    assert tok.sot_sequence("de", "translate") == (n + 1, n + 3, n + 4)
    assert tok.sot_sequence() == (n + 1, n + 2, n + 5)
    assert tok.sot_sequence(None, None) == (n + 1,)
    assert tok.sot_sequence_including_notimestamps == (n + 1, n + 2, n + 5, n + 9)
    with pytest.raises(KeyError):
        tok.language_token("fr")
    with pytest.raises(KeyError):
        tok.language_token("endoftext")


def test_default_languages_layout():
    tokenizer = Tokenizer.train(CORPUS, vocab_size=340)
    n = tokenizer.n_text
    assert tokenizer.languages == ("en",)
    assert (tokenizer.eot, tokenizer.sot, tokenizer.language_token("en")) == (n, n + 1, n + 2)
    assert (tokenizer.translate, tokenizer.transcribe, tokenizer.no_timestamps) == (n + 3, n + 4, n + 8)
    assert tokenizer.timestamp_begin == n + 9
    assert tokenizer.n_vocab == n + 9 + 1501


def test_timestamps(tok):
    stamps = [tok.timestamp_of(t) for t in range(tok.timestamp_begin, tok.n_vocab)]
    assert len(stamps) == 1501
    assert stamps == [round(i * 0.02, 2) for i in range(1501)]
    assert stamps[0] == 0.0 and stamps[54] == 1.08 and stamps[-1] == 30.0
    assert tok.timestamp_token(1.08) == tok.timestamp_begin + 54
    with pytest.raises(ValueError):
        tok.timestamp_of(tok.timestamp_begin - 1)
    with pytest.raises(ValueError):
        tok.timestamp_of(tok.n_vocab)


def test_is_special(tok):
    assert not tok.is_special(0) and not tok.is_special(tok.n_text - 1)
    assert tok.is_special(tok.eot) and tok.is_special(tok.n_vocab - 1)
    assert tok.is_timestamp(tok.timestamp_begin) and not tok.is_timestamp(tok.no_timestamps)


def test_decode_drops_special_tokens(tok):
    hello, world = tok.encode("Hello"), tok.encode("world.")
    ts = tok.timestamp_begin
    ids = [*tok.sot_sequence(), ts, *hello, ts + 54, tok.no_speech, *world, ts + 100, tok.eot]
    assert tok.decode(ids) == tok.decode(hello + world)
    assert tok.decode(ids) == "Hello world."
    with pytest.raises(ValueError):
        tok.decode([tok.n_vocab])


def test_decode_with_timestamps(tok):
    ts = tok.timestamp_begin
    ids = [*tok.sot_sequence(), ts, *tok.encode("Hello"), ts + 54, ts + 54, *tok.encode("café"), ts + 1500, tok.eot]
    assert tok.decode_with_timestamps(ids) == (
        "<|startoftranscript|><|en|><|transcribe|><|0.00|>Hello<|1.08|><|1.08|>café<|30.00|><|endoftext|>"
    )


def test_save_load_round_trip(tok, tmp_path):
    description = tok.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.model").is_file()
    description = json.loads(json.dumps(description))  # it must survive config.json
    assert description["kind"] == "sentencepiece" and description["n_vocab"] == tok.n_vocab
    loaded = Tokenizer.load(tmp_path / "tok", description)
    assert loaded.n_vocab == tok.n_vocab and loaded.languages == tok.languages
    assert loaded.sot_sequence("de", "translate") == tok.sot_sequence("de", "translate")
    for text in ROUND_TRIP:
        assert loaded.encode(text) == tok.encode(text)


def test_load_rejects_a_different_model(tok, tmp_path):
    description = tok.save(tmp_path)
    other = Tokenizer.train(CORPUS[:3] * 5, vocab_size=330)
    other.save(tmp_path)  # overwrites tokenizer.model
    with pytest.raises(ValueError, match="sha256"):
        Tokenizer.load(tmp_path, description)
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        Tokenizer.load(tmp_path, {**description, "kind": "nope"})


def test_training_is_deterministic():
    a = Tokenizer.train(CORPUS, vocab_size=320)
    b = Tokenizer.train(CORPUS, vocab_size=320)
    assert a.backend.model_proto == b.backend.model_proto
    for text in ROUND_TRIP:
        assert a.encode(text) == b.encode(text)


def test_vocab_size_is_respected():
    tokenizer = Tokenizer.train(CORPUS, vocab_size=500, model_type="bpe")
    assert tokenizer.n_text == 500
    # the words of the corpus get pieces of their own: far fewer tokens than bytes
    text = "The quick brown fox jumps over the lazy dog."
    assert len(tokenizer.encode(text)) < len(text.encode()) / 2


def test_too_small_vocab_is_a_clear_error():
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        Tokenizer.train(CORPUS, vocab_size=100)
