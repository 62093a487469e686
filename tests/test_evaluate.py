"""asr.evaluate without a model: bootstrap statistics on cases with known answers, shards,
the hypothesis cap, and the runner + report on a scripted system (bad audio, resume, compare).
The scripted system below answers by utterance length; counts are checked against an
independent edit distance, never against the code's own output."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
from scipy import stats as scipy_stats

from asr.data.manifest import Utterance, write_manifest
from asr.evaluate import compare as compare_mod
from asr.evaluate import runner
from asr.evaluate.datasets import Dataset, DatasetError, load_dataset
from asr.evaluate.report import TIMING_KEYS, read_rows
from asr.evaluate.runner import cap_hypothesis, evaluate, shard
from asr.evaluate.stats import bootstrap_interval, paired_bootstrap
from asr.text.normalize import get_normalizer

from test_normalize import levenshtein_ops

SAMPLE_RATE = 16000

# ---------------------------------------------------------------------------- statistics


def test_bootstrap_interval_of_constant_rate_is_that_rate():
    interval = bootstrap_interval([1] * 50, [10] * 50)
    assert interval == (pytest.approx(0.1), pytest.approx(0.1))


def test_bootstrap_interval_matches_binomial_quantiles():
    # one word per utterance, k of n wrong: a resample's WER is Binomial(n, k/n) / n
    n, k = 200, 30
    errors = [1] * k + [0] * (n - k)
    low, high = bootstrap_interval(errors, [1] * n, samples=20000)
    expected_low = scipy_stats.binom.ppf(0.025, n, k / n) / n
    expected_high = scipy_stats.binom.ppf(0.975, n, k / n) / n
    assert abs(low - expected_low) <= 1.5 / n
    assert abs(high - expected_high) <= 1.5 / n


def test_paired_bootstrap_known_probability():
    # systems equal everywhere but one utterance where A is right and B wrong: A is better
    # exactly when a resample draws that utterance, P = 1 - (1 - 1/n)^n
    n = 20
    a, b = [0] * n, [0] * (n - 1) + [1]
    result = paired_bootstrap(a, b, [5] * n, samples=20000)
    expected = 1 - (1 - 1 / n) ** n
    assert result.a_better == pytest.approx(expected, abs=0.01)
    assert result.b_better == 0.0
    assert result.ties == pytest.approx(1 - expected, abs=0.01)
    assert paired_bootstrap([1, 2], [1, 2], [3, 3]).ties == 1.0


def test_shards_are_balanced_by_duration_and_cover_everything():
    durations = [10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 5.0, 5.0]
    shards = shard(durations, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(durations)))
    loads = [sum(durations[i] for i in s) for s in shards]
    assert abs(loads[0] - loads[1]) <= max(durations) and loads == [22.0, 21.0]
    assert shard(durations, 1) == [list(range(len(durations)))]


def test_cap_ties_hypothesis_length_to_audio_length():
    loop = " ".join(["the"] * 500)
    capped, was_capped = cap_hypothesis(loop, duration=2.0)
    assert was_capped and len(capped.split()) == runner.MIN_WORDS_ALLOWED + math.ceil(runner.MAX_WORDS_PER_SECOND * 2)
    assert cap_hypothesis("a normal sentence of words", 2.0) == ("a normal sentence of words", False)


# ---------------------------------------------------------------------------- a scripted system


REFERENCES = ["the cat sat on the mat", "go forward ten meters", "hello world", "", "one two three four five"]
HYPOTHESES = ["the cat sat on a mat", "go forward 10 meters", "hello", "an insertion", "one two three four five"]


class ScriptedSystem:
    """Answers with a fixed text per audio length (each test clip has its own length)."""

    name = "scripted"
    batched = False

    def __init__(self, answers: dict, fail_after: int | None = None):
        self.answers, self.calls, self.fail_after = answers, 0, fail_after

    def settings(self) -> dict:
        return {"system": self.name, "model": "none", "decoding": {}, "dtype": "none"}

    def transcribe(self, audios):
        for i, audio in enumerate(audios):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt
            self.calls += 1
            yield i, self.answers[len(audio)]


@pytest.fixture
def corpus(tmp_path):
    """A manifest of five clips (distinct lengths) and the scripted answers, plus a missing file."""
    utterances, answers = [], {}
    for i, (ref, hyp) in enumerate(zip(REFERENCES, HYPOTHESES)):
        n = SAMPLE_RATE // 2 + 1000 * i
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, (0.1 * np.sin(np.arange(n) / 7)).astype(np.float32), SAMPLE_RATE)
        utterances.append(Utterance(f"u{i}", str(path), ref, n / SAMPLE_RATE, speaker=f"s{i % 2}", group="g"))
        answers[n] = hyp
    utterances.append(Utterance("missing", str(tmp_path / "gone.wav"), "never heard", 1.0, group="g"))
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    utterances.append(Utterance("broken", str(tmp_path / "broken.wav"), "never heard", 1.0, group="g"))
    manifest = tmp_path / "set.jsonl"
    write_manifest(manifest, utterances)
    return manifest, answers


def _run(manifest, answers, out, **kwargs):
    system = kwargs.pop("system", None) or ScriptedSystem(answers)
    dataset = load_dataset(str(manifest), out / "data")
    report = evaluate(system, [dataset], get_normalizer("basic"), out, progress=False, log=lambda m: None, **kwargs)
    return report, system


def test_report_counts_bad_audio_and_files(corpus, tmp_path):
    manifest, answers = corpus
    out = tmp_path / "report"
    report, _ = _run(manifest, answers, out)
    summary = report.datasets[0]
    normalize = get_normalizer("basic")
    refs = [normalize(r).split() for r in REFERENCES]
    hyps = [normalize(h).split() for h in HYPOTHESES]
    assert summary.words.errors == sum(levenshtein_ops(r, h) for r, h in zip(refs, hyps))
    assert summary.words.reference_length == sum(len(r) for r in refs)
    assert summary.words.insertions >= 2  # "an insertion" against the empty reference
    assert summary.utterances == 5 and summary.sentence_errors == 3
    assert sorted(r["id"] for r in summary.bad) == ["broken", "missing"]
    assert all(r["error"] for r in summary.bad)
    for name in ("utterances.jsonl", "summary.json", "summary.md", "errs-set.txt", "wer_by_group.png",
                 "wer_by_duration.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "wer_by_group.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    errs = (out / "errs-set.txt").read_text()
    assert "u0:\tthe cat sat on (the->a) mat" in errs
    assert "1   the -> a" in errs and "missing:\tEXCLUDED (file not found)" in errs
    saved = json.loads((out / "summary.json").read_text())
    assert saved["datasets"][0]["bad_audio"] == 2
    assert {b["id"] for b in saved["bad_audio"]} == {"missing", "broken"}
    md = (out / "summary.md").read_text()
    assert "Excluded: 2 utterance(s)" in md and "### By speaker" in md


def test_resume_decodes_only_what_is_missing(corpus, tmp_path, monkeypatch):
    manifest, answers = corpus
    monkeypatch.setattr(runner, "CHUNK_UTTERANCES", 1)  # rows are kept chunk by chunk
    full, _ = _run(manifest, answers, tmp_path / "full")
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        # warm-up takes one call, then two utterances are decoded before the interrupt
        _run(manifest, answers, out, system=ScriptedSystem(answers, fail_after=3))
    resumed_system = ScriptedSystem(answers)
    resumed, _ = _run(manifest, answers, out, resume=True, system=resumed_system)
    assert resumed_system.calls == 1 + (5 - 2)  # warm-up + the three missing clips
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    assert strip(read_rows(out / "utterances.jsonl")) == strip(read_rows(tmp_path / "full" / "utterances.jsonl"))
    assert not list((out / ".partial").glob("*.jsonl"))
    assert resumed.datasets[0].words == full.datasets[0].words


def test_resume_refuses_other_settings(corpus, tmp_path):
    manifest, answers = corpus
    out = tmp_path / "r"
    _run(manifest, answers, out)
    other = ScriptedSystem(answers)
    other.name = "another"
    with pytest.raises(runner.EvaluationError, match="other settings.*system"):
        _run(manifest, answers, out, resume=True, system=other)


def test_compare_refuses_different_utterance_sets(corpus, tmp_path):
    manifest, answers = corpus
    _run(manifest, answers, tmp_path / "a")
    _run(manifest, answers, tmp_path / "b", limit=3)
    with pytest.raises(compare_mod.CompareError, match="not the same utterances"):
        compare_mod.compare([tmp_path / "a", tmp_path / "b"])


def test_compare_pairs_systems(corpus, tmp_path):
    manifest, answers = corpus
    better = {n: REFERENCES[i] for i, n in enumerate(sorted(answers))}  # right every time
    _run(manifest, answers, tmp_path / "a")
    _run(manifest, answers, tmp_path / "b", system=ScriptedSystem(better))
    c = compare_mod.compare([tmp_path / "a", tmp_path / "b"])
    assert [r.name for r in c.runs] == ["scripted", "scripted (b)"]
    assert len(c.excluded) == 2  # the unreadable clips, left out of both
    [all_pair] = c.pairs  # one dataset: no pooled row
    assert all_pair[4] > 0.95  # B (all correct) is better in nearly every resample
    assert c.summaries["scripted (b)"]["set"].wer == 0.0
    compare_mod.write(c, tmp_path / "cmp")
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "P(A better)" in (tmp_path / "cmp" / "compare.md").read_text()


def test_missing_librispeech_preset_names_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("ASR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("ASR_LIBRISPEECH", raising=False)
    with pytest.raises(DatasetError, match=r"librispeech-test-other: .*test-other\.tar\.gz"):
        load_dataset("librispeech-test-other", tmp_path)


def test_librispeech_preset_reads_local_copy(tmp_path, monkeypatch):
    chapter = tmp_path / "LibriSpeech" / "test-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    sf.write(chapter / "84-121123-0000.flac", np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n")
    monkeypatch.setenv("ASR_DATA_DIR", str(tmp_path))
    dataset = load_dataset("librispeech-test-clean", tmp_path / "work")
    assert dataset.name == "librispeech-test-clean"
    [u] = dataset.utterances
    assert (u.id, u.text, u.speaker, u.group) == ("84-121123-0000", "GO DO YOU HEAR", "84", "test-clean")


def test_datasets_from_plain_sources_get_distinct_names(corpus, tmp_path):
    manifest, _ = corpus
    from asr.evaluate.datasets import load_datasets

    names = [d.name for d in load_datasets([str(manifest), str(manifest)], tmp_path)]
    assert names == ["set", "set-2"]
    assert isinstance(load_datasets([str(manifest)], tmp_path)[0], Dataset)


def test_local_hugging_face_dataset_is_decoded_by_our_loader(tmp_path):
    datasets = pytest.importorskip("datasets")
    clips = []
    for i, seconds in enumerate((0.5, 0.75)):
        path = tmp_path / f"hf{i}.wav"
        sf.write(path, np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32), SAMPLE_RATE)
        clips.append(str(path))
    table = datasets.Dataset.from_dict({"audio": clips, "text": ["one", "two"], "id": ["x", "y"]})
    table = table.cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "hf"))
    dataset = load_dataset(str(tmp_path / "hf"), tmp_path / "work", split="test")
    assert dataset.name == "hf-test"
    assert [(u.id, u.text, u.group) for u in dataset.utterances] == [("x", "one", "test"), ("y", "two", "test")]
    lengths = [sf.info(u.audio).frames for u in dataset.utterances]
    assert lengths == [SAMPLE_RATE // 2, 3 * SAMPLE_RATE // 4]


def test_mean_over_datasets_is_unweighted(corpus, tmp_path):
    manifest, answers = corpus
    from asr.data.manifest import read_manifest
    from asr.evaluate.datasets import load_datasets
    from asr.evaluate.report import printed_summary

    utterances = read_manifest(manifest)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    write_manifest(first, utterances[:2])  # 10 reference words
    write_manifest(second, utterances[2:5])  # 7 reference words (one empty reference)
    datasets = load_datasets([str(first), str(second)], tmp_path / "work")
    report = evaluate(ScriptedSystem(answers), datasets, get_normalizer("basic"), tmp_path / "out", progress=False)
    normalize = get_normalizer("basic")

    def wer(pairs):
        errors = sum(levenshtein_ops(normalize(r).split(), normalize(h).split()) for r, h in pairs)
        return errors / sum(len(normalize(r).split()) for r, _ in pairs)

    pairs = list(zip(REFERENCES, HYPOTHESES))
    expected = (wer(pairs[:2]) + wer(pairs[2:5])) / 2
    assert report.mean["wer"] == pytest.approx(expected)
    assert expected != pytest.approx(wer(pairs[:5]))  # a pooled WER would differ
    assert "mean (unweighted)" in printed_summary(report)
