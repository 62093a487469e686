"""Whisper's BPE backend answers decoding and single-token lookups from the vocabulary in
tokenizer.json and builds the `tokenizers` library's BPE model only when text must be encoded
(asr/text/whisper_bpe.py). Its answers are checked against that library's own."""
import json
import random
import string

import pytest

from asr.store.registry import resolve
from asr.text.whisper_bpe import WhisperBPEBackend


@pytest.fixture(scope="module")
def backends():
    from tokenizers import Tokenizer as HFTokenizer

    directory = resolve("tiny.en", quiet=True)
    description = json.loads((directory / "config.json").read_text())["tokenizer"]
    text = (directory / description.get("tokenizer_file", "tokenizer.json")).read_text(encoding="utf-8")
    library = HFTokenizer.from_str(text)
    library.encode_special_tokens = True
    return WhisperBPEBackend(text), library


def test_decoding_equals_the_librarys_without_building_it(backends):
    ours, library = backends
    assert ours._tokenizer is None
    for token_id in range(ours.n_text):
        assert ours.decode_text([token_id]) == library.decode([token_id], skip_special_tokens=False), token_id
    rng = random.Random(0)
    for _ in range(2000):  # random runs split multi-byte characters: U+FFFD where the library puts it
        ids = [rng.randrange(ours.n_text) for _ in range(rng.randrange(1, 10))]
        assert ours.decode_text(ids) == library.decode(ids, skip_special_tokens=False), ids
    assert ours._tokenizer is None


def test_single_tokens_and_lookups_without_building_it(backends):
    ours, library = backends
    texts = [chr(c) for c in range(128)] + [" " + c for c in string.ascii_letters + string.digits]
    for text in texts:
        assert ours.encode_text(text) == library.encode(text, add_special_tokens=False).ids, repr(text)
    for name in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "Ġthe", "hello"):
        assert ours.token_to_id(name) == library.token_to_id(name), name
    for token_id in (0, 262, 50256, 50257, 50361):
        assert ours.id_to_token(token_id) == library.id_to_token(token_id), token_id
    assert ours.bpe_vocabulary_size() == library.get_vocab_size(with_added_tokens=False)
    assert ours.added_tokens() == {i: t.content for i, t in library.get_added_tokens_decoder().items()}
    assert ours._tokenizer is None


def test_other_text_is_encoded_by_the_library(backends):
    ours, library = WhisperBPEBackend(backends[0].tokenizer_json), backends[1]
    for text in (" Go forward ten meters.", "ab", " é", "é", " 42", "<|en|> hi", "  "):
        assert ours.encode_text(text) == library.encode(text, add_special_tokens=False).ids, repr(text)
    assert ours._tokenizer is not None
