"""Whisper windows cut from the whole-file features, computed one window at a time, against
faster-whisper's own feature extractor run over the whole file (the reference), and against a
naive numpy STFT where faster-whisper is not installed."""
import numpy as np
import pytest
import soundfile as sf

from asr.audio import HOP_LENGTH, N_FFT, N_FRAMES, mel_filters
from asr.audio.stream import ArrayAudio, open_audio
from asr.audio.whisper_windows import content_frames, log10_mel_peak, whisper_window

N_MELS = 80


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts under a slow envelope, loudest near the end (a window's own peak is then
    not the file's), with a second of digital silence, where the log floor decides the value."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    envelope = 0.05 + 0.4 * (np.sin(2 * np.pi * 0.7 * t) > 0) * (t / seconds) ** 3
    envelope[(t > 1.0) & (t < 2.0)] = 0.0
    return (rng.standard_normal(n) * envelope).astype(np.float32)


def naive_whole_file_features(audio: np.ndarray) -> np.ndarray:
    """Whisper's whole-file log-mel written out with numpy: HOP zeros appended, centred frames
    with reflect padding, last frame dropped, floor 8 below the file's peak."""
    padded = np.pad(np.pad(audio, (0, HOP_LENGTH)), (N_FFT // 2, N_FFT // 2), mode="reflect")
    window = np.hanning(N_FFT + 1)[:-1]
    n_frames = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    frames = np.stack([padded[i * HOP_LENGTH:i * HOP_LENGTH + N_FFT] * window for i in range(n_frames)], axis=1)
    power = np.abs(np.fft.rfft(frames, axis=0)) ** 2
    log_spec = np.log10(np.maximum(mel_filters(N_MELS).numpy() @ power[:, :-1], 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def reference_features(audio: np.ndarray) -> np.ndarray:
    try:
        from faster_whisper.feature_extractor import FeatureExtractor
    except ImportError:
        return naive_whole_file_features(audio)
    return FeatureExtractor(feature_size=N_MELS)(audio)


def reference_window(features: np.ndarray, seek: int) -> np.ndarray:
    """faster-whisper's window: features[:, seek:seek+size] padded with 0.0 to 3000 frames."""
    size = min(N_FRAMES, features.shape[-1] - 1 - seek)
    window = np.zeros((N_MELS, N_FRAMES), np.float32)
    window[:, :size] = features[:, seek:seek + size]
    return window


@pytest.mark.parametrize("seconds", [4.37, 71.9])
def test_windows_equal_the_whole_file_features(seconds):
    audio = speechlike(seconds)
    features = reference_features(audio)
    assert features.shape[-1] == len(audio) // HOP_LENGTH + 1
    source = ArrayAudio(audio)
    peak = log10_mel_peak(source, N_MELS)
    last = content_frames(len(audio)) - 1
    for seek in sorted({0, 1, 1234, 2999, 3000, 4417, last}):
        if seek > last:
            continue
        ours = whisper_window(source, seek, peak, N_MELS).numpy()
        np.testing.assert_allclose(ours, reference_window(features, seek), atol=2e-4,
                                   err_msg=f"window at frame {seek}")


def test_naive_reference_agrees_with_faster_whisper():
    pytest.importorskip("faster_whisper")
    audio = speechlike(3.3, seed=1)
    from faster_whisper.feature_extractor import FeatureExtractor

    np.testing.assert_allclose(naive_whole_file_features(audio), FeatureExtractor(feature_size=N_MELS)(audio),
                               atol=2e-4)


def test_streamed_file_gives_the_same_windows(tmp_path):
    """An AudioStream (decoded block by block, rewound after the peak pass) gives the windows of
    the whole file in memory, seeks moving forward as transcription moves them."""
    audio = speechlike(65.0, seed=2)
    sf.write(tmp_path / "long.flac", audio, 16000, subtype="PCM_24")
    whole = ArrayAudio(sf.read(tmp_path / "long.flac", dtype="float32")[0])
    stream = open_audio(tmp_path / "long.flac")
    peak = log10_mel_peak(stream, N_MELS)
    stream.rewind()
    assert peak == pytest.approx(log10_mel_peak(whole, N_MELS), abs=1e-6)
    for seek in (0, 2870, 5555, 6000):
        np.testing.assert_allclose(whisper_window(stream, seek, peak, N_MELS).numpy(),
                                   whisper_window(whole, seek, peak, N_MELS).numpy(), atol=1e-6)
