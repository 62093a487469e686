"""The dataset card: what is in each split, computed from the written manifests.

``card.json`` is for programs (and the tests, which recompute it from the manifests);
``CARD.md`` says the same for people. Everything is derived from the manifests and
the per-utterance synthesis records, never from the plan, so the card describes what
is on disk.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

SECONDS_PER_HOUR = 3600.0


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_stats(rows: list[dict], synthesis: list[dict]) -> dict:
    durations = [r["duration"] for r in rows]
    texts = [r["text"] for r in rows]
    words = [w for t in texts for w in t.split()]
    engines = Counter(s["engine"] for s in synthesis)
    sources = Counter(s["source"] for s in synthesis)
    return {
        "utterances": len(rows),
        "hours": round(sum(durations) / SECONDS_PER_HOUR, 4),
        "seconds": round(sum(durations), 3),
        "duration_s": {
            "min": round(min(durations), 3) if durations else 0.0,
            "mean": round(sum(durations) / len(durations), 3) if durations else 0.0,
            "max": round(max(durations), 3) if durations else 0.0,
        },
        "words": len(words),
        "vocabulary_size": len(set(words)),
        "unique_sentences": len(set(texts)),
        "voices": sorted({r["speaker"] for r in rows}),
        "n_voices": len({r["speaker"] for r in rows}),
        "utterances_by_engine": dict(sorted(engines.items())),
        "utterances_by_text_source": dict(sorted(sources.items())),
    }


def oov(train_vocabulary: set[str], rows: list[dict]) -> dict:
    """Out-of-vocabulary words of a split with respect to the training transcripts."""
    words = [w for r in rows for w in r["text"].split()]
    unseen = [w for w in words if w not in train_vocabulary]
    return {
        "oov_rate": round(len(unseen) / len(words), 4) if words else 0.0,  # share of running words
        "oov_words": len(unseen),
        "oov_types": len(set(unseen)),
    }


def build_card(out_dir: Path, splits: list[str], build: dict) -> dict:
    out_dir = Path(out_dir)
    rows = {s: _read_jsonl(out_dir / f"{s}.jsonl") for s in splits}
    synthesis = {s: _read_jsonl(out_dir / "synthesis" / f"{s}.jsonl") for s in splits}
    card = {"splits": {s: split_stats(rows[s], synthesis[s]) for s in splits}, "build": build}
    train_vocabulary = {w for r in rows.get("train", []) for w in r["text"].split()}
    train_texts = {r["text"] for r in rows.get("train", [])}
    train_voices = {r["speaker"] for r in rows.get("train", [])}
    for s in splits:
        stats = card["splits"][s]
        if s != "train":
            stats.update(oov(train_vocabulary, rows[s]))
            stats["sentences_also_in_train"] = len({r["text"] for r in rows[s]} & train_texts)
            stats["voices_also_in_train"] = len(set(stats["voices"]) & train_voices)
    card["total"] = {
        "hours": round(sum(card["splits"][s]["hours"] for s in splits), 4),
        "utterances": sum(card["splits"][s]["utterances"] for s in splits),
        "voices": len({v for s in splits for v in card["splits"][s]["voices"]}),
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / "CARD.md").write_text(card_markdown(card, splits))
    return card


def card_markdown(card: dict, splits: list[str]) -> str:
    build = card["build"]
    lines = [
        "# synth_en: synthetic English speech",
        "",
        "Built offline with Debian's speech synthesisers (espeak-ng, flite, festival) reading",
        "sentences from Debian's `fortunes` (normalised to speakable lower-case words) and, once",
        "those run out, a generative grammar. 16 kHz mono 16-bit FLAC. Transcripts are exactly",
        "the words the synthesiser was given: lower case, letters and apostrophes.",
        "",
        f"Built with seed {build['seed']} on {build['workers']} worker processes in "
        f"{build['wall_seconds']:.0f} s ({build['audio_seconds_per_wall_second']:.0f} s of audio per second).",
        "",
        "| split | hours | utterances | voices | unique sentences | vocabulary | OOV vs train | sentences in train | voices in train |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in splits:
        st = card["splits"][s]
        oov_rate = f"{100 * st['oov_rate']:.2f}%" if "oov_rate" in st else "-"
        lines.append(
            f"| {s} | {st['hours']:.3f} | {st['utterances']} | {st['n_voices']} | {st['unique_sentences']} "
            f"| {st['vocabulary_size']} | {oov_rate} | {st.get('sentences_also_in_train', '-')} "
            f"| {st.get('voices_also_in_train', '-')} |"
        )
    total = card["total"]
    lines += [
        f"| total | {total['hours']:.3f} | {total['utterances']} | {total['voices']} | | | | | |",
        "",
        "Splits: `dev` and `test-seen-voice` use voices that also speak in `train`;",
        "`test-unseen-voice` only voices that never occur in `train`. The sentences of `dev` and of",
        "the two test splits (which share theirs) never occur in `train`.",
        "",
        "## Per split",
        "",
    ]
    for s in splits:
        st = card["splits"][s]
        lines += [
            f"### {s}",
            "",
            f"- duration per utterance: min {st['duration_s']['min']} s, mean {st['duration_s']['mean']} s, "
            f"max {st['duration_s']['max']} s",
            f"- utterances by engine: {st['utterances_by_engine']}",
            f"- utterances by text source: {st['utterances_by_text_source']}",
            f"- voices ({st['n_voices']}): {', '.join(st['voices'][:40])}{' ...' if st['n_voices'] > 40 else ''}",
            "",
        ]
    lines += ["## Tools", ""] + [f"- {k}: {v}" for k, v in build.get("engine_versions", {}).items()]
    lines += ["", f"Command: `{build['command']}`", ""]
    return "\n".join(lines)
