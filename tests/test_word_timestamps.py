"""Word-level timestamps (asr.inference.word_timing) against independent references: a plain
double-loop DTW, scipy's median filter, and faster-whisper itself (its tokenizer's word split, its
punctuation merge, and its word timings with the same tiny.en weights, which must come out the
same to the 10 ms they are rounded to)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from asr.inference.word_timing import (APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS, dtw_path, find_word_timings,
                                       median_filter, merge_punctuations, split_words)
from peer_helpers import comparison_threads, load_builtin
from test_train_resume import REPO

faster_whisper = pytest.importorskip("faster_whisper", reason="faster-whisper is the reference (pip install faster-whisper)")
scipy_ndimage = pytest.importorskip("scipy.ndimage")

AUDIO = REPO / "data" / "audio"


def naive_dtw(cost: np.ndarray) -> tuple[list[int], list[int]]:
    """Whisper's dtw_cpu written as the textbook double loop over cells."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    trace = np.full((n + 1, m + 1), -1)
    total[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            total[i, j] = cost[i - 1, j - 1] + c
            trace[i, j] = t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        i, j = {0: (i - 1, j - 1), 1: (i - 1, j), 2: (i, j - 1)}[int(trace[i, j])]
    path.reverse()
    return [p[0] for p in path], [p[1] for p in path]


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 9), (12, 40), (30, 31)])
def test_dtw_path_equals_the_double_loop(shape):
    rng = np.random.default_rng(sum(shape))
    for cost in (rng.normal(size=shape), rng.integers(0, 3, size=shape).astype(float)):  # integers: many ties
        rows, columns = dtw_path(cost)
        expected_rows, expected_columns = naive_dtw(cost)
        assert rows.tolist() == expected_rows and columns.tolist() == expected_columns


@pytest.mark.parametrize("width", [3, 7])
def test_median_filter_equals_scipy_with_mirrored_edges(width):
    x = np.random.default_rng(width).normal(size=(3, 4, 50))
    expected = scipy_ndimage.median_filter(x, size=(1, 1, width), mode="mirror")
    np.testing.assert_allclose(median_filter(x, width), expected, rtol=0, atol=0)
    short = x[..., :2]  # shorter than half the width: unchanged, as in Whisper
    assert np.array_equal(median_filter(short, 7), short)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_builtin("tiny.en", tmp_path_factory.mktemp("asr-cache"))


@pytest.fixture(scope="module")
def tiny32(tiny):
    """The same checkpoint in float32, as the faster-whisper reference runs."""
    import asr

    return asr.load_model(tiny.path, device="cpu", quiet=True, compute_type="float32")


@pytest.fixture(scope="module")
def reference():
    import asr.convert

    return faster_whisper.WhisperModel(str(asr.convert.bundled_model_dir()), device="cpu", compute_type="float32",
                                       cpu_threads=comparison_threads())


TEXTS = [" Go forward 10 meters.", " \"Hello,\" she said (quietly) -- and left!", " Café naïve façade, Zürich.",
         " 日本語 and emoji 🎉 mixed.", " It's 3:45 p.m.; don't wait..."]


@pytest.mark.parametrize("text", TEXTS)
def test_split_words_equals_faster_whispers(tiny, reference, text):
    from faster_whisper.tokenizer import Tokenizer as FWTokenizer

    fw = FWTokenizer(reference.hf_tokenizer, multilingual=False)
    tokens = tiny.tokenizer.encode(text) + [tiny.tokenizer.eot]
    assert tokens == fw.encode(text) + [fw.eot]
    words, word_tokens = split_words(tiny.tokenizer, tokens, "en")
    expected_words, expected_tokens = fw.split_to_word_tokens(tokens)
    # the last word is <|endoftext|> alone, spelt "" by faster-whisper and "<|endoftext|>" by
    # Whisper (and here); it never reaches a segment
    assert word_tokens == expected_tokens and word_tokens[-1] == [fw.eot]
    assert words[:-1] == expected_words[:-1]


