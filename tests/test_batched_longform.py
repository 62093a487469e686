"""Batched long-form: one file's windows cut at pauses and decoded together. Segment times must
stay those of the recording (the sentence times of test_transcribe's long recording are known
exactly), the words must be as good as the sequential path's, and the cuts must fall in pauses."""
import jiwer
import numpy as np
import pytest

from asr.audio import SAMPLE_RATE
from asr.cli.main import main as cli_main
from asr.inference.batched import plan_chunks
from asr.text.normalize import basic_normalize
from test_transcribe import SENTENCES, cache, long_recording, model  # noqa: F401 (session fixtures)

WINDOW_SAMPLES = 30 * SAMPLE_RATE


def check_sentence_times(result, bounds):
    """The assertions of test_transcribe.test_long_form_segments_follow_sentence_times."""
    starts = [s["start"] for s in result["segments"]]
    ends = [s["end"] for s in result["segments"]]
    for start, end in bounds:
        assert min(abs(s - start) for s in starts) <= 0.5, (start, starts)
        assert min(abs(e - end) for e in ends) <= 0.5, (end, ends)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(result["segments"], result["segments"][1:]))
    words = result["text"].lower()
    assert "harbo" in words and "lighthouse" in words and "sailed home" in words


@pytest.mark.parametrize("beam_size", [None, 5])
def test_batched_long_form_segments_follow_sentence_times(model, long_recording, beam_size):
    path, bounds = long_recording
    result = model.transcribe(str(path), batched=True, beam_size=beam_size, temperature=0.0)
    assert result["duration"] > 30  # more than one window: several chunks in one batch
    check_sentence_times(result, bounds)


def test_batched_words_are_as_good_as_sequential(model, long_recording):
    """Scored against the sentences spoken (jiwer, basic normalisation), batched decoding may
    miss at most one word more than sequential decoding of the same 106 words (the issue asks
    for no more than 0.5 points worse on the long-form benchmark; one word here is 0.9). Both
    differ from each other by a few near-ties of the same sounds (book / welcome, furried /
    buried), so their disagreement with each other says less than their errors do."""
    path, _ = long_recording
    reference = basic_normalize(" ".join(SENTENCES))
    sequential = basic_normalize(model.transcribe(str(path), temperature=0.0)["text"])
    batched = basic_normalize(model.transcribe(str(path), batched=True, temperature=0.0)["text"])
    errors = {name: jiwer.process_words(reference, text) for name, text in
              (("sequential", sequential), ("batched", batched))}
    missed = {name: e.substitutions + e.deletions + e.insertions for name, e in errors.items()}
    assert missed["batched"] <= missed["sequential"] + 1, (missed, sequential, batched)
    assert errors["sequential"].wer <= 0.12 and errors["batched"].wer <= 0.12, (sequential, batched)


def bursts(spans, total_s, seed=0):
    """Noise bursts (speech stand-ins) at the given (start, end) seconds in silence with faint
    noise; returns the samples."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, 1e-4, int(total_s * SAMPLE_RATE)).astype(np.float32)
    for start, end in spans:
        a, b = int(start * SAMPLE_RATE), int(end * SAMPLE_RATE)
        audio[a:b] += rng.normal(0, 0.1, b - a).astype(np.float32)
    return audio


def test_chunks_are_cut_in_pauses_and_cover_the_speech():
    # 4 s bursts with 0.6 s pauses: 90 s in all, so several cuts are needed
    spans, t = [], 0.5
    while t + 4 < 90:
        spans.append((t, t + 4))
        t += 4.6
    audio = bursts(spans, 90)
    chunks = plan_chunks(audio, WINDOW_SAMPLES)
    assert len(chunks) >= 3
    for c in chunks:
        assert 0 < c.stop - c.start <= WINDOW_SAMPLES
    for a, b in zip(chunks, chunks[1:]):
        assert a.stop == b.start  # contiguous: times map by adding the chunk's start
        cut = a.stop / SAMPLE_RATE
        assert not any(start < cut < end for start, end in spans), cut  # never inside a burst
    # the pause taken is the furthest that fits: no chunk could have taken one more burst
    for c in chunks[:-1]:
        assert c.stop - c.start > WINDOW_SAMPLES - 4.6 * SAMPLE_RATE


def test_silent_stretches_are_not_decoded_and_hard_cut_without_pauses():
    audio = bursts([(40.0, 45.0)], 100)  # 40 s of silence, 5 s of sound, 55 s of silence
    chunks = plan_chunks(audio, WINDOW_SAMPLES)
    assert len(chunks) == 1 and chunks[0].start <= 40 * SAMPLE_RATE and chunks[0].stop >= 45 * SAMPLE_RATE
    # no pause at all: cut at the window length
    chunks = plan_chunks(bursts([(0.0, 70.0)], 70), WINDOW_SAMPLES)
    assert [c.stop - c.start for c in chunks] == [WINDOW_SAMPLES, WINDOW_SAMPLES, 10 * SAMPLE_RATE]


def test_batched_refuses_conditioning_on_previous_text(model, long_recording, capsys):
    path, _ = long_recording
    with pytest.raises(ValueError, match="cannot condition on previous text"):
        model.transcribe(str(path), batched=True, condition_on_previous_text=True)
    status = cli_main(["transcribe", str(path), "--batched", "--condition-on-previous-text", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1 and "previous text" in err


def test_short_files_are_batched_side_by_side_and_decode_as_alone(model):
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "data" / "audio"
    paths = [str(data / "librivox-0880.flac"), str(data / "goforward.flac"), str(data / "alsa-rear-left.flac")]
    silence = np.zeros(3 * SAMPLE_RATE, np.float32)
    batched = model.transcribe_many(paths + [silence], batched=True, batch_size=3, temperature=0.0)
    for path, result in zip(paths, batched):
        alone = model.transcribe(path, temperature=0.0)  # sequential path, one window each
        assert [s["tokens"] for s in result["segments"]] == [s["tokens"] for s in alone["segments"]]
    assert batched[3]["text"] == "" and batched[3]["segments"] == []
