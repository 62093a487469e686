"""Training and dev data: manifests checked up front, unusable utterances dropped with a count,
duration-bucketed batches, augmentation from the config.

Everything that could stop a run mid-epoch is found before the first step: missing or
unreadable audio (an error naming the files, or dropped with ``--skip-bad``), clips longer than
the encoder's context and transcripts longer than the decoder's (dropped, with a count).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset

from ..audio import load_audio
from ..data.augment import Augmenter, AugmentConfig
from ..data.collate import collate, pad_to_multiples
from ..data.manifest import ManifestError, Utterance, read_manifest
from ..data.sampler import DurationBucketSampler
from ..data.validate import validate
from ..errors import InputError
from ..text.target_style import apply_target_style

FRAMES_PER_SECOND = 100  # log-mel hop of 10 ms
SHOWN_BAD = 3  # bad utterances named in the error message


class UtteranceList(Dataset):
    def __init__(self, utterances: list[Utterance]):
        self.utterances = utterances

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> Utterance:
        return self.utterances[index]


@dataclass
class Dropped:
    bad_audio: int = 0
    too_long_audio: int = 0
    too_long_text: int = 0
    too_short_for_ctc: int = 0

    def total(self) -> int:
        return self.bad_audio + self.too_long_audio + self.too_long_text + self.too_short_for_ctc

    def __str__(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.bad_audio, "with bad audio"),
                 (self.too_long_audio, "longer than the encoder context"),
                 (self.too_long_text, "with transcripts longer than the decoder context"),
                 (self.too_short_for_ctc, "too short for their transcript's CTC alignment")) if n]
        return ", ".join(parts) if parts else "none"


def read_checked(path: str, *, check_audio: bool, skip_bad: bool, what: str) -> tuple[list[Utterance], int]:
    """A manifest's utterances with bad ones dropped (skip_bad) or reported as one error."""
    try:
        utterances = read_manifest(path)
    except ManifestError as err:
        raise InputError(path, str(err).removeprefix(f"{path}: ")) from None
    if not utterances:
        raise InputError(path, f"the {what} manifest has no utterances")
    report = validate(utterances, max_duration=None, check_audio=check_audio)
    if report.ok:
        return utterances, 0
    if not skip_bad:
        shown = "; ".join(report.lines()[:SHOWN_BAD])
        more = f" (and {len(report.bad) - SHOWN_BAD} more)" if len(report.bad) > SHOWN_BAD else ""
        raise InputError(path, f"{len(report.bad)} of {report.n_checked} utterances are unusable: "
                               f"{shown}{more}; fix them or pass --skip-bad to drop them")
    bad = report.bad_indices
    return [u for i, u in enumerate(utterances) if i not in bad], len(bad)


def restyled(utterances: list[Utterance], style: str) -> list[Utterance]:
    """The utterances with their transcripts in ``data.target_style`` (as_is: unchanged)."""
    if style == "as_is":
        return utterances
    return [replace(u, text=apply_target_style(u.text, style)) for u in utterances]


def fits(utterance: Utterance, tokenizer, model, need_ctc: bool, dropped: Dropped, prompt_length: int) -> bool:
    dims = model.dims
    frames = utterance.duration * FRAMES_PER_SECOND
    if frames > model.window_frames:
        dropped.too_long_audio += 1
        return False
    n_tokens = len(tokenizer.encode(utterance.text))
    if prompt_length + n_tokens > dims.n_text_ctx:
        dropped.too_long_text += 1
        return False
    # CTC needs at least one encoder position per token (more where a token repeats)
    encoder_positions = dims.n_audio_ctx if model.options.fixed_audio_window else int(
        model.encoder_lengths(torch.tensor(int(frames))))
    if need_ctc and n_tokens > encoder_positions:
        dropped.too_short_for_ctc += 1
        return False
    return True


def filter_for_model(utterances: list[Utterance], tokenizer, model, need_ctc: bool,
                     timestamps: bool = False) -> tuple[list[Utterance], Dropped]:
    dropped = Dropped()
    # the timestamp format's inputs are one longer: 3 prompt tokens, <|0.00|>, text, <|end|>
    prompt = len(tokenizer.sot_sequence_including_notimestamps) + (1 if timestamps else 0)
    kept = [u for u in utterances
            if fits(u, tokenizer, model, need_ctc, dropped, prompt)]
    return kept, dropped


def make_sampler(utterances: list[Utterance], config, rank: int, world_size: int, shuffle: bool = True,
                 max_batch_seconds: Optional[float] = None) -> DurationBucketSampler:
    return DurationBucketSampler([u.duration for u in utterances],
                                 max_batch_seconds or config.data.max_batch_seconds, seed=config.run.seed,
                                 shuffle=shuffle, bucket_width_s=config.data.bucket_width_s, rank=rank,
                                 world_size=world_size, max_batch_size=config.data.max_batch_size if shuffle else None)


def make_augmenter(config: AugmentConfig, seed: int) -> Augmenter:
    return Augmenter(config, seed=seed)


def make_loader(utterances: list[Utterance], sampler, tokenizer, n_mels: int, num_workers: int,
                augment: Optional[Augmenter] = None, fixed_frames: Optional[int] = None,
                generator: Optional[torch.Generator] = None, timestamp_prob: float = 0.0,
                timestamp_seed: int = 0, timestamp_max_lead_s: float = 0.0,
                pad_multiples: tuple[int, int] = (1, 1),
                pad_limits: tuple[Optional[int], Optional[int]] = (None, None)) -> DataLoader:
    """A DataLoader over ``sampler``'s remaining batches; create one per epoch (after
    ``augment.set_epoch``) so worker processes see the current epoch. ``pad_multiples``: mel
    frames and token positions of every batch rounded up to multiples of these, but not past
    ``pad_limits`` (asr.data.collate.pad_to_multiples)."""
    collate_fn = partial(_collate, audio_loader=load_audio, tokenizer=tokenizer, n_mels=n_mels,
                         augment=augment, fixed_frames=fixed_frames, timestamp_prob=timestamp_prob,
                         timestamp_seed=timestamp_seed, timestamp_max_lead_s=timestamp_max_lead_s,
                         pad_multiples=pad_multiples, pad_limits=pad_limits)
    return DataLoader(UtteranceList(utterances), batch_sampler=sampler, collate_fn=collate_fn,
                      num_workers=num_workers, persistent_workers=False, generator=generator)


def _collate(utterances, audio_loader, tokenizer, n_mels, augment, fixed_frames, timestamp_prob, timestamp_seed,
             timestamp_max_lead_s, pad_multiples, pad_limits):
    batch = collate(utterances, audio_loader, tokenizer, n_mels=n_mels, augment=augment,
                    timestamp_prob=timestamp_prob, timestamp_seed=timestamp_seed,
                    timestamp_max_lead_s=timestamp_max_lead_s)
    frames, tokens = pad_multiples
    if fixed_frames is not None:  # models with Whisper's fixed 30 s windows (imported weights)
        pad = fixed_frames - batch.mels.shape[-1]
        batch.mels = torch.nn.functional.pad(batch.mels, (0, pad))
        frames = 1
    return pad_to_multiples(batch, tokenizer.eot, frames, tokens, *pad_limits)
