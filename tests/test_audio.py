"""Tests for asr.audio against independent references.

Features are checked against a log-mel computed here with librosa's STFT in float64,
and librosa's mel bank against a naive Slaney filterbank written out below; decoding is
checked against the samples that were written, and resampling against the physics
(a tone keeps its frequency, content above the new Nyquist is removed).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr import audio
from asr.audio import (
    AudioError,
    batch_log_mel,
    load_audio,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
)

DATA = Path(__file__).resolve().parents[1] / "data"
SPEECH_CLIP = DATA / "audio" / "librivox-0880.flac"  # "he was not an ill disposed young man"
HAS_FFMPEG = shutil.which("ffmpeg") is not None
NO_FFMPEG_REASON = "the ffmpeg executable is not on PATH (apt-get install ffmpeg)"


# ----------------------------------------------------------------------------- references


def naive_slaney_mel(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-style mel filterbank written out loop by loop (Auditory Toolbox definition).

    Mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 steps per
    factor 6.4). Triangles span neighbouring mel points, each scaled by 2/(f_hi - f_lo)
    so that every filter has the same area.
    """
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0

    def hz_to_mel(f):
        return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep

    def mel_to_hz(m):
        return m * f_sp if m < min_log_mel else min_log_hz * math.exp(logstep * (m - min_log_mel))

    lo_mel, hi_mel = hz_to_mel(0.0), hz_to_mel(sr / 2)
    points = [mel_to_hz(lo_mel + i * (hi_mel - lo_mel) / (n_mels + 1)) for i in range(n_mels + 2)]
    bin_hz = [k * sr / n_fft for k in range(n_fft // 2 + 1)]
    weights = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        f_lo, f_c, f_hi = points[i], points[i + 1], points[i + 2]
        for k, f in enumerate(bin_hz):
            rising = (f - f_lo) / (f_c - f_lo)
            falling = (f_hi - f) / (f_hi - f_c)
            weights[i, k] = max(0.0, min(rising, falling)) * 2.0 / (f_hi - f_lo)
    return weights


def reference_log_mel(x: np.ndarray, n_mels: int) -> np.ndarray:
    """Whisper's log-mel recipe with librosa's STFT, in float64 numpy."""
    import librosa

    x = np.asarray(x, dtype=np.float64)
    spec = librosa.stft(x, n_fft=400, hop_length=160, window="hann", center=True, pad_mode="reflect")
    power = np.abs(spec[:, :-1]) ** 2
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels).astype(np.float64) @ power
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def speech() -> np.ndarray:
    """A real read-speech clip (16 kHz), read directly with soundfile."""
    x, sr = sf.read(str(SPEECH_CLIP), dtype="float32")
    assert sr == 16000
    return x


def noise(n: int = 48123, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def best_lag_correlation(ref: np.ndarray, x: np.ndarray) -> tuple[float, int]:
    """Peak normalised cross-correlation and its lag (x delayed by `lag` samples)."""
    n = len(ref) + len(x) - 1
    nfft = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(x, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)
    k = int(np.argmax(xc))
    lag = k if k < nfft // 2 else k - nfft
    return float(xc[k] / (np.linalg.norm(ref) * np.linalg.norm(x))), lag


def amplitude_at(x: np.ndarray, sr: int, hz: float, width_hz: float = 20.0) -> float:
    """Peak sine amplitude within hz ± width_hz (Hann-windowed spectrum)."""
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    band = (freqs > hz - width_hz) & (freqs < hz + width_hz)
    return float(spec[band].max())


# ----------------------------------------------------------------------------- constants


def test_framing_is_whispers_and_the_features_follow_it():
    """The framing constants are those of Whisper's features as faster-whisper's FeatureExtractor
    (the reference imported weights are checked against) has them, and the features follow
    them: a 30 s window gives N_FRAMES frames, one second FRAMES_PER_SECOND, as theirs do."""
    reference = pytest.importorskip("faster_whisper.feature_extractor",
                                    reason="faster-whisper (the reference) is not installed: pip install -e '.[test]'")
    theirs = reference.FeatureExtractor()
    assert (audio.SAMPLE_RATE, audio.N_FFT, audio.HOP_LENGTH, audio.CHUNK_LENGTH) == (
        theirs.sampling_rate, theirs.n_fft, theirs.hop_length, theirs.chunk_length)
    assert (audio.N_SAMPLES, audio.N_FRAMES) == (theirs.n_samples, theirs.nb_max_frames)
    assert audio.FRAMES_PER_SECOND * theirs.time_per_frame == pytest.approx(1.0)
    for n_samples, n_frames in ((audio.N_SAMPLES, audio.N_FRAMES), (audio.SAMPLE_RATE, audio.FRAMES_PER_SECOND)):
        x = noise(n_samples)
        assert log_mel_spectrogram(x).shape == (80, n_frames) == theirs(x, padding=0).shape


# ----------------------------------------------------------------------------- mel filters


@pytest.mark.parametrize("n_mels", [80, 128])
def test_librosa_mel_bank_is_slaney(n_mels):
    import librosa

    naive = naive_slaney_mel(16000, 400, n_mels)
    lib = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
    np.testing.assert_allclose(lib, naive, rtol=0, atol=1e-6)

    ours = mel_filters(n_mels)
    assert ours.shape == (n_mels, 201) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), naive, rtol=0, atol=1e-6)


