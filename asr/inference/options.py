"""What a user chooses about transcription: the options dataclass, Whisper's thresholds and the
compute types. Apart from the engine (asr.inference.transcribe, .compute) because the command
line builds its parser and checks its arguments from these before torch is imported."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

COMPUTE_TYPES = ("auto", "float32", "float32_shortlist", "float16_decoder", "bfloat16_encoder",
                 "bfloat16_encoder_float16_decoder", "int8", "bfloat16", "float16")  # see .compute
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_THRESHOLD = 2.4  # above: the text repeats itself, decode again hotter
LOGPROB_THRESHOLD = -1.0  # mean token log-probability below: unsure, decode again hotter
NO_SPEECH_THRESHOLD = 0.6  # <|nospeech|> probability above (and unsure): the window is silent
# A window quieter than this (RMS, dB below full scale) is silence and is not decoded: Whisper
# models invent words (" you", " Thank you.") for digital silence with confidence above the
# log-probability threshold, so the no-speech rule alone does not catch it.
SILENCE_RMS_DBFS = -60.0
# With word timestamps, punctuation that belongs to the next word (prepended) or to the previous
# one (appended): Whisper's and faster-whisper's defaults
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass
class TranscribeOptions:
    language: Optional[str] = None  # None: detected per file on its first decoded window
    task: str = "transcribe"
    temperatures: Sequence[float] = TEMPERATURES
    beam_size: Optional[int] = None
    # at a temperature above 0, this many samples of a window, the best ranked kept (Whisper's 5)
    best_of: int = 5
    patience: float = 1.0
    length_penalty: Optional[float] = None
    compression_ratio_threshold: Optional[float] = COMPRESSION_RATIO_THRESHOLD
    logprob_threshold: Optional[float] = LOGPROB_THRESHOLD
    no_speech_threshold: Optional[float] = NO_SPEECH_THRESHOLD
    condition_on_previous_text: bool = False
    initial_prompt: Optional[str] = None
    without_timestamps: bool = False
    batch_size: int = 8
    silence_rms_dbfs: Optional[float] = SILENCE_RMS_DBFS  # None: decode every window
    suppress_tokens: Sequence[int] = ()
    # None: at most half the text context per window (Whisper's cap); a rate: at most
    # MIN_SAMPLE_LEN (asr.inference.transcribe) + rate x the batch's longest window in seconds, so a loop ends with the audio
    max_tokens_per_second: Optional[float] = None
    seed: int = 0  # sampling at temperature > 0 is seeded per window from this: reruns agree
    # > 0: joint CTC/attention decoding (models saved with a CTC head; without timestamps)
    ctc_weight: float = 0.0
    # each segment gets "words" with their own times (asr.inference.word_timing)
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
