"""Turn a list of utterances into one padded training batch.

Decoder layout (teacher forcing, as Whisper trains):

    sequence  = <|sot|> <|en|> <|transcribe|> <|notimestamps|>  t1 t2 ... tn  <|eot|>
    tokens    = sequence[:-1]      the decoder's inputs
    targets   = sequence[1:]       what each position must predict

so ``targets[:, i] == tokens[:, i + 1]`` wherever both are real. The prompt is given,
not learned: targets that would predict a prompt token are -100 (PyTorch's
cross-entropy ``ignore_index``), and so is every padding position. The first real
target is t1, predicted from the last prompt token.

With ``timestamp_prob`` > 0 that share of the utterances is in Whisper's timestamp format
instead, one segment over the whole clip (what fine-tuning a Whisper model needs to keep its
long-form transcription working):

    sequence  = <|sot|> <|en|> <|transcribe|>  <|0.00|> t1 ... tn <|END|>  <|eot|>

where END is the clip's length (after speed perturbation) on Whisper's 20 ms grid. Which
utterances get it is a fixed function of the utterance id and the seed.

Trained only on that, a model learns that speech starts at <|0.00|>: in long-form transcription,
where a window often opens in a pause, its segments then start too early (measured: the median
start error of a fine-tuned tiny.en grew from 0.37 s to 0.89 s). With ``timestamp_max_lead_s``
> 0 each timestamped clip is preceded by a silence of a random length up to that (fixed per id
and seed, within the 30 s window), and the segment runs from where speech starts to where it
ends, found by the energy detector batched long-form uses, on the 20 ms grid:

    sequence  = <|sot|> <|en|> <|transcribe|>  <|ONSET|> t1 ... tn <|OFFSET|>  <|eot|>

Features come from the front-end's ``batch_log_mel``, which computes every clip on its
own and pads the log-mels with 0, so a clip's features do not depend on what it is
batched with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from asr.audio import batch_log_mel

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
FRAMES_PER_SECOND = 100  # log-mel frames (10 ms hop)
SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Whisper's window
LEAD_ROOM_S = 25.0  # clip + lead silence at most: still inside the window after 0.9x speed


@dataclass
class Batch:
    mels: torch.Tensor  # [B, n_mels, T] float32 log-mels, 0 after each clip's n_frames
    n_frames: torch.Tensor  # [B] int64, real frames per clip
    tokens: torch.Tensor  # [B, L] int64 decoder inputs, padded with eot
    targets: torch.Tensor  # [B, L] int64, IGNORE_INDEX at prompt and padding positions
    token_mask: torch.Tensor  # [B, L] bool, True at real (non-padding) input positions
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            move(self.mels), move(self.n_frames), move(self.tokens), move(self.targets),
            move(self.token_mask), self.ids, self.texts,
        )  # fmt: skip

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True) for custom batch types."""
        pin = lambda t: t.pin_memory()  # noqa: E731
        return Batch(
            pin(self.mels), pin(self.n_frames), pin(self.tokens), pin(self.targets),
            pin(self.token_mask), self.ids, self.texts,
        )  # fmt: skip


def collate(
    utterances: Sequence,
    audio_loader: Callable[[str], np.ndarray],
    tokenizer,
    n_mels: int = 80,
    augment=None,
    timestamp_prob: float = 0.0,
    timestamp_seed: int = 0,
    timestamp_max_lead_s: float = 0.0,
) -> Batch:
    """Load, (optionally) augment, featurise and tokenise a list of utterances.

    Args:
        utterances: objects with ``id``, ``text`` and ``audio_path`` (manifest Utterances).
        audio_loader: maps ``utterance.audio_path`` to a 16 kHz mono waveform, e.g.
            ``asr.audio.load_audio`` (or a caching wrapper around it).
        tokenizer: an ``asr.tokenizer.Tokenizer``; ``text`` is encoded as given.
        n_mels: mel bins of the front-end.
        augment: an ``asr.data.augment.Augmenter`` or None. An augmenter in eval mode
            changes nothing, so the evaluation batch is bit-identical to augment=None.
        timestamp_prob: share of utterances in the timestamp format (see the module doc).
        timestamp_seed: with the utterance id, decides which ones.
        timestamp_max_lead_s: longest silence put before a timestamped clip (see the module doc).
    """
    if len(utterances) == 0:
        raise ValueError("collate needs at least one utterance")
    ids = [str(u.id) for u in utterances]
    texts = [u.text for u in utterances]

    audios = [audio_loader(u.audio_path) for u in utterances]
    stamped = [timestamp_prob > 0 and uses_timestamps(key, timestamp_seed, timestamp_prob) for key in ids]
    # (start, end) of the speech in seconds of each timestamped clip; None: the whole clip
    spans = [None] * len(audios)
    if timestamp_max_lead_s > 0:
        for i, key in enumerate(ids):
            if stamped[i]:
                audios[i], spans[i] = with_lead_silence(audios[i], key, timestamp_seed, timestamp_max_lead_s)
    active = augment is not None and augment.active
    if active:
        before = [len(audio) for audio in audios]
        audios = [augment.waveform(audio, key=key) for audio, key in zip(audios, ids)]
        # speed perturbation scales every time in the clip by the same factor
        spans = [None if span is None else (span[0] * len(a) / n, span[1] * len(a) / n)
                 for span, a, n in zip(spans, audios, before)]
    mels, n_frames = batch_log_mel(audios, n_mels=n_mels)
    if active:
        mels = augment.spec(mels, n_frames, keys=ids)

    sequences = []
    for text, frames, is_stamped, span in zip(texts, n_frames.tolist(), stamped, spans):
        if is_stamped:
            start, end = span or (0.0, frames / FRAMES_PER_SECOND)
            sequences.append(timestamp_sequence(tokenizer, text, start, end))
        else:
            sequences.append((list(tokenizer.sot_sequence_including_notimestamps),
                              list(tokenizer.encode(text)) + [tokenizer.eot]))
    tokens, targets, token_mask = _decoder_tensors(sequences, tokenizer.eot)
    return Batch(mels, n_frames, tokens, targets, token_mask, ids, texts)


