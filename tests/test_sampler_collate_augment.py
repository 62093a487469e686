"""Batching (DurationBucketSampler, collate) and augmentation (Augmenter)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asr.audio import HOP_LENGTH, SAMPLE_RATE, log_mel_spectrogram
from asr.data.augment import (AugmentConfig, Augmenter, add_noise, fast_fft_length, pink_noise, speed_perturb,
                               white_noise)
from asr.data.collate import IGNORE_INDEX, collate, pad_to_multiples
from asr.data.sampler import DurationBucketSampler

# ----------------------------------------------------------------------------- sampler


def random_durations(n=500, seed=0, low=0.5, high=15.0):
    return np.random.default_rng(seed).uniform(low, high, n).round(3).tolist()


def all_batches(sampler):
    return [list(b) for b in sampler]


def flat(batches):
    return [i for b in batches for i in b]


def test_sampler_deterministic_for_a_seed():
    d = random_durations()
    a = all_batches(DurationBucketSampler(d, 60.0, seed=1))
    b = all_batches(DurationBucketSampler(d, 60.0, seed=1))
    c = all_batches(DurationBucketSampler(d, 60.0, seed=2))
    assert a == b
    assert a != c


def test_sampler_epochs_differ_and_each_covers_everything_once():
    d = random_durations()
    s = DurationBucketSampler(d, 60.0, seed=1)
    s.set_epoch(0)
    e0 = all_batches(s)
    s.set_epoch(1)
    e1 = all_batches(s)
    assert e0 != e1
    assert flat(e0) != flat(e1)
    for epoch in (e0, e1):
        assert sorted(flat(epoch)) == list(range(len(d)))


def test_sampler_padded_duration_within_cap_and_padding_small():
    d = random_durations() + [100.0]  # one utterance longer than the cap on its own
    cap = 60.0
    batches = all_batches(DurationBucketSampler(d, cap, seed=3))
    for b in batches:
        padded = len(b) * max(d[i] for i in b)
        assert padded <= cap or b == [len(d) - 1]
    assert [len(d) - 1] in batches  # never dropped
    # similar durations together: little of the padded budget is padding
    real = sum(d[:-1])
    padded = sum(len(b) * max(d[i] for i in b) for b in batches if b != [len(d) - 1])
    assert real / padded > 0.9
    # and the cap is used: batches are not needlessly small (mean fill > 70 %)
    assert padded / (cap * (len(batches) - 1)) > 0.7


def test_sampler_without_shuffle_is_short_to_long():
    d = random_durations(100)
    batches = all_batches(DurationBucketSampler(d, 30.0, seed=0, shuffle=False))
    longest = [max(d[i] for i in b) for b in batches]
    assert longest == sorted(longest)


def test_sampler_max_batch_size():
    d = [1.0] * 50
    batches = all_batches(DurationBucketSampler(d, 1000.0, seed=0, max_batch_size=8))
    assert max(len(b) for b in batches) == 8
    assert sorted(flat(batches)) == list(range(50))


@pytest.mark.parametrize("k", [0, 1, 7])
def test_sampler_mid_epoch_resume_yields_exactly_the_remaining_batches(k):
    d = random_durations()
    s = DurationBucketSampler(d, 60.0, seed=5)
    s.set_epoch(2)
    expected = all_batches(s)
    s.set_epoch(2)
    it = iter(s)
    consumed = [next(it) for _ in range(k)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["batches_consumed"] == k

    resumed = DurationBucketSampler(d, 60.0, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop's usual call keeps the position
    assert len(resumed) == len(expected) - k
    rest = all_batches(resumed)
    assert consumed + rest == expected
    # afterwards the epochs continue as if never interrupted
    fresh = DurationBucketSampler(d, 60.0, seed=5)
    fresh.set_epoch(3)
    resumed.set_epoch(3)
    assert all_batches(resumed) == all_batches(fresh)


def test_sampler_resume_with_explicit_consumed_count_and_mismatch():
    d = random_durations()
    s = DurationBucketSampler(d, 60.0, seed=5)
    expected = all_batches(s)
    state = s.state_dict(batches_consumed=4)  # e.g. a DataLoader prefetched ahead
    r = DurationBucketSampler(d, 60.0, seed=5)
    r.load_state_dict(state)
    assert all_batches(r) == expected[4:]
    with pytest.raises(ValueError, match="seed"):
        DurationBucketSampler(d, 60.0, seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="n_utterances"):
        DurationBucketSampler(d[:-1], 60.0, seed=5).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3])
def test_sampler_ddp_shards_cover_everything_once_with_equal_counts(world_size):
    # 3 x 3 s fits a 10 s cap: 101 utterances -> 34 batches, not a multiple of 3 (nor of
    # 2 for 99); check several sizes so the uneven case is certainly exercised.
    uneven_seen = False
    for n in (99, 100, 101, 103):
        d = [3.0] * n
        single = DurationBucketSampler(d, 10.0, seed=7)
        uneven_seen |= len(single) % world_size != 0
        shards = []
        for rank in range(world_size):
            s = DurationBucketSampler(d, 10.0, seed=7, rank=rank, world_size=world_size)
            s.set_epoch(4)
            shards.append(all_batches(s))
            assert len(s) == len(shards[-1])
        assert len({len(b) for b in shards}) == 1, "every rank must run the same number of steps"
        everything = [i for shard in shards for i in flat(shard)]
        assert sorted(everything) == list(range(n)), "no duplicates, no losses"
        for shard in shards:
            assert all(len(b) * 3.0 <= 10.0 for b in shard)
        # ranks get different batches: no rank is a copy of another
        assert len({tuple(map(tuple, s)) for s in shards}) == world_size
    assert uneven_seen


@pytest.mark.parametrize("world_size", [2, 3])
def test_sampler_ddp_drop_last_drops_only_the_remainder(world_size):
    d = random_durations(301, seed=9)
    single = len(DurationBucketSampler(d, 60.0, seed=7))
    shards = [
        all_batches(DurationBucketSampler(d, 60.0, seed=7, rank=r, world_size=world_size, drop_last=True))
        for r in range(world_size)
    ]
    assert len({len(s) for s in shards}) == 1
    assert sum(len(s) for s in shards) == single - single % world_size
    everything = [i for s in shards for i in flat(s)]
    assert len(everything) == len(set(everything))  # no duplicates


def test_sampler_ddp_more_ranks_than_utterances_pads_by_repeating():
    d = [2.0, 3.0]
    shards = [all_batches(DurationBucketSampler(d, 100.0, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [1, 1, 1]
    assert set(flat([b for s in shards for b in s])) == {0, 1}


# ----------------------------------------------------------------------------- collate


class CharTokenizer:
    """A stand-in tokenizer with obvious ids: letters 1..26, space 27; specials above."""

    eot = 100
    sot_sequence_including_notimestamps = (101, 102, 103, 104)

    def encode(self, text):
        return [27 if c == " " else ord(c) - ord("a") + 1 for c in text]


def make_clips(lengths_s, seed=0):
    """Utterances with distinct, non-silent audio kept in memory; loader by path."""
    rng = np.random.default_rng(seed)
    store, utts = {}, []
    words = ["hello world", "a", "speech recognition is fun", "ok then"]
    for i, seconds in enumerate(lengths_s):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        audio = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.05 * rng.standard_normal(len(t))
        path = f"mem/{i}.flac"
        store[path] = audio.astype(np.float32)
        utts.append(SimpleNamespace(id=f"utt{i}", text=words[i % len(words)], audio_path=path))
    return utts, store.__getitem__


def test_collate_shapes_and_padding():
    utts, loader = make_clips([1.0, 2.5, 0.7])
    batch = collate(utts, loader, CharTokenizer(), n_mels=80)
    expected_frames = [16000 // HOP_LENGTH, 40000 // HOP_LENGTH, 11200 // HOP_LENGTH]
    assert batch.n_frames.tolist() == expected_frames
    assert batch.mels.shape == (3, 80, max(expected_frames))
    assert batch.mels.dtype == torch.float32
    for b, n in enumerate(expected_frames):
        assert torch.all(batch.mels[b, :, n:] == 0)
    longest_text = max(len(u.text) for u in utts)
    assert batch.tokens.shape == batch.targets.shape == batch.token_mask.shape == (3, 4 + longest_text)
    assert batch.ids == ["utt0", "utt1", "utt2"]
    assert batch.texts == [u.text for u in utts]
    assert len(batch) == 3


def test_collate_targets_are_inputs_shifted_by_one():
    tok = CharTokenizer()
    utts, loader = make_clips([1.0, 1.0, 1.0, 1.0])
    batch = collate(utts, loader, tok)
    prompt = list(tok.sot_sequence_including_notimestamps)
    for b, u in enumerate(utts):
        text_ids = tok.encode(u.text)
        n = len(prompt) + len(text_ids)  # real input positions
        assert batch.token_mask[b].tolist() == [True] * n + [False] * (batch.tokens.shape[1] - n)
        assert batch.tokens[b, :n].tolist() == prompt + text_ids
        # expected targets written out independently of the implementation
        expected = [IGNORE_INDEX] * (len(prompt) - 1) + text_ids + [tok.eot]
        expected += [IGNORE_INDEX] * (batch.tokens.shape[1] - n)
        assert batch.targets[b].tolist() == expected
        # shifted by one wherever both sides are real text
        for i in range(len(prompt) - 1, n - 1):
            assert batch.targets[b, i] == batch.tokens[b, i + 1]
        assert torch.all(batch.tokens[b, n:] == tok.eot)  # padding is a valid id


def test_padding_to_multiples_adds_only_padding_and_keeps_to_the_limits():
    tok = CharTokenizer()
    utts, loader = make_clips([1.0, 2.5, 0.7])
    batch = collate(utts, loader, tok, n_mels=80)
    frames, length = batch.mels.shape[-1], batch.tokens.shape[1]  # 250 frames, 29 positions
    padded = pad_to_multiples(batch, tok.eot, frames=32, tokens=8)
    assert padded.mels.shape[-1] == 256 and padded.tokens.shape[1] == 32
    assert torch.equal(padded.mels[..., :frames], batch.mels) and torch.all(padded.mels[..., frames:] == 0)
    assert torch.equal(padded.n_frames, batch.n_frames)
    for name, value in (("tokens", tok.eot), ("targets", IGNORE_INDEX), ("token_mask", False)):
        old, new = getattr(batch, name), getattr(padded, name)
        assert torch.equal(new[:, :length], old) and torch.all(new[:, length:] == value), name
    # never past the model's contexts, and never shorter than the batch
    limited = pad_to_multiples(batch, tok.eot, frames=32, tokens=8, max_frames=frames + 3, max_tokens=length)
    assert limited.mels.shape[-1] == frames + 3 and limited.tokens.shape[1] == length
    assert pad_to_multiples(batch, tok.eot, frames=32, max_frames=frames - 10).mels.shape[-1] == frames
    assert pad_to_multiples(batch, tok.eot) is batch  # multiples of 1: nothing to do


def test_padding_to_multiples_leaves_the_training_losses_unchanged():
    """The joint CTC/attention loss of a small float32 model on a batch and on the same batch
    padded to multiples: equal, so the padding is masked everywhere (encoder, decoder, CTC)."""
    from asr.config import ModelDimensions
    from asr.nn.model import ASRModel
    from asr.train.objective import TrainingModel

    torch.manual_seed(0)
    tok = CharTokenizer()
    dims = ModelDimensions(n_mels=80, n_audio_ctx=200, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
                           n_vocab=120, n_text_ctx=64, n_text_state=32, n_text_head=2, n_text_layer=2)
    training = TrainingModel(ASRModel(dims), n_text=100, ctc_weight=0.5, label_smoothing=0.1).eval()
    utts, loader = make_clips([1.0, 2.5, 0.7])
    batch = collate(utts, loader, tok, n_mels=80)
    padded = pad_to_multiples(batch, tok.eot, frames=64, tokens=16)
    assert padded.mels.shape[-1] > batch.mels.shape[-1] and padded.tokens.shape[1] > batch.tokens.shape[1]
    with torch.no_grad():
        want = training(batch.mels, batch.n_frames, batch.tokens, batch.targets)
        got = training(padded.mels, padded.n_frames, padded.tokens, padded.targets)
    for a, b in zip(want, got):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (want, got)


def test_collate_batched_mels_equal_one_by_one():
    utts, loader = make_clips([0.6, 3.1, 1.7])
    batch = collate(utts, loader, CharTokenizer())
    for b, u in enumerate(utts):
        alone = collate([u], loader, CharTokenizer())
        n = int(alone.n_frames[0])
        assert n == int(batch.n_frames[b])
        assert torch.equal(batch.mels[b, :, :n], alone.mels[0])
        # and equal to the front-end applied directly
        assert torch.equal(alone.mels[0], log_mel_spectrogram(loader(u.audio_path)))


def test_collate_with_the_real_tokenizer_round_trips_text():
    from asr.text.tokenizer import Tokenizer

    texts = ["hello world", "speech recognition is fun", "ok then", "a"] * 20
    tok = Tokenizer.train(texts, vocab_size=300)
    utts, loader = make_clips([1.0, 1.2, 0.8])
    batch = collate(utts, loader, tok)
    for b, u in enumerate(utts):
        real = [t for t in batch.targets[b].tolist() if t != IGNORE_INDEX]
        assert real[-1] == tok.eot
        assert tok.decode(real[:-1]).strip() == u.text
        prompt = tok.sot_sequence_including_notimestamps
        assert tuple(batch.tokens[b, : len(prompt)].tolist()) == prompt


def test_collate_timestamp_format_share_and_layout():
    """Whisper's timestamp format for a share of the clips: <|0.00|> text <|END|> <|eot|>
    after the prompt without <|notimestamps|>, END the clip length on the 20 ms grid."""
    from asr.text.tokenizer import Tokenizer

    tok = Tokenizer.train(["hello world", "speech recognition is fun", "ok then", "a"] * 20, vocab_size=300)
    lengths = [1.0, 2.5, 0.7, 1.31] * 10
    utts, loader = make_clips(lengths)
    for i, u in enumerate(utts):
        u.text = ["hello world", "a", "speech recognition is fun", "ok then"][i % 4]
        u.id = f"utt{i}"
    batch = collate(utts, loader, tok, timestamp_prob=0.5, timestamp_seed=7)
    stamped = 0
    base = list(tok.sot_sequence_including_notimestamps)  # sot, en, transcribe, notimestamps
    for b, u in enumerate(utts):
        real_inputs = batch.tokens[b, batch.token_mask[b]].tolist()
        learned = [t for t in batch.targets[b].tolist() if t != IGNORE_INDEX]
        text = tok.encode(u.text)
        if real_inputs[3] == base[3]:  # <|notimestamps|>: the plain format
            assert learned == text + [tok.eot]
            continue
        stamped += 1
        frames = round(lengths[b] * 100)
        end = tok.timestamp_begin + round(frames / 100 / 0.02)  # 20 ms steps from <|0.00|>
        assert real_inputs[:3] == base[:3]
        assert learned == [tok.timestamp_begin] + text + [end, tok.eot]
        assert real_inputs == base[:3] + learned[:-1]
    assert 10 <= stamped <= 30  # about half of 40
    again = collate(utts, loader, tok, timestamp_prob=0.5, timestamp_seed=7)
    assert torch.equal(again.targets, batch.targets)  # the choice is fixed per id and seed
    other = collate(utts, loader, tok, timestamp_prob=0.5, timestamp_seed=8)
    assert not torch.equal(other.targets, batch.targets)
    none = collate(utts, loader, tok, timestamp_prob=0.0)
    assert all(none.tokens[b, 3] == base[3] for b in range(len(utts)))


def test_collate_timestamps_with_lead_silence_mark_where_speech_is():
    """timestamp_max_lead_s: a silence before each timestamped clip and a segment from the
    start of the speech to its end. The clips here are a tone between known silences (0.5 s
    before, 0.3 s after), so the expected times are known without the energy detector; with 1.1x
    speed perturbation every time shrinks by that factor."""
    from asr.text.tokenizer import Tokenizer

    tok = Tokenizer.train(["hello world", "ok then", "a"] * 20, vocab_size=300)
    before_s, tone_s, after_s = 0.5, 1.2, 0.3
    store, utts = {}, []
    for i in range(12):
        t = np.arange(int(tone_s * SAMPLE_RATE)) / SAMPLE_RATE
        tone = 0.3 * np.sin(2 * np.pi * (300 + 50 * i) * t)
        store[f"mem/{i}"] = np.concatenate([np.zeros(int(before_s * SAMPLE_RATE)), tone,
                                            np.zeros(int(after_s * SAMPLE_RATE))]).astype(np.float32)
        utts.append(SimpleNamespace(id=f"utt{i}", text="ok then", audio_path=f"mem/{i}"))
    speed = Augmenter(AugmentConfig(enabled=True, speed_factors=[1.1], noise_prob=0.0, freq_masks=0, time_masks=0))
    for augment, factor in ((None, 1.0), (speed, 1.1)):
        batch = collate(utts, store.__getitem__, tok, augment=augment, timestamp_prob=1.0, timestamp_seed=3,
                        timestamp_max_lead_s=2.0)
        leads = []
        for b in range(len(utts)):
            learned = [t for t in batch.targets[b].tolist() if t != IGNORE_INDEX]
            start = (learned[0] - tok.timestamp_begin) * 0.02
            end = (learned[-2] - tok.timestamp_begin) * 0.02
            clip_s = before_s + tone_s + after_s
            lead = batch.n_frames[b].item() / 100 * factor - clip_s  # the silence the clip got
            leads.append(lead)
            assert abs(start - (lead + before_s) / factor) <= 0.04, (b, start, lead)
            assert abs(end - (lead + before_s + tone_s) / factor) <= 0.04, (b, end, lead)
        assert 0 <= min(leads) and max(leads) <= 2.0 + 0.02 and max(leads) - min(leads) > 0.5  # random, bounded
    fixed = collate(utts, store.__getitem__, tok, timestamp_prob=1.0, timestamp_seed=3)  # no lead: the old format
    learned = [t for t in fixed.targets[0].tolist() if t != IGNORE_INDEX]
    assert learned[0] == tok.timestamp_begin


# ----------------------------------------------------------------------------- augmentation


def measured_snr_db(clean, noisy):
    clean = clean.astype(np.float64)
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean**2) / np.mean(noise**2))


def dominant_frequency(x, sr=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)]


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_length_and_pitch_by_the_factor(factor):
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    out = speed_perturb(tone, factor)
    assert out.dtype == np.float32
    assert abs(len(out) - len(tone) / factor) <= 2
    assert dominant_frequency(out) == pytest.approx(440.0 * factor, abs=2.0)
    assert speed_perturb(tone, 1.0) is tone


@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
@pytest.mark.parametrize("colour", [white_noise, pink_noise])
def test_added_noise_has_the_requested_snr(snr_db, colour):
    rng = np.random.default_rng(1)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    speech = (0.2 * np.sin(2 * np.pi * 300 * t) * (t > 0.3)).astype(np.float32)  # with silence
    noisy = add_noise(speech, colour(len(speech), rng), snr_db)
    assert noisy.shape == speech.shape
    assert measured_snr_db(speech, noisy) == pytest.approx(snr_db, abs=0.5)


def test_pink_noise_falls_by_about_3_db_per_octave():
    x = pink_noise(2**18, np.random.default_rng(0))
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    band = lambda lo, hi: power[(f >= lo) & (f < hi)].mean()  # noqa: E731
    # power density ~ 1/f: 10x the frequency = -10 dB
    drop_db = 10 * np.log10(band(100, 200) / band(1000, 2000))
    assert drop_db == pytest.approx(10.0, abs=1.0)


def test_pink_noise_at_a_prime_length_keeps_its_length_and_slope():
    n = 262139  # prime: the FFT runs at a 5-smooth length and the noise is cut
    x = pink_noise(n, np.random.default_rng(0))
    assert x.shape == (n,)
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    band = lambda lo, hi: power[(f >= lo) & (f < hi)].mean()  # noqa: E731
    assert 10 * np.log10(band(100, 200) / band(1000, 2000)) == pytest.approx(10.0, abs=1.0)


def test_fast_fft_length_is_the_smallest_5_smooth_length():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in list(range(1, 400)) + [48001, 64007, 79999, 262139]:
        expected = next(m for m in range(n, 2 * n + 2) if smooth(m))
        assert fast_fft_length(n) == expected, n


def test_augmenter_noise_snr_in_range_and_length_follows_speed():
    cfg = AugmentConfig(speed_factors=(1.0,), noise_prob=1.0, snr_min_db=12.0, snr_max_db=12.0)
    aug = Augmenter(cfg, seed=0)
    utts, loader = make_clips([1.5])
    clean = loader(utts[0].audio_path)
    noisy = aug.waveform(clean, key="utt0")
    assert measured_snr_db(clean, noisy) == pytest.approx(12.0, abs=0.5)

    cfg = AugmentConfig(speed_factors=(1.1,), noise_prob=0.0)
    fast = Augmenter(cfg, seed=0).waveform(clean, key="utt0")
    assert abs(len(fast) - len(clean) / 1.1) <= 2


def test_augmenter_draws_are_keyed_by_seed_epoch_and_utterance():
    cfg = AugmentConfig(noise_prob=1.0)
    utts, loader = make_clips([1.0])
    clean = loader(utts[0].audio_path)
    a, b = Augmenter(cfg, seed=3), Augmenter(cfg, seed=3)
    assert np.array_equal(a.waveform(clean, key="x"), b.waveform(clean, key="x"))
    first = a.waveform(clean, key="x")
    a.set_epoch(1)
    assert not np.array_equal(first, a.waveform(clean, key="x"))  # (different lengths count too)
    assert not np.array_equal(first, b.waveform(clean, key="y"))


def spec_batch(n_frames=(300, 120), n_mels=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    mels = torch.zeros(len(n_frames), n_mels, max(n_frames))
    for b, n in enumerate(n_frames):
        mels[b, :, :n] = torch.rand(n_mels, n, generator=g) * 2 - 1  # distinct values
    return mels, torch.tensor(n_frames)


def runs(flags):
    """Lengths of the runs of True in a 1-D bool sequence."""
    out, n = [], 0
    for f in list(flags) + [False]:
        if f:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


def test_specaugment_masks_within_bounds_and_only_in_real_frames():
    F, T, p = 15, 40, 0.2
    cfg = AugmentConfig(freq_masks=1, freq_mask_width=F, time_masks=1, time_mask_width=T, time_mask_ratio=p)
    mels, n_frames = spec_batch()
    original = mels.clone()
    masked_any = False
    for seed in range(30):
        aug = Augmenter(cfg, seed=seed)
        out = aug.spec(mels, n_frames, keys=["a", "b"])
        assert out.shape == mels.shape
        for b, n in enumerate(n_frames.tolist()):
            assert torch.all(out[b, :, n:] == 0), "padding must stay untouched"
            changed = out[b, :, :n] != mels[b, :, :n]
            rows = changed.all(dim=1)  # frequency bands masked over all real frames
            cols = changed.all(dim=0)  # time spans masked over all bins
            # every changed cell belongs to a masked band or a masked span
            assert torch.equal(changed, rows[:, None] | cols[None, :])
            assert all(w <= F for w in runs(rows.tolist()))
            assert all(w <= min(T, int(p * n)) for w in runs(cols.tolist()))
            assert len(runs(rows.tolist())) <= 1 and len(runs(cols.tolist())) <= 1
            masked_any |= bool(changed.any())
    assert masked_any
    assert torch.equal(mels, original), "the input batch is not modified in place"


def test_specaugment_several_masks_total_width_bounded():
    cfg = AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=3, time_mask_width=20, time_mask_ratio=1.0)
    mels, n_frames = spec_batch()
    for seed in range(20):
        out = Augmenter(cfg, seed=seed).spec(mels, n_frames)
        for b, n in enumerate(n_frames.tolist()):
            changed = out[b, :, :n] != mels[b, :, :n]
            assert int(changed.all(dim=1).sum()) <= 2 * 10
            assert int(changed.all(dim=0).sum()) <= 3 * 20


def test_evaluation_is_bit_identical_to_no_augmentation():
    utts, loader = make_clips([1.0, 2.0, 0.9])
    tok = CharTokenizer()
    cfg = AugmentConfig(noise_prob=1.0, speed_factors=(0.9, 1.1))
    plain = collate(utts, loader, tok)

    evaluating = Augmenter(cfg, seed=0).eval()
    disabled = Augmenter(AugmentConfig(enabled=False, noise_prob=1.0), seed=0)
    for aug in (evaluating, disabled):
        out = collate(utts, loader, tok, augment=aug)
        for name in ("mels", "n_frames", "tokens", "targets", "token_mask"):
            assert torch.equal(getattr(out, name), getattr(plain, name)), name

    # the same augmenter in training mode does change the features (the check can fail)
    training = collate(utts, loader, tok, augment=evaluating.train())
    assert training.mels.shape != plain.mels.shape or not torch.equal(training.mels, plain.mels)
    assert torch.equal(training.targets, plain.targets)  # text is never augmented
