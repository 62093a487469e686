"""Whisper's token layout on top of a pluggable text tokenizer.

The id space is laid out like Whisper's:

    [0, n_text)                 ordinary text tokens (from the text backend)
    n_text + 0                  <|endoftext|>
    n_text + 1                  <|startoftranscript|>
    n_text + 2 ...              one token per language: <|en|>, ...
    then                        <|translate|>, <|transcribe|>, <|startoflm|>,
                                <|startofprev|>, <|nospeech|>, <|notimestamps|>
    timestamp_begin ...         <|0.00|>, <|0.02|>, ..., <|30.00|>  (1501 tokens)

The text part sits behind a tiny interface (TextBackend: encode_text, decode_text,
n_text, save) so Whisper's own byte-level BPE can later go behind the same Tokenizer
class. The backend implemented here is sentencepiece, trained in-process.
"""

from __future__ import annotations

import hashlib
import importlib
import io
from functools import cached_property
from pathlib import Path
from typing import Iterable, Optional, Protocol, Sequence

from ..store.atomic import write_bytes_atomic

# Whisper's timestamp grid: 0.00 s .. 30.00 s in steps of 0.02 s, i.e. 1501 tokens.
TIMESTAMP_STEP = 0.02  # seconds per timestamp token (2 mel frames of 10 ms)
MAX_TIMESTAMP = 30.0  # seconds: one Whisper input window
N_TIMESTAMPS = round(MAX_TIMESTAMP / TIMESTAMP_STEP) + 1  # 1501

