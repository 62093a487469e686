"""Whisper's own byte-level BPE as a text backend for `asr.tokenizer.Tokenizer`.

The vocabulary comes from a Hugging Face `tokenizer.json` (what faster-whisper and
transformers ship) or, failing that, from a CTranslate2 `vocabulary.txt`, one token per line
in id order. A vocabulary file carries no merge list, but Whisper's text tokens are numbered in
the order their merges were learned (tiktoken's ranks), so the merges can be rebuilt exactly:
see `merges_from_ranked_vocabulary`.

`whisper_tokenizer(path)` checks that the file gives every special token the id our layout
gives it; a vocabulary laid out differently is refused rather than silently mis-mapped.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Optional, Union

from ..store.atomic import write_bytes_atomic
from .tokenizer import SPECIALS_AFTER_LANGUAGES, Tokenizer, read_checked

KIND = "whisper-bpe"
TOKENIZER_FILE = "tokenizer.json"
VOCABULARY_FILE = "vocabulary.txt"
END_OF_TEXT = "<|endoftext|>"  # the first special token: its id is the text vocabulary size
START_OF_TRANSCRIPT = "<|startoftranscript|>"
FIRST_AFTER_LANGUAGES = SPECIALS_AFTER_LANGUAGES[0]  # "<|translate|>" closes the language list
# English-only (GPT-2 based) vocabularies spell <|nospeech|> the old way
ALIASES = {"<|nospeech|>": ("<|nospeech|>", "<|nocaptions|>")}
LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3}(?:_[a-z]+)?)\|>")  # <|en|>, <|haw|>, <|yue|>


class WhisperTokenizerError(ValueError):
    """A tokenizer file that is unreadable or not laid out like Whisper's."""


def merges_from_ranked_vocabulary(tokens: list[str]) -> list[tuple[str, str]]:
    """The BPE merges that built a vocabulary whose tokens are numbered in merge order.

    Each multi-character token was made by merging two earlier tokens. Which two: apply the
    merges learned so far to the token's characters, lowest rank first, exactly as encoding
    would; they stop at the two pieces the token's own merge joins.
    """
    ranks: dict[tuple[str, str], int] = {}
    for token in tokens:
        parts = list(token)
        if len(parts) == 1:
            continue  # one of the 256 byte symbols, not a merge
        while len(parts) > 2:
            candidates = [(ranks[pair], i) for i, pair in enumerate(zip(parts, parts[1:])) if pair in ranks]
            if not candidates:
                break
            _, i = min(candidates)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2:
            raise WhisperTokenizerError(f"token {token!r} cannot be built from earlier tokens; the "
                                        "vocabulary is not in BPE merge order")
        ranks[(parts[0], parts[1])] = len(ranks)
    return list(ranks)


def _tokenizer_from_vocabulary(lines: list[str]):
    """A Hugging Face tokenizer equivalent to Whisper's from vocabulary.txt lines."""
    from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

    if END_OF_TEXT not in lines:
        raise WhisperTokenizerError(f"no {END_OF_TEXT} token")
    n_text = lines.index(END_OF_TEXT)
    text = lines[:n_text]
    bpe = models.BPE(vocab={token: i for i, token in enumerate(text)},
                     merges=merges_from_ranked_vocabulary(text))
    tokenizer = HFTokenizer(bpe)
    # GPT-2's pre-tokenisation regex and byte-to-unicode mapping, as tiktoken does for Whisper
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # specials and timestamps take the following ids, in file order
    tokenizer.add_special_tokens([AddedToken(token, normalized=False) for token in lines[n_text:]])
    return tokenizer


