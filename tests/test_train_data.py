"""Which utterances training keeps for a model: the encoder's window and, for CTC, at least one
encoder position per target token, at Whisper's 20 ms positions and at 40 ms (audio_stride 4).
The expected counts come from frame arithmetic written out here, not from the model."""
from __future__ import annotations

import math

import pytest

from asr.config import ModelDimensions, ModelOptions
from asr.data.manifest import Utterance
from asr.nn.model import ASRModel
from asr.train.data import filter_for_model

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=50, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                       n_vocab=300, n_text_ctx=64, n_text_state=16, n_text_head=2, n_text_layer=1)
PROMPT = 3


class CharTokenizer:
    """One token per character, a 3-token prompt."""
    sot_sequence_including_notimestamps = (0, 1, 2)

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def expected_kept(utterances, audio_stride):
    kept = []
    for u in utterances:
        frames = int(u.duration * 100)
        positions = math.ceil(frames / audio_stride)  # kernel 3, padding 1, stride 2: ceil per stage
        if frames > audio_stride * DIMS.n_audio_ctx or PROMPT + len(u.text) > DIMS.n_text_ctx:
            continue
        if len(u.text) > positions:
            continue
        kept.append(u.id)
    return kept


@pytest.mark.parametrize("audio_stride", [2, 4])
def test_kept_utterances_follow_the_encoder_geometry(audio_stride):
    utterances = [Utterance(f"u{i}", "x.flac", "a" * chars, duration)
                  for i, (duration, chars) in enumerate([
                      (0.5, 10), (0.5, 20), (0.5, 30), (0.3, 8), (0.3, 16),   # CTC room differs by stride
                      (0.9, 5), (1.1, 5), (1.9, 5), (2.1, 5),                 # window: 1 s or 2 s
                      (1.0, 70),                                              # past the decoder context
                  ])]
    kept, dropped = filter_for_model(utterances, CharTokenizer(), ASRModel(DIMS, ModelOptions(audio_stride=audio_stride)),
                                     need_ctc=True)
    want = expected_kept(utterances, audio_stride)
    assert [u.id for u in kept] == want
    assert dropped.total() == len(utterances) - len(want)
    # the two strides do differ on these utterances
    assert expected_kept(utterances, 2) != expected_kept(utterances, 4)