def test_merge_punctuations_equals_faster_whispers():
    from faster_whisper.transcribe import merge_punctuations as fw_merge

    rng = np.random.default_rng(0)
    pieces = [" the", " cat", ",", ".", " \"", "\"", " (", ")", "!", " -", "s", " ¿", "?", ""]
    for _ in range(200):
        words = [{"word": str(rng.choice(pieces)), "tokens": [int(t)]} for t in range(rng.integers(1, 9))]
        ours, theirs = copy.deepcopy(words), copy.deepcopy(words)
        merge_punctuations(ours, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
        fw_merge(theirs, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
        assert ours == theirs, words


def long_recording(path):
    """The sample clips twice over with half a second between them (62 s): several windows."""
    import soundfile as sf

    from asr.audio import load_audio

    parts = []
    for clip in sorted(AUDIO.glob("*.flac")) * 2:
        parts += [load_audio(clip), np.zeros(8000, np.float32)]
    sf.write(path, np.concatenate(parts), 16000)
    return path


@pytest.mark.parametrize("name, beam", [("goforward.flac", 1), ("librivox-0870.flac", 5), ("long", 1)])
def test_word_timings_equal_faster_whispers(tiny, tiny32, reference, tmp_path, name, beam):
    """Same words, same times (rounded to 10 ms as both round them), same probabilities to 1e-3,
    and the same segment bounds after the words have moved them; "long" spans several windows,
    where the next window starts at the last word's end. The default compute type gives the same
    words and times; its probabilities differ a little (the shortlist computes most of the
    vocabulary's logits, the softmax's denominator, in int8)."""
    path = long_recording(tmp_path / "long.wav") if name == "long" else AUDIO / name
    options = dict(word_timestamps=True, temperature=0.0, beam_size=beam if beam > 1 else None)
    ours = tiny32.transcribe(str(path), **options)
    auto = tiny.transcribe(str(path), **options)
    assert [[(w["word"], w["start"], w["end"]) for w in s["words"]] for s in auto["segments"]] == \
        [[(w["word"], w["start"], w["end"]) for w in s["words"]] for s in ours["segments"]]
    for auto_segment, segment in zip(auto["segments"], ours["segments"]):
        for auto_word, word in zip(auto_segment["words"], segment["words"]):
            assert auto_word["probability"] == pytest.approx(word["probability"], abs=0.05)
    segments, _ = reference.transcribe(str(path), language="en", beam_size=beam, best_of=1, temperature=0.0,
                                       condition_on_previous_text=False, vad_filter=False, word_timestamps=True)
    theirs = list(segments)
    assert [s["text"] for s in ours["segments"]] == [s.text for s in theirs]
    for segment, expected in zip(ours["segments"], theirs):
        assert segment["start"] == pytest.approx(expected.start, abs=0.011)
        assert segment["end"] == pytest.approx(expected.end, abs=0.011)
        assert [w["word"] for w in segment["words"]] == [w.word for w in expected.words]
        for word, expected_word in zip(segment["words"], expected.words):
            assert (word["start"], word["end"]) == pytest.approx((expected_word.start, expected_word.end), abs=0.011)
            assert word["probability"] == pytest.approx(expected_word.probability, abs=1e-3)


def test_default_heads_and_sentencepiece_words(tmp_path):
    """A model trained here has no alignment heads (every head of the second half of the
    decoder's layers is used) and a SentencePiece vocabulary: the words still spell the text,
    their times run forward inside the window."""
    import torch

    from asr.config import ModelDimensions
    from asr.nn.model import ASRModel
    from asr.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(["the quick brown fox jumps over the lazy dog"] * 50, vocab_size=300)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=50, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=tokenizer.n_vocab, n_text_ctx=64, n_text_state=32, n_text_head=2, n_text_layer=2)
    torch.manual_seed(0)
    model = ASRModel(dims).eval()
    assert model.alignment_heads is None
    audio, _ = model.embed_audio(torch.randn(1, 80, 100))
    text = "the quick brown fox"  # as a model trained here writes it: "▁the▁quick..." in characters
    words = find_word_timings(model, tokenizer, tokenizer.sot_sequence("en", "transcribe"), tokenizer.encode(text),
                              audio, n_frames=100, language="en")
    assert "".join(w["word"] for w in words) == text
    assert [w["word"].strip() for w in words] == text.split()
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["start"] <= w["end"] <= 1.0 for w in words)


def test_batched_word_timestamps_agree_with_sequential(tiny, tmp_path):
    """--batched decodes chunks cut at pauses (its text can differ from the sequential windows'):
    its words spell its segments, run forward in file time, and where both modes wrote the same
    word near the same place they timed it alike."""
    path = str(long_recording(tmp_path / "long.wav"))
    batched = tiny.transcribe_many([path], batched=True, word_timestamps=True, temperature=0.0)[0]
    sequential = tiny.transcribe(path, word_timestamps=True, temperature=0.0)
    for segment in batched["segments"]:
        assert "".join(w["word"] for w in segment["words"]) == segment["text"]
    words = [w for s in batched["segments"] for w in s["words"]]
    assert all(w["start"] <= w["end"] for w in words)
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))
    assert words[-1]["end"] <= batched["duration"]
    reference = [w for s in sequential["segments"] for w in s["words"]]
    matched = [min(abs(w["start"] - r["start"]) for r in reference if r["word"].lower() == w["word"].lower())
               for w in words if any(r["word"].lower() == w["word"].lower() for r in reference)]
    assert len(matched) >= 0.7 * len(words)
    assert np.median(matched) <= 0.05 and np.mean(np.array(matched) <= 0.1) >= 0.8


def test_cli_word_timestamps_in_json(tmp_path):
    run = [sys.executable, "-m", "asr", "transcribe", str(AUDIO / "goforward.flac"), "--word-timestamps", "--quiet"]
    result = subprocess.run([*run, "-f", "json", "-o", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    segments = json.loads((tmp_path / "goforward.json").read_text())["segments"]
    words = [w for s in segments for w in s["words"]]
    assert "".join(w["word"] for w in words).strip() == "".join(s["text"] for s in segments).strip()
    assert set(words[0]) == {"word", "start", "end", "probability"}