def _read_vocabulary(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    # byte-level tokens never contain a newline, so the only empty line is the file's last
    return lines[:-1] if lines and lines[-1] == "" else lines


def _byte_of_character() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the printable character each byte is spelt with in
    the vocabulary (the printable Latin-1 bytes as themselves, the rest from U+0100 on, in byte
    order), back to the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


BYTE_OF_CHARACTER = _byte_of_character()
CHARACTER_OF_BYTE = {b: c for c, b in BYTE_OF_CHARACTER.items()}


class WhisperBPEBackend:
    """Byte-level BPE text tokens [0, n_text) over the `tokenizers` library.

    Building that library's BPE model from Whisper's tokenizer.json (50,000 merges) took 74 ms
    alone and 150-190 ms inside `asr transcribe` on a 1-second file (2-core EPYC, 2026-12-07):
    a tenth of the process. Transcribing without a prompt only decodes tokens and looks up
    single ones, which the vocabulary in the JSON answers (23 ms to parse), so the BPE model is
    built on the first encoding that needs it (a prompt, training targets)."""

    kind = KIND

    def __init__(self, tokenizer_json: str):
        self.tokenizer_json = tokenizer_json
        self._tokenizer = None  # the tokenizers library's BPE model: see bpe()
        try:
            described = json.loads(tokenizer_json)
            vocabulary = described["model"]["vocab"]
            self._added = {int(t["id"]): str(t["content"]) for t in described.get("added_tokens") or ()}
            byte_level = (described.get("decoder") or {}).get("type") == "ByteLevel"
            self._model_size = len(vocabulary)
            self._ids = dict(vocabulary)  # token -> id as the JSON gives them
            self._ids.update((content, i) for i, content in self._added.items())
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise WhisperTokenizerError(f"not a tokenizer file ({type(err).__name__}: {err})") from None
        self._tokens = {i: token for token, i in self._ids.items()}
        n_text = self._ids.get(END_OF_TEXT)
        if n_text is None:
            raise WhisperTokenizerError(f"no {END_OF_TEXT} token")
        self.n_text = n_text
        text_tokens = "".join(token for i, token in self._tokens.items() if isinstance(i, int) and 0 <= i < n_text)
        self._byte_level = byte_level and set(text_tokens) <= BYTE_OF_CHARACTER.keys()
        if not self._byte_level:  # decoded by the library: build it now, and find a bad file now
            self.bpe()

    def bpe(self):
        """The tokenizers library's tokenizer, built on first use."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer as HFTokenizer

            try:
                tokenizer = HFTokenizer.from_str(self.tokenizer_json)
            except Exception as err:  # the tokenizers library raises plain Exceptions on bad JSON
                raise WhisperTokenizerError(f"not a tokenizer file ({str(err).splitlines()[0]})") from None
            # Text that spells a special token ("<|en|>") is ordinary text, as in tiktoken
            tokenizer.encode_special_tokens = True
            self._tokenizer = tokenizer
        return self._tokenizer

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "WhisperBPEBackend":
        """tokenizer.json, or a CTranslate2 vocabulary.txt (one token per line)."""
        path = Path(path)
        try:
            if path.suffix == ".json":
                backend = cls(path.read_text(encoding="utf-8"))
                backend.bpe()  # a file imported once: all of it checked now
                return backend
            return cls(_tokenizer_from_vocabulary(_read_vocabulary(path)).to_str())
        except OSError as err:
            raise WhisperTokenizerError(f"{path}: cannot read ({err.strerror})") from None
        except WhisperTokenizerError as err:
            raise WhisperTokenizerError(f"{path}: {err}") from None
        except Exception as err:  # the tokenizers library raises plain Exceptions on bad JSON
            raise WhisperTokenizerError(f"{path}: not a tokenizer file ({str(err).splitlines()[0]})") from None

    def token_to_id(self, token: str) -> Optional[int]:
        """The id the file gives a token string (special tokens included)."""
        for spelling in ALIASES.get(token, (token,)):
            token_id = self._ids.get(spelling)
            if token_id is not None:
                return token_id
        return None

    def id_to_token(self, token_id: int) -> Optional[str]:
        return self._tokens.get(token_id)

    def bpe_vocabulary_size(self) -> int:
        """Tokens of the BPE model itself, without the added special tokens."""
        return self._model_size

    def added_tokens(self) -> dict[int, str]:
        """The file's added (special) tokens: id -> string."""
        return dict(self._added)

    def encode_text(self, text: str) -> list[int]:
        single = self._single_token(text)
        if single is not None:
            return [single]
        ids = self.bpe().encode(text, add_special_tokens=False).ids
        if any(i >= self.n_text for i in ids):  # cannot happen with Whisper's merges
            raise WhisperTokenizerError(f"text {text[:40]!r} encoded to a non-text token")
        return ids

    def _single_token(self, text: str) -> Optional[int]:
        """The one token BPE must give a text of one byte, or of a space and one ASCII letter or
        digit (one piece for GPT-2's pre-tokeniser; its two bytes have one merge to try), without
        building the BPE model; None for any other text."""
        if not self._byte_level:
            return None
        data = text.encode("utf-8")
        if not (len(data) == 1 or (len(data) == 2 and text[0] == " " and text[1].isascii() and text[1].isalnum())):
            return None
        token_id = self._ids.get("".join(CHARACTER_OF_BYTE[b] for b in data))
        return token_id if token_id is not None and token_id < self.n_text else None

    def decode_text(self, ids: list[int]) -> str:
        """Text tokens to text: their bytes joined and read as UTF-8, a broken sequence as U+FFFD
        (the library's byte-level decoder does the same)."""
        ids = list(ids)
        if not self._byte_level or any(i >= self.n_text or i not in self._tokens for i in ids):
            return self.bpe().decode(ids, skip_special_tokens=False)
        data = bytes(BYTE_OF_CHARACTER[c] for i in ids for c in self._tokens[i])
        return data.decode("utf-8", errors="replace")

    def save(self, directory: Path) -> dict:
        data = self.tokenizer_json.encode("utf-8")
        write_bytes_atomic(Path(directory) / TOKENIZER_FILE, data)
        return {"tokenizer_file": TOKENIZER_FILE, "sha256": hashlib.sha256(data).hexdigest()}

    @classmethod
    def load(cls, directory: Path, description: dict) -> "WhisperBPEBackend":
        path = Path(directory) / description.get("tokenizer_file", TOKENIZER_FILE)
        try:
            data = read_checked(path, description.get("sha256"), "Whisper tokenizer")
        except ValueError as err:
            raise WhisperTokenizerError(str(err)) from None
        backend = cls(data.decode("utf-8"))
        verify_layout(Tokenizer(backend, description.get("languages", ("en",))), str(path))
        return backend


def languages_of(backend: WhisperBPEBackend) -> list[str]:
    """Language codes in id order: the tokens between <|startoftranscript|> and <|translate|>."""
    sot, first_after = backend.token_to_id(START_OF_TRANSCRIPT), backend.token_to_id(FIRST_AFTER_LANGUAGES)
    if sot is None or first_after is None or first_after <= sot + 1:
        raise WhisperTokenizerError(f"no language tokens between {START_OF_TRANSCRIPT} and {FIRST_AFTER_LANGUAGES}")
    codes = []
    for token_id in range(sot + 1, first_after):
        match = LANGUAGE_TOKEN.fullmatch(backend.id_to_token(token_id) or "")
        if not match:
            raise WhisperTokenizerError(f"id {token_id} is {backend.id_to_token(token_id)!r}, not a language token")
        codes.append(match.group(1))
    return codes


def verify_layout(tokenizer: Tokenizer, source: str) -> None:
    """Every special and timestamp id of our layout must be the id the file assigns to that
    string, and every text token of the file must lie below <|endoftext|>."""
    backend = tokenizer.backend
    for name, token_id in tokenizer.special_tokens.items():
        actual = backend.token_to_id(name)
        if actual != token_id:
            raise WhisperTokenizerError(f"{source}: {name} has id {actual} in the file but {token_id} in "
                                        "Whisper's layout")
    for token_id in (tokenizer.timestamp_begin, tokenizer.n_vocab - 1):
        name = tokenizer.token_to_string(token_id)
        actual = backend.token_to_id(name)
        if actual is not None and actual != token_id:  # tokenizer.json files often omit timestamps
            raise WhisperTokenizerError(f"{source}: {name} has id {actual} in the file but {token_id} in "
                                        "Whisper's layout")
    text_vocabulary = backend.bpe_vocabulary_size()
    if text_vocabulary not in (tokenizer.n_text, tokenizer.n_text + 1):  # GPT-2 keeps <|endoftext|> in it
        raise WhisperTokenizerError(f"{source}: {text_vocabulary} BPE tokens, but {END_OF_TEXT} is id "
                                    f"{tokenizer.n_text}")
    for token_id, content in backend.added_tokens().items():
        if tokenizer.n_text <= token_id < tokenizer.n_vocab:
            ours = tokenizer.token_to_string(token_id)
            if content not in ALIASES.get(ours, (ours,)):
                raise WhisperTokenizerError(f"{source}: id {token_id} is {content!r} in the file but "
                                            f"{ours} in Whisper's layout")


def find_tokenizer_file(path: Union[str, Path]) -> Optional[Path]:
    """tokenizer.json (preferred) or vocabulary.txt in a directory; a file is taken as given."""
    path = Path(path)
    if path.is_dir():
        for name in (TOKENIZER_FILE, VOCABULARY_FILE):
            if (path / name).is_file():
                return path / name
        return None
    return path if path.is_file() else None


def whisper_tokenizer(path_or_dir: Union[str, Path]) -> Tokenizer:
    """Whisper's tokenizer from tokenizer.json / vocabulary.txt (or a directory holding one),
    verified against our special-token layout."""
    path = find_tokenizer_file(path_or_dir)
    if path is None:
        raise WhisperTokenizerError(f"{path_or_dir}: no {TOKENIZER_FILE} or {VOCABULARY_FILE} found")
    backend = WhisperBPEBackend.from_file(path)
    tokenizer = Tokenizer(backend, languages_of(backend))
    verify_layout(tokenizer, str(path))
    return tokenizer


__all__ = ["WhisperBPEBackend", "WhisperTokenizerError", "whisper_tokenizer", "verify_layout",
           "merges_from_ranked_vocabulary", "find_tokenizer_file", "KIND"]
