"""Training-time data augmentation: speed perturbation, additive noise, SpecAugment.

All three are standard for small speech corpora:
- speed perturbation (Ko et al. 2015; Kaldi's and icefall's 0.9/1.0/1.1) resamples the
  waveform, changing tempo, pitch and duration together;
- additive noise at a random signal-to-noise ratio, from generated white or pink
  noise or from a manifest of noise recordings;
- SpecAugment (Park et al. 2019) masks frequency bands and time spans of the log-mel.

Randomness is keyed, not streamed: with ``key`` (an utterance id) the draws come from
a generator seeded by ``(seed, epoch, key)``, so an utterance gets the same
augmentation in a given epoch whatever the DataLoader worker count or batch
composition, and a different one the next epoch (``set_epoch``). Without a key a
private generator seeded once is used. DataLoader workers hold copies of the
augmenter: call ``set_epoch`` before creating the epoch's iterator, and do not use
``persistent_workers=True`` (their copies would keep the old epoch).

Off in evaluation: ``Augmenter.eval()`` (or ``enabled=False`` in the config) makes
every method return its input unchanged, so evaluation features are bit-identical to
no augmentation at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import soxr
import torch

from asr.audio import SAMPLE_RATE

Key = Union[str, int, None]


@dataclass
class AugmentConfig:
    """What to apply and how strongly. The defaults are a mild, common recipe."""

    enabled: bool = True

    # Speed perturbation: one factor drawn uniformly per utterance; 1.0 = unchanged.
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)

    # Additive noise: applied with probability noise_prob at an SNR drawn uniformly
    # from [snr_min_db, snr_max_db] (dB, speech power over noise power).
    noise_prob: float = 0.5
    snr_min_db: float = 10.0
    snr_max_db: float = 30.0
    noise_types: tuple[str, ...] = ("white", "pink")  # generated noise colours
    # JSONL manifest of noise recordings (our manifest format; text is ignored). When
    # given, noise comes from these files instead of being generated.
    noise_manifest: Optional[str] = None

    # SpecAugment, LibriSpeech "LD"-like: freq_masks bands of width <= freq_mask_width
    # mel bins; time_masks spans of width <= min(time_mask_width, time_mask_ratio x
    # utterance frames), so short utterances are not wiped out.
    freq_masks: int = 2
    freq_mask_width: int = 27  # mel bins (of 80)
    time_masks: int = 2
    time_mask_width: int = 40  # frames (10 ms each) = 0.4 s
    time_mask_ratio: float = 0.2  # fraction of the utterance's real frames

    @classmethod
    def from_dict(cls, values: dict) -> "AugmentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown augmentation settings: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    def __post_init__(self):
        if any(f <= 0 for f in self.speed_factors) or not self.speed_factors:
            raise ValueError(f"speed_factors must be positive, got {self.speed_factors}")
        if self.snr_min_db > self.snr_max_db:
            raise ValueError("snr_min_db must be <= snr_max_db")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError("noise_prob must be in [0, 1]")
        for colour in self.noise_types:
            if colour not in _NOISE_COLOURS:
                raise ValueError(f"unknown noise type {colour!r}; use {sorted(_NOISE_COLOURS)}")
        if not 0.0 <= self.time_mask_ratio <= 1.0:
            raise ValueError("time_mask_ratio must be in [0, 1]")


class Augmenter:
    """Applies an AugmentConfig; ``train()`` / ``eval()`` switch it on and off.

    ``waveform(audio, key)`` does speed perturbation then noise (16 kHz float
    waveforms); ``spec(mels, n_frames, keys)`` does SpecAugment on a padded batch of
    log-mels. The collate function calls both.
    """

    def __init__(
        self,
        config: Optional[AugmentConfig] = None,
        seed: int = 0,
        *,
        noise_loader: Optional[Callable[[str], np.ndarray]] = None,
    ):
        self.config = config if config is not None else AugmentConfig()
        self.seed = int(seed)
        self.epoch = 0
        self.training = True
        self._stream = np.random.default_rng([self.seed, 0xA06])  # used when key is None
        self._noise_files: list[str] = []
        if self.config.noise_manifest:
            # imported here so that generated noise needs no manifest module
            from asr.data.manifest import read_manifest

            self._noise_files = [str(u.audio_path) for u in read_manifest(self.config.noise_manifest)]
            if not self._noise_files:
                raise ValueError(f"noise manifest {self.config.noise_manifest} is empty")
        if noise_loader is None:
            from asr.audio import load_audio as noise_loader
        self._load_noise = noise_loader

    # ---- mode ----------------------------------------------------------------------

    def train(self, mode: bool = True) -> "Augmenter":
        self.training = mode
        return self

    def eval(self) -> "Augmenter":
        return self.train(False)

    @property
    def active(self) -> bool:
        return self.training and self.config.enabled

    def set_epoch(self, epoch: int) -> None:
        """New draws every epoch for the same utterance (keyed randomness)."""
        self.epoch = int(epoch)

    def rng(self, key: Key, stage: str) -> np.random.Generator:
        """Generator for one utterance and one stage ("wave" or "spec")."""
        if key is None:
            return self._stream
        digest = hashlib.blake2b(f"{key}\0{stage}".encode(), digest_size=8).digest()
        return np.random.default_rng([self.seed, self.epoch, int.from_bytes(digest, "little")])

    # ---- waveform ------------------------------------------------------------------

    def waveform(self, audio: np.ndarray, key: Key = None) -> np.ndarray:
        """Speed perturbation, then additive noise. Identity when not active."""
        if not self.active:
            return audio
        rng = self.rng(key, "wave")
        factor = float(rng.choice(self.config.speed_factors))
        audio = speed_perturb(audio, factor)
        if rng.random() < self.config.noise_prob:
            snr_db = rng.uniform(self.config.snr_min_db, self.config.snr_max_db)
            audio = add_noise(audio, self._noise_like(audio, rng), snr_db)
        return audio

    def _noise_like(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self._noise_files:
            colour = self.config.noise_types[rng.integers(len(self.config.noise_types))]
            return _NOISE_COLOURS[colour](len(audio), rng)
        noise = np.asarray(self._load_noise(self._noise_files[rng.integers(len(self._noise_files))]))
        # a random excerpt of the recording, looped if it is shorter than the speech
        reps = -(-len(audio) // len(noise)) + 1
        noise = np.tile(noise, reps)
        start = rng.integers(len(noise) - len(audio) + 1)
        return noise[start : start + len(audio)]

    # ---- spectrogram ---------------------------------------------------------------

    def spec(
        self, mels: torch.Tensor, n_frames: torch.Tensor, keys: Optional[Sequence[Key]] = None
    ) -> torch.Tensor:
        """SpecAugment a padded batch [B, n_mels, T]; returns a new tensor.

        Masks stay inside each utterance's real frames (``n_frames``), so padding stays
        0 and what the encoder masks out anyway is untouched. Masked cells get the
        utterance's mean log-mel, a neutral value on Whisper's feature scale.
        """
        if not self.active:
            return mels
        cfg = self.config
        out = mels.clone()
        n_mels = mels.shape[1]
        for b in range(mels.shape[0]):
            rng = self.rng(None if keys is None else keys[b], "spec")
            length = int(n_frames[b])
            if length == 0:
                continue
            real = out[b, :, :length]
            fill = real.mean()
            for _ in range(cfg.freq_masks):
                width = int(rng.integers(0, min(cfg.freq_mask_width, n_mels) + 1))
                start = int(rng.integers(0, n_mels - width + 1))
                real[start : start + width, :] = fill
            max_width = min(cfg.time_mask_width, int(cfg.time_mask_ratio * length))
            for _ in range(cfg.time_masks):
                width = int(rng.integers(0, max_width + 1))
                start = int(rng.integers(0, length - width + 1))
                real[:, start : start + width] = fill
        return out


# ---- building blocks (pure functions, usable on their own) -------------------------


def speed_perturb(audio: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Play ``audio`` ``factor`` times faster: duration / factor, pitch x factor.

    As sox's ``speed`` effect (what Kaldi's speed perturbation runs): reinterpret the
    samples as recorded at ``sr x factor`` and resample back to ``sr`` (soxr,
    band-limited, so speeding up does not alias).
    """
    if factor == 1.0:
        return audio
    out = soxr.resample(np.asarray(audio, dtype=np.float32), sr * factor, sr, quality="HQ")
    return out.astype(np.float32, copy=False)


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``audio + noise`` with the noise scaled to ``snr_db`` below the audio's power.

    Power is the mean square over the whole clip, silences included (the usual
    definition for augmentation; it makes the SNR within speech a little higher).
    Silent audio or silent noise is returned unchanged.
    """
    audio = np.asarray(audio, dtype=np.float32)
    noise = np.asarray(noise, dtype=np.float64)[: len(audio)]
    speech_power = float(np.mean(audio.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise**2))
    if speech_power == 0.0 or noise_power == 0.0:
        return audio
    scale = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (audio + scale * noise).astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f-power noise: white noise with its spectrum's amplitude divided by sqrt(f).

    Shaped at a 5-smooth length >= n and cut to n: the noise is stationary, so a cut is
    as pink as the whole, and an FFT of a clip's own length (often with a large prime
    factor) took most of the training loader's noise time.
    """
    size = fast_fft_length(n)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size)
    freqs[0] = freqs[1] if size > 1 else 1.0  # no infinite gain at DC
    return np.fft.irfft(spectrum / np.sqrt(freqs), size)[:n]


def fast_fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (at most ~7 % above n for clip lengths)."""
    best = 1 << max(int(n) - 1, 0).bit_length()  # the next power of two, always fast
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            # the smallest power of two times power35 that reaches n
            candidate = power35
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


_NOISE_COLOURS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "white": white_noise,
    "pink": pink_noise,
}