def test_mel_filters_any_size_and_cache_is_safe():
    assert mel_filters(40).shape == (40, 201)
    f = mel_filters(80)
    f.zero_()  # a caller scribbling on its copy must not corrupt the cache
    assert mel_filters(80).abs().sum() > 0
    with pytest.raises(ValueError):
        mel_filters(0)


# ----------------------------------------------------------------------------- log-mel


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("signal", ["speech", "noise"])
def test_log_mel_matches_librosa_reference(signal, n_mels):
    x = speech() if signal == "speech" else noise()
    ref = reference_log_mel(x, n_mels)
    for inp in (x, torch.from_numpy(x)):
        out = log_mel_spectrogram(inp, n_mels=n_mels)
        assert out.shape == (n_mels, len(x) // 160) == ref.shape
        assert out.dtype == torch.float32
        assert np.abs(out.numpy() - ref).max() < 1e-4


def test_log_mel_from_path_and_float64_input():
    x = speech()
    ref = reference_log_mel(x, 80)
    assert np.abs(log_mel_spectrogram(SPEECH_CLIP).numpy() - ref).max() < 1e-4
    assert np.abs(log_mel_spectrogram(str(SPEECH_CLIP)).numpy() - ref).max() < 1e-4
    assert np.abs(log_mel_spectrogram(x.astype(np.float64)).numpy() - ref).max() < 1e-4


def test_log_mel_padding_appends_zeros():
    x = noise(20000)
    out = log_mel_spectrogram(x, padding=16000)
    ref = reference_log_mel(np.concatenate([x, np.zeros(16000, np.float32)]), 80)
    assert out.shape == (80, 36000 // 160)
    assert np.abs(out.numpy() - ref).max() < 1e-4


def test_log_mel_peak_is_per_utterance_in_a_batch():
    x = speech()
    loud = x / np.abs(x).max() * 0.9
    quiet = loud * 0.1  # 20 dB quieter: 2 orders of magnitude in power
    batch = log_mel_spectrogram(torch.from_numpy(np.stack([loud, quiet])))
    assert batch.shape == (2, 80, len(x) // 160)
    for row, clip in zip(batch, (loud, quiet)):
        assert np.abs(row.numpy() - reference_log_mel(clip, 80)).max() < 1e-4
        assert torch.allclose(row, log_mel_spectrogram(clip), atol=1e-5)
    # Each clip is clipped 8 orders below its OWN peak, so the quiet one is exactly the
    # loud one shifted by -2/4 (both stay above the 1e-10 power floor). One max over
    # the batch would clip the quiet clip at the loud clip's floor instead.
    assert batch[0].min() * 4 - 4 > -8  # loud floor (log10) is above log10(1e-10) + 2
    assert torch.allclose(batch[1], batch[0] - 0.5, atol=1e-3)
    assert batch[1].min() < batch[0].min() - 0.4


def test_batch_log_mel_equals_one_by_one():
    clips = [noise(16000, 1), speech(), noise(5000, 2) * 0.01]
    mels, n_frames = batch_log_mel(clips, n_mels=80)
    lengths = [len(c) // 160 for c in clips]
    assert mels.shape == (3, 80, max(lengths))
    assert n_frames.dtype == torch.long and n_frames.tolist() == lengths
    for i, clip in enumerate(clips):
        single = log_mel_spectrogram(clip)
        assert torch.equal(mels[i, :, : lengths[i]], single)
        assert torch.all(mels[i, :, lengths[i] :] == 0.0)
        assert np.abs(single.numpy() - reference_log_mel(clip, 80)).max() < 1e-4


def test_log_mel_rejects_bad_shapes():
    with pytest.raises(ValueError):
        log_mel_spectrogram(torch.zeros(1, 2, 16000))
    with pytest.raises(ValueError):
        log_mel_spectrogram(np.zeros(100, np.float32))  # shorter than the STFT's reflect pad


def test_pad_or_trim():
    a = np.arange(10.0).reshape(2, 5)
    assert pad_or_trim(a, 3).tolist() == [[0, 1, 2], [5, 6, 7]]
    assert pad_or_trim(a, 7).tolist() == [[0, 1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 0, 0]]
    assert pad_or_trim(a, 3, axis=0).tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0] * 5]
    t = torch.arange(10.0).reshape(2, 5)
    assert pad_or_trim(t, 3).tolist() == [[0, 1, 2], [5, 6, 7]]
    assert pad_or_trim(t, 7).tolist() == [[0, 1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 0, 0]]
    assert pad_or_trim(t, 3, axis=0).tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0] * 5]
    assert pad_or_trim(np.zeros(10)).shape == (480000,)


