"""Window-by-window reading equals decoding the whole file, and keeps only what is still needed."""
import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioError, load_audio
from asr.audio.stream import READ_BLOCK_S, ArrayAudio, AudioStream, open_audio


def tone_file(path, rate, seconds, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    signal = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    data = np.stack([signal, 0.5 * signal][:channels], axis=1) if channels > 1 else signal
    # in one-second pieces: libsndfile's vorbis encoder crashes on long single writes
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels) as f:
        for start in range(0, len(data), rate):
            f.write(data[start:start + rate].astype(np.float32))
    return path


@pytest.mark.parametrize("rate,channels,suffix", [(16000, 1, ".flac"), (44100, 2, ".wav"), (48000, 1, ".ogg")])
def test_windows_equal_whole_file_decoding(tmp_path, rate, channels, suffix):
    path = tone_file(tmp_path / f"x{suffix}", rate, 47.3, channels)
    whole = load_audio(path)
    stream = open_audio(path)
    assert isinstance(stream, AudioStream)
    window = 30 * 16000
    start, pieces = 0, []
    while start < len(whole):  # forward seeks, overlapping windows, as transcription does
        piece = stream.window(start, start + window)
        np.testing.assert_allclose(piece, whole[start:start + window], atol=1e-6)
        # only the current window and one decoded block are held
        assert len(stream.buffer) <= window + (READ_BLOCK_S + 1) * 16000
        start += 20 * 16000
    assert len(stream) == len(whole)


def test_arrays_and_unreadable_files(tmp_path):
    assert isinstance(open_audio(np.zeros(10, np.float32)), ArrayAudio)
    with pytest.raises(AudioError, match="missing.wav: file not found"):
        open_audio(tmp_path / "missing.wav")
    (tmp_path / "notes.wav").write_text("hello")
    with pytest.raises(AudioError, match="notes.wav"):
        open_audio(tmp_path / "notes.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty audio"):
        open_audio(tmp_path / "empty.wav")


def test_rewind_reads_the_file_again_and_dropped_samples_are_an_error(tmp_path):
    path = tone_file(tmp_path / "x.wav", 44100, 35.0)
    whole = load_audio(path)
    stream = open_audio(path)
    stream.window(25 * 16000, 31 * 16000)
    # a few hundred samples behind the last start stay readable (STFT frames reach back)
    np.testing.assert_allclose(stream.window(25 * 16000 - 200, 25 * 16000), whole[25 * 16000 - 200:25 * 16000], atol=1e-6)
    with pytest.raises(ValueError, match="already dropped"):
        stream.window(0, 100)
    stream.window(30 * 16000, len(whole))  # to the end: the exact length is known now
    stream.rewind()
    assert len(stream) == len(whole)
    np.testing.assert_allclose(stream.window(0, 16000), whole[:16000], atol=1e-6)
