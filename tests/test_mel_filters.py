"""The mel filterbank is computed in plain numpy (no librosa/numba on the transcribe path); it
must equal librosa's, which Whisper's mel_filters.npz was made from, to 1e-7."""
import subprocess
import sys

import numpy as np
import pytest

from asr.audio.features import hz_to_mel, mel_filters, mel_to_hz


@pytest.mark.parametrize("n_mels", [40, 80, 128])
def test_mel_filters_equal_librosa(n_mels):
    import librosa

    theirs = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
    ours = mel_filters(n_mels).numpy()
    assert ours.shape == theirs.shape == (n_mels, 201)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-7)


def test_mel_scale_equals_librosa():
    import librosa

    hz = np.array([0.0, 100.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0])
    np.testing.assert_allclose(hz_to_mel(hz), librosa.hz_to_mel(hz, htk=False), rtol=1e-12)
    mels = np.linspace(0, 45, 19)
    np.testing.assert_allclose(mel_to_hz(mels), librosa.mel_to_hz(mels, htk=False), rtol=1e-12)


def test_features_do_not_import_librosa():
    """Importing librosa (and compiling its numba helpers) cost 1.4 s per process: the features
    of a transcription must not need it."""
    code = ("import sys, numpy as np; from asr.audio.features import log_mel_spectrogram; "
            "log_mel_spectrogram(np.zeros(16000, np.float32)); "
            "print('librosa' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