# The special tokens in Whisper's order; language tokens go between these two groups.
SPECIALS_BEFORE_LANGUAGES = ("<|endoftext|>", "<|startoftranscript|>")
SPECIALS_AFTER_LANGUAGES = (
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
TASKS = ("transcribe", "translate")

SENTENCEPIECE_MODEL_FILE = "tokenizer.model"
# Rare characters below this coverage are not given their own piece; byte fallback
# spells them as UTF-8 bytes instead, so nothing becomes <unk>.
CHARACTER_COVERAGE = 0.9995
# A fixed seed and one thread make training reproducible: same texts, same model bytes.
TRAINING_SEED = 0


class TextBackend(Protocol):
    """What Tokenizer needs from a text tokenizer. Ids must be in [0, n_text)."""

    kind: str
    n_text: int

    def encode_text(self, text: str) -> list[int]: ...

    def decode_text(self, ids: list[int]) -> str: ...

    def save(self, directory: Path) -> dict:
        """Write the backend's files into ``directory``; return what load() needs."""
        ...


def read_checked(path: Path, sha256: Optional[str], what: str) -> bytes:
    """A backend's saved file, checked against the checksum its description recorded."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the {what} ({err.strerror})") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{path}: {what} does not match the description (sha256 differs)")
    return data


class SentencePieceBackend:
    """A sentencepiece model (unigram or BPE) with byte fallback.

    Byte fallback plus the "identity" normaliser means every string round-trips
    exactly: case, punctuation, digits and whitespace are kept as given, and
    characters the model has no piece for are spelled as UTF-8 bytes.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.n_text = self._sp.get_piece_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, model_type: str = "unigram") -> "SentencePieceBackend":
        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
        # sentencepiece reads one "sentence" per line, so split multi-line texts here
        lines = (line for text in texts for line in text.splitlines() if line.strip())
        model = io.BytesIO()
        try:
            cls._train_into(model, lines, vocab_size, model_type)
        except RuntimeError as err:
            message = str(err).split("] ")[-1]  # drop sentencepiece's source location
            if "smaller than required_chars" in message:
                # 256 byte pieces + <unk> + every character kept count against the size
                message = f"vocab_size={vocab_size} is too small for these texts: {message}"
            raise ValueError(f"sentencepiece training failed: {message}") from None
        return cls(model.getvalue())

    @staticmethod
    def _train_into(model: io.BytesIO, lines: Iterable[str], vocab_size: int, model_type: str) -> None:
        import sentencepiece as spm

        spm.set_random_generator_seed(TRAINING_SEED)
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines,
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,
            character_coverage=CHARACTER_COVERAGE,
            normalization_rule_name="identity",  # keep case, punctuation and Unicode as given
            remove_extra_whitespaces=False,  # so "a  b" and " a" decode back unchanged
            hard_vocab_limit=False,  # a small corpus may give fewer pieces than asked
            # Whisper's specials live above the text vocabulary, so sentencepiece needs
            # none of its own except <unk> (id 0), which byte fallback never produces.
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            num_threads=1,
            minloglevel=2,  # no training log on stderr
        )

    def encode_text(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode_text(self, ids: list[int]) -> str:
        return self._sp.decode(list(ids))

    def save(self, directory: Path) -> dict:
        write_bytes_atomic(Path(directory) / SENTENCEPIECE_MODEL_FILE, self.model_proto)
        return {"model_file": SENTENCEPIECE_MODEL_FILE, "sha256": hashlib.sha256(self.model_proto).hexdigest()}

    @classmethod
    def load(cls, directory: Path, description: dict) -> "SentencePieceBackend":
        path = Path(directory) / description.get("model_file", SENTENCEPIECE_MODEL_FILE)
        return cls(read_checked(path, description.get("sha256"), "sentencepiece model"))


# Backends by the "kind" written into a saved description, as "module:class", resolved by name
# when a tokenizer is loaded: no backend depends on its module having been imported first.
BACKENDS = {
    SentencePieceBackend.kind: "asr.text.tokenizer:SentencePieceBackend",
    "whisper-bpe": "asr.text.whisper_bpe:WhisperBPEBackend",
}


def backend_class(kind: str) -> type:
    """The backend class registered for ``kind``; ValueError for an unknown kind."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown tokenizer kind {kind!r} (known: {', '.join(sorted(BACKENDS))})")
    module_name, class_name = BACKENDS[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)


class Tokenizer:
    """Text tokens from a backend plus Whisper's special and timestamp tokens."""

    def __init__(self, backend: TextBackend, languages: Sequence[str] = ("en",)):
        languages = tuple(languages)
        if not languages:
            raise ValueError("at least one language is needed")
        if len(set(languages)) != len(languages):
            raise ValueError(f"duplicate language codes in {languages}")
        self.backend = backend
        self.languages = languages

        self.n_text = backend.n_text
        names = (
            list(SPECIALS_BEFORE_LANGUAGES)
            + [f"<|{code}|>" for code in languages]
            + list(SPECIALS_AFTER_LANGUAGES)
        )
        self.special_tokens: dict[str, int] = {name: self.n_text + i for i, name in enumerate(names)}
        self.timestamp_begin = self.n_text + len(names)
        self.n_vocab = self.timestamp_begin + N_TIMESTAMPS

    # --------------------------------------------------------------- construction

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        languages: Sequence[str] = ("en",),
    ) -> "Tokenizer":
        """Train a sentencepiece text vocabulary in-process (no temporary files).

        ``vocab_size`` is the size of the TEXT vocabulary (including sentencepiece's
        256 byte pieces and <unk>); a small corpus may give fewer. The special and
        timestamp tokens come on top: n_vocab = n_text + specials + 1501.
        Training is deterministic: the same texts give the same ids.
        """
        return cls(SentencePieceBackend.train(texts, vocab_size, model_type), languages)

    def save(self, directory) -> dict:
        """Write the backend's files into ``directory``; return a JSON-able description.

        The description (kind, languages, n_vocab, file name, checksum) is meant to go
        into a checkpoint's config.json; load(directory, description) reverses this.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return {**self.description(), **self.backend.save(directory)}

    @classmethod
    def load(cls, directory, description: dict) -> "Tokenizer":
        backend = backend_class(description.get("kind")).load(Path(directory), description)
        tokenizer = cls(backend, description.get("languages", ("en",)))
        expected = description.get("n_vocab")
        if expected is not None and tokenizer.n_vocab != expected:
            raise ValueError(
                f"{directory}: tokenizer has {tokenizer.n_vocab} tokens but the description says {expected}"
            )
        return tokenizer

    def description(self) -> dict:
        return {
            "kind": self.backend.kind,
            "languages": list(self.languages),
            "n_text": self.n_text,
            "n_vocab": self.n_vocab,
        }

    # --------------------------------------------------------------- special tokens

    @cached_property
    def eot(self) -> int:
        return self.special_tokens["<|endoftext|>"]

    @cached_property
    def sot(self) -> int:
        return self.special_tokens["<|startoftranscript|>"]

    @cached_property
    def translate(self) -> int:
        return self.special_tokens["<|translate|>"]

    @cached_property
    def transcribe(self) -> int:
        return self.special_tokens["<|transcribe|>"]

    @cached_property
    def sot_lm(self) -> int:
        return self.special_tokens["<|startoflm|>"]

    @cached_property
    def sot_prev(self) -> int:
        return self.special_tokens["<|startofprev|>"]

    @cached_property
    def no_speech(self) -> int:
        return self.special_tokens["<|nospeech|>"]

    @cached_property
    def no_timestamps(self) -> int:
        return self.special_tokens["<|notimestamps|>"]

    def language_token(self, code: str) -> int:
        token = self.special_tokens.get(f"<|{code}|>")
        if token is None or code not in self.languages:
            raise KeyError(f"language {code!r} is not in this tokenizer's languages {list(self.languages)}")
        return token

    def sot_sequence(self, language: Optional[str] = "en", task: Optional[str] = "transcribe") -> tuple[int, ...]:
        """<|startoftranscript|> [<|lang|>] [<|task|>]; None leaves a part out, as in Whisper."""
        sequence = [self.sot]
        if language is not None:
            sequence.append(self.language_token(language))
        if task is not None:
            if task not in TASKS:
                raise ValueError(f"task must be one of {TASKS}, got {task!r}")
            sequence.append(self.transcribe if task == "transcribe" else self.translate)
        return tuple(sequence)

    @property
    def sot_sequence_including_notimestamps(self) -> tuple[int, ...]:
        """The default prompt (first language, transcribe) followed by <|notimestamps|>."""
        return self.sot_sequence(self.languages[0], "transcribe") + (self.no_timestamps,)

    def is_special(self, token: int) -> bool:
        """True for every non-text token: the specials and the timestamps."""
        return token >= self.n_text

    def is_timestamp(self, token: int) -> bool:
        return token >= self.timestamp_begin

    def timestamp_of(self, token: int) -> float:
        if not self.timestamp_begin <= token < self.n_vocab:
            raise ValueError(f"token {token} is not a timestamp token")
        # round: 0.02 is not exact in binary, and callers compare and print these
        return round((token - self.timestamp_begin) * TIMESTAMP_STEP, 2)

    def timestamp_token(self, seconds: float) -> int:
        """The timestamp token nearest to ``seconds`` (clamped to 0 .. 30 s)."""
        index = round(min(max(seconds, 0.0), MAX_TIMESTAMP) / TIMESTAMP_STEP)
        return self.timestamp_begin + index

    # --------------------------------------------------------------- text

    def encode(self, text: str) -> list[int]:
        """Text tokens only; special-token spellings like "<|en|>" are ordinary text."""
        return self.backend.encode_text(text)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; special and timestamp tokens are dropped."""
        return self.backend.decode_text([t for t in self._checked(ids) if t < self.n_text])

    def decode_with_timestamps(self, ids: Iterable[int]) -> str:
        """Text with every non-text token rendered, e.g. "<|0.00|>Hello<|1.08|><|endoftext|>".

        Each run of text tokens is decoded as one piece, so a character spelled as
        several byte tokens comes out whole.
        """
        parts: list[str] = []
        run: list[int] = []
        for token in self._checked(ids):
            if token < self.n_text:
                run.append(token)
                continue
            if run:
                parts.append(self.backend.decode_text(run))
                run = []
            parts.append(self.token_to_string(token))
        if run:
            parts.append(self.backend.decode_text(run))
        return "".join(parts)

    def token_to_string(self, token: int) -> str:
        """How a non-text token is written: "<|endoftext|>", "<|1.08|>", ..."""
        if self.is_timestamp(token):
            return f"<|{self.timestamp_of(token):.2f}|>"
        if token >= self.n_text:
            return self._special_names[token - self.n_text]
        raise ValueError(f"token {token} is a text token")

    @cached_property
    def _special_names(self) -> list[str]:
        return sorted(self.special_tokens, key=self.special_tokens.__getitem__)

    def _checked(self, ids: Iterable[int]) -> list[int]:
        ids = [int(t) for t in ids]
        for t in ids:
            if not 0 <= t < self.n_vocab:
                raise ValueError(f"token id {t} is out of range [0, {self.n_vocab})")
        return ids

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.backend.kind!r}, n_text={self.n_text}, n_vocab={self.n_vocab}, languages={list(self.languages)})"


__all__ = ["Tokenizer", "TextBackend", "SentencePieceBackend", "BACKENDS", "backend_class", "N_TIMESTAMPS", "TIMESTAMP_STEP"]
