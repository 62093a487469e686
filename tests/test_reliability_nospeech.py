"""Hallucination guards (issue 14): recordings without speech give no words. Whisper models
invent " Thank you." or " you" for silence and noise unless the no-speech rule (a window is
silent when P(<|nospeech|>) > 0.6 and its mean log-probability < -1.0) and the -60 dBFS
silence gate hold; music-like tones are the other classic trigger."""
import numpy as np
import pytest

import asr
from asr.audio import SAMPLE_RATE

SECONDS = 30
rng = np.random.default_rng(14)
t = np.arange(SECONDS * SAMPLE_RATE) / SAMPLE_RATE


def melody() -> np.ndarray:
    """Half-second notes of a random tune (equal temperament around A4), faded in and out."""
    notes = 440 * 2 ** (rng.integers(-12, 12, 2 * SECONDS) / 12)
    half = SAMPLE_RATE // 2
    return np.concatenate([0.3 * np.sin(2 * np.pi * f * t[:half]) * np.hanning(half) for f in notes])


NON_SPEECH = {
    "digital silence (60 s)": lambda: np.zeros(60 * SAMPLE_RATE),
    "white noise": lambda: 0.1 * rng.standard_normal(SECONDS * SAMPLE_RATE),
    "a melody of tones": melody,
    "a held C major chord": lambda: 0.2 * sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)),
    "50 Hz mains hum": lambda: 0.01 * np.sin(2 * np.pi * 50 * t),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ASR_CACHE_DIR", str(tmp_path_factory.mktemp("asr-cache")))
    yield asr.load_model("tiny.en", device="cpu", quiet=True)
    mp.undo()


def test_recordings_without_speech_give_no_words(model):
    names = list(NON_SPEECH)
    audios = [NON_SPEECH[name]().astype(np.float32) for name in names]
    results = model.transcribe_many(audios, batch_size=len(audios))
    assert {name: r["text"] for name, r in zip(names, results)} == dict.fromkeys(names, "")
    assert all(r["segments"] == [] for r in results)
