"""recipes/synth_en end to end at a tiny size, plus its text normaliser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.data.manifest import read_manifest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "synth_en"
SPLITS = ("train", "dev", "test-seen-voice", "test-unseen-voice")
TINY_HOURS = "0.01"  # 36 s: about a dozen training clips plus a few per evaluation split
SEED = "7"

sys.path.insert(0, str(RECIPE))
import synth_text  # noqa: E402

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)


def build(out: Path, workers: int, *extra: str) -> None:
    command = [sys.executable, str(RECIPE / "prepare.py"), "--out", str(out), "--hours", TINY_HOURS,
               "--seed", SEED, "--workers", str(workers), "--no-install", *extra]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_en")
    build(out, workers=2)
    return out


def manifest_rows(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


@needs_espeak
def test_manifests_parse_and_audio_is_16k_mono_flac(corpus):
    seen_ids = set()
    for split in SPLITS:
        utterances = read_manifest(corpus / f"{split}.jsonl")
        assert len(utterances) >= 3, split  # min_utterances_per_split
        for u in utterances:
            assert u.id not in seen_ids
            seen_ids.add(u.id)
            assert u.group == "synthetic" and u.speaker
            assert re.fullmatch(r"[a-z']+( [a-z']+)*", u.text), u.text
            assert 3 <= len(u.text.split()) <= 25
            info = sf.info(str(u.audio_path))
            assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
            assert info.frames / 16000 == pytest.approx(u.duration, abs=1e-3)
            audio, _ = sf.read(str(u.audio_path))
            assert 0.05 < np.abs(audio).max() <= 1.0  # speech, not silence, not clipped
    # nothing on disk that the manifests do not list
    on_disk = {p.stem for split in SPLITS for p in (corpus / split).glob("*.flac")}
    assert on_disk == seen_ids


@needs_espeak
def test_splits_disjoint_in_sentences_and_unseen_voices(corpus):
    rows = {s: manifest_rows(corpus, s) for s in SPLITS}
    train_texts = [r["text"] for r in rows["train"]]
    assert len(set(train_texts)) == len(train_texts), "every training utterance has its own sentence"
    for split in ("dev", "test-seen-voice", "test-unseen-voice"):
        assert not {r["text"] for r in rows[split]} & set(train_texts), split
    assert not {r["text"] for r in rows["dev"]} & {r["text"] for r in rows["test-seen-voice"]}

    config = json.loads((RECIPE / "config.json").read_text())
    unseen_variants = set(config["espeak-ng"]["unseen_variants"])
    unseen_whole = set(config["flite"]["unseen_voices"]) | set(config["festival"]["unseen_voices"])

    def is_unseen(speaker: str) -> bool:
        engine, voice = speaker.split(":", 1)
        if engine == "espeak-ng":
            return "+" in voice and voice.split("+", 1)[1] in unseen_variants
        return voice in unseen_whole

    for split in ("train", "dev", "test-seen-voice"):
        assert not any(is_unseen(r["speaker"]) for r in rows[split]), split
    assert all(is_unseen(r["speaker"]) for r in rows["test-unseen-voice"])
    train_voices = {r["speaker"] for r in rows["train"]}
    assert not {r["speaker"] for r in rows["test-unseen-voice"]} & train_voices


@needs_espeak
def test_card_matches_the_manifests(corpus):
    card = json.loads((corpus / "card.json").read_text())
    assert (corpus / "CARD.md").read_text().startswith("# synth_en")
    rows = {s: manifest_rows(corpus, s) for s in SPLITS}
    train_vocabulary = {w for r in rows["train"] for w in r["text"].split()}
    for split in SPLITS:
        stats = card["splits"][split]
        assert stats["utterances"] == len(rows[split])
        assert stats["hours"] == pytest.approx(sum(r["duration"] for r in rows[split]) / 3600, abs=1e-4)
        assert stats["voices"] == sorted({r["speaker"] for r in rows[split]})
        words = [w for r in rows[split] for w in r["text"].split()]
        assert stats["vocabulary_size"] == len(set(words))
        if split != "train":
            oov = sum(w not in train_vocabulary for w in words) / len(words)
            assert stats["oov_rate"] == pytest.approx(oov, abs=1e-4)
            assert stats["sentences_also_in_train"] == 0
    assert card["total"]["utterances"] == sum(len(r) for r in rows.values())
    assert card["splits"]["test-unseen-voice"]["voices_also_in_train"] == 0
    # the requested size is reached (the minimum per split can only add)
    assert card["total"]["hours"] >= float(TINY_HOURS)


@needs_espeak
def test_build_is_deterministic_whatever_the_worker_count(corpus, tmp_path):
    build(tmp_path, workers=1)
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_text() == (corpus / f"{split}.jsonl").read_text()
    for row in manifest_rows(corpus, "train")[:5]:
        a, _ = sf.read(str(corpus / row["audio"]))
        b, _ = sf.read(str(tmp_path / row["audio"]))
        assert np.array_equal(a, b)


@needs_espeak
def test_grammar_only_build_speaks_no_fortune(corpus, tmp_path):
    fortunes = {sentence.text for sentence in synth_text.fortune_sentences()}
    if not fortunes:
        pytest.skip("fortunes are not installed (apt-get install fortunes fortunes-min)")
    default_texts = [row["text"] for split in SPLITS for row in manifest_rows(corpus, split)]
    assert any(text in fortunes for text in default_texts)  # the default build starts with fortunes
    build(tmp_path, 2, "--text", "grammar")
    texts = [row["text"] for split in SPLITS for row in manifest_rows(tmp_path, split)]
    assert texts and not any(text in fortunes for text in texts)
    assert json.loads((tmp_path / "card.json").read_text())["build"]["text"] == "grammar"


# ----------------------------------------------------------------------------- text


def test_number_and_year_words():
    assert synth_text.number_words(0) == "zero"
    assert synth_text.number_words(15) == "fifteen"
    assert synth_text.number_words(40) == "forty"
    assert synth_text.number_words(1234) == "one thousand two hundred thirty four"
    assert synth_text.number_words(2_000_017) == "two million seventeen"
    assert synth_text.year_words(1984) == "nineteen eighty four"
    assert synth_text.year_words(1905) == "nineteen oh five"
    assert synth_text.year_words(1900) == "nineteen hundred"
    assert synth_text.year_words(2007) == "two thousand seven"
    assert synth_text.ordinal_words(21) == "twenty first"
    assert synth_text.ordinal_words(40) == "fortieth"


@pytest.mark.parametrize(
    "raw, text",
    [
        ("He paid $5 for 3 apples in 1984.", "he paid five dollars for three apples in nineteen eighty four"),
        ("It's 50% off -- really?", "it's fifty percent off really"),
        ("\u201cWell,\u201d she said, \u201cI\u2019m sure.\u201d", "well she said i'm sure"),
        ("A well-known caf\u00e9 opened.", "a well known cafe opened"),
        ("I LOVE THIS PLACE!", "i love this place"),
    ],
)
def test_normaliser_expands_what_is_speakable(raw, text):
    sentence = synth_text.normalise_sentence(raw)
    assert sentence is not None and sentence.text == text
    # the synthesiser gets the same words, with punctuation only for prosody
    assert re.sub(r"[,.?!]", "", sentence.spoken).lower() == text


@pytest.mark.parametrize(
    "raw",
    [
        "The IBM PC was fast.",  # acronym: spelled letter by letter
        "See http://example.com now.",  # URL
        "Call 555-1234 today.",  # phone number
        "Hmm, pfft, that is odd.",  # words without vowels
        "Too short.",  # < 3 words
        " ".join(["word"] * 26) + ".",  # > 25 words
        "x = y + 1;",  # code
    ],
)
def test_normaliser_drops_what_is_not(raw):
    assert synth_text.normalise_sentence(raw) is None


def test_sentence_splitting_keeps_abbreviations_inside():
    parts = synth_text.split_sentences("Mr. Smith arrived. Dr. Jones left! Did they meet? Yes.")
    assert parts == ["Mister Smith arrived.", "Doctor Jones left!", "Did they meet?", "Yes."]


def test_grammar_is_seeded_and_varied():
    import itertools

    a = [s.text for s in itertools.islice(synth_text.GrammarSentences(1), 500)]
    b = [s.text for s in itertools.islice(synth_text.GrammarSentences(1), 500)]
    c = [s.text for s in itertools.islice(synth_text.GrammarSentences(2), 500)]
    assert a == b and a != c
    assert len(set(a)) > 490
    assert len({w for t in a for w in t.split()}) > 300