# ----------------------------------------------------------------------------- load_audio

LOSSLESS = {  # name: (suffix, soundfile format, subtype, max abs error)
    "wav16": (".wav", "WAV", "PCM_16", 1.5 / 32768),
    "wavfloat": (".wav", "WAV", "FLOAT", 0.0),
    "flac": (".flac", "FLAC", "PCM_16", 1.5 / 32768),
}
LOSSY = {
    "ogg": (".ogg", "OGG", "VORBIS"),
    "mp3": (".mp3", "MP3", "MPEG_LAYER_III"),
}


def _speech_excerpt() -> np.ndarray:
    return speech()[: 24000] * 1.5  # 1.5 s, peak ~0.45


@pytest.mark.parametrize("kind", sorted(LOSSLESS))
def test_load_lossless_formats(tmp_path, kind):
    suffix, fmt, subtype, tol = LOSSLESS[kind]
    x = _speech_excerpt()
    path = tmp_path / f"clip{suffix}"
    sf.write(str(path), x, 16000, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == len(x)
    assert np.abs(y - x).max() <= tol


def _check_lossy(x: np.ndarray, y: np.ndarray):
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x)) <= 2400  # codec frame padding / priming, < 0.15 s
    corr, lag = best_lag_correlation(x, y)
    assert corr > 0.9 and abs(lag) <= 2400, (corr, lag)


@pytest.mark.parametrize("kind", sorted(LOSSY))
def test_load_lossy_formats(tmp_path, kind):
    suffix, fmt, subtype = LOSSY[kind]
    x = _speech_excerpt()
    path = tmp_path / f"clip{suffix}"
    sf.write(str(path), x, 16000, format=fmt, subtype=subtype)
    _check_lossy(x, load_audio(path))


@pytest.mark.skipif(not HAS_FFMPEG, reason=NO_FFMPEG_REASON)
def test_load_m4a_through_ffmpeg(tmp_path):
    x = _speech_excerpt()
    wav, m4a = tmp_path / "src.wav", tmp_path / "clip.m4a"
    sf.write(str(wav), x, 16000, subtype="FLOAT")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "96k", str(m4a)], check=True)
    _check_lossy(x, load_audio(m4a))
    # a 44.1 kHz stereo m4a is downmixed and resampled like any other file
    t = np.arange(44100) / 44100
    tone = 0.4 * np.sin(2 * np.pi * 1000 * t)
    sf.write(str(wav), np.stack([tone, tone], 1), 44100, subtype="FLOAT")
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(m4a)], check=True)
    y = load_audio(m4a)
    assert abs(len(y) - 16000) < 1000  # AAC adds up to one 1024-sample frame
    assert abs(amplitude_at(y[1000:15000], 16000, 1000) - 0.4) < 0.02