def pad_to_multiples(batch: Batch, eot: int, frames: int = 1, tokens: int = 1,
                     max_frames: Optional[int] = None, max_tokens: Optional[int] = None) -> Batch:
    """The batch with its mel frames padded up to a multiple of `frames` and its token positions
    to a multiple of `tokens`, never past max_frames / max_tokens (the model's contexts), with the
    padding it already has (log-mels 0.0 after n_frames; <|endoftext|> inputs, ignored targets,
    masked positions), so the losses do not change.

    Why: batches change shape at every step, and in bfloat16 on a CPU every new shape of a
    matrix product makes oneDNN compile kernels afresh (12.6 % of a small.yaml step in a py-spy
    profile, 2026-12-07). Rounded up, the shapes repeat and the compiled kernels are reused."""
    extra_frames = rounded_up(batch.mels.shape[-1], frames, max_frames) - batch.mels.shape[-1]
    extra_tokens = rounded_up(batch.tokens.shape[1], tokens, max_tokens) - batch.tokens.shape[1]
    if extra_frames == 0 and extra_tokens == 0:
        return batch
    pad = torch.nn.functional.pad
    return Batch(pad(batch.mels, (0, extra_frames), value=0.0), batch.n_frames,
                 pad(batch.tokens, (0, extra_tokens), value=eot),
                 pad(batch.targets, (0, extra_tokens), value=IGNORE_INDEX),
                 pad(batch.token_mask, (0, extra_tokens), value=False), batch.ids, batch.texts)


def rounded_up(length: int, multiple: int, limit: Optional[int]) -> int:
    """length rounded up to a multiple, but not past limit (nor below length)."""
    rounded = -(-length // max(multiple, 1)) * max(multiple, 1)
    return rounded if limit is None else max(length, min(rounded, limit))


def uses_timestamps(key: str, seed: int, prob: float) -> bool:
    """A fixed, uniform choice per (seed, utterance id): the same in every worker and run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < prob


def timestamp_sequence(tokenizer, text: str, start: float, end: float) -> tuple[list[int], list[int]]:
    """(prompt, learned part) of one clip as one segment: <|start|> text <|end|> <|eot|>."""
    return (list(tokenizer.sot_sequence_including_notimestamps[:-1]),
            [tokenizer.timestamp_token(start), *tokenizer.encode(text),
             tokenizer.timestamp_token(min(end, WINDOW_S)), tokenizer.eot])


def lead_seconds(key: str, seed: int, max_lead_s: float, clip_s: float) -> float:
    """A uniform silence length in [0, max_lead_s], fixed per (seed, id), within the window."""
    digest = hashlib.sha256(f"lead:{seed}:{key}".encode()).digest()
    room = max(0.0, LEAD_ROOM_S - clip_s)
    return min(max_lead_s, room) * int.from_bytes(digest[:8], "big") / 2.0**64


def with_lead_silence(audio: np.ndarray, key: str, seed: int, max_lead_s: float
                      ) -> tuple[np.ndarray, tuple[float, float]]:
    """The clip after a silence of lead_seconds, and where its speech starts and ends in it."""
    from asr.inference.batched import speech_span

    onset, offset = speech_span(audio)
    lead = lead_seconds(key, seed, max_lead_s, len(audio) / SAMPLE_RATE)
    samples = int(round(lead * SAMPLE_RATE))
    padded = np.concatenate([np.zeros(samples, dtype=audio.dtype), audio])
    return padded, (samples / SAMPLE_RATE + onset, samples / SAMPLE_RATE + offset)


def _decoder_tensors(sequences: Sequence[tuple[list[int], list[int]]], eot: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forcing tensors from (prompt, learned tokens) pairs."""
    length = max(len(p) + len(t) for p, t in sequences) - 1  # inputs drop the final eot

    tokens = torch.full((len(sequences), length), eot, dtype=torch.long)
    targets = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    token_mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for b, (prompt, learned) in enumerate(sequences):
        sequence = prompt + learned
        n = len(sequence) - 1
        tokens[b, :n] = torch.tensor(sequence[:-1])
        targets[b, :n] = torch.tensor(sequence[1:])
        token_mask[b, :n] = True
        # positions before the last prompt token would be trained to predict the prompt
        targets[b, : len(prompt) - 1] = IGNORE_INDEX
    return tokens, targets, token_mask