def test_stereo_is_averaged(tmp_path):
    t = np.arange(16000) / 16000
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.3 * np.sin(2 * np.pi * 2500 * t + 1.0)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], 1).astype(np.float32), 16000, subtype="FLOAT")
    y = load_audio(path)
    assert y.shape == (16000,)
    np.testing.assert_allclose(y, (left + right) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("sr_in", [44100, 48000])
def test_resampling_is_band_limited(tmp_path, sr_in):
    t = np.arange(sr_in) / sr_in  # 1 s
    x = 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 12000 * t)
    path = tmp_path / f"tone{sr_in}.wav"
    sf.write(str(path), x.astype(np.float32), sr_in, subtype="FLOAT")

    y = load_audio(path)
    assert abs(len(y) - 16000) <= 1
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.fft.rfftfreq(len(y), 1 / 16000)[np.argmax(spec)]
    assert abs(peak_hz - 1000) <= 2
    assert abs(amplitude_at(y, 16000, 1000) - 0.5) < 0.01
    # 12 kHz is above the new 8 kHz Nyquist: decimation without a low-pass filter would
    # fold it onto 16 - 12 = 4 kHz at full strength. Band-limited resampling removes it.
    assert amplitude_at(y, 16000, 4000, width_hz=200) < 1e-3

    # the check above can fail: naive decimation (nearest sample) does show the alias
    naive = x[np.round(np.arange(16000) * sr_in / 16000).astype(int)]
    assert amplitude_at(naive, 16000, 4000, width_hz=200) > 0.1


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name: (path, a phrase the reason must contain)."""
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples\n" * 50)
    zero = tmp_path / "zero_samples.wav"
    sf.write(str(zero), np.zeros(0, np.float32), 16000)
    empty = tmp_path / "zero_bytes.wav"
    empty.write_bytes(b"")
    rand = tmp_path / "random.mp3"
    rand.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    return {
        "missing": (tmp_path / "missing.flac", "file not found"),
        "directory": (folder, "directory"),
        "text": (text, "not an audio file"),
        "zero_samples": (zero, "empty audio (0 samples)"),
        "zero_bytes": (empty, "empty"),
        "random_mp3": (rand, ""),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "text", "zero_samples", "zero_bytes", "random_mp3"])
def test_bad_input_raises_one_line_audio_error(tmp_path, case):
    path, phrase = _bad_inputs(tmp_path)[case]
    with pytest.raises(AudioError) as info:
        load_audio(path)
    err = info.value
    msg = str(err)
    assert isinstance(err, ValueError)
    assert "\n" not in msg and path.name in msg
    assert msg == f"{err.path}: {err.reason}"
    assert phrase in err.reason
    with pytest.raises(AudioError):  # the same through the features entry point
        log_mel_spectrogram(path)


def test_without_ffmpeg_the_reason_says_it_is_needed(tmp_path, monkeypatch):
    path = tmp_path / "voice.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))  # not decodable by libsndfile
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert "ffmpeg" in info.value.reason and "voice.m4a" in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_log_mel_on_cuda_matches_cpu_and_reference():
    x = speech()
    ref = reference_log_mel(x, 128)
    cpu = log_mel_spectrogram(x, n_mels=128)
    on_gpu = log_mel_spectrogram(torch.from_numpy(x).cuda(), n_mels=128)
    via_arg = log_mel_spectrogram(x, n_mels=128, device="cuda")
    assert on_gpu.is_cuda and via_arg.is_cuda
    assert np.abs(on_gpu.cpu().numpy() - ref).max() < 1e-4
    assert torch.allclose(on_gpu.cpu(), cpu, atol=1e-4) and torch.allclose(via_arg.cpu(), cpu, atol=1e-4)

    clips = [x, noise(9000)]
    mels, n_frames = batch_log_mel(clips, device="cuda")
    assert mels.is_cuda and n_frames.is_cuda and n_frames.tolist() == [len(x) // 160, 9000 // 160]
    for i, clip in enumerate(clips):
        assert np.abs(mels[i, :, : n_frames[i]].cpu().numpy() - reference_log_mel(clip, 80)).max() < 1e-4
