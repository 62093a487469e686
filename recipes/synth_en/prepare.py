#!/usr/bin/env python3
"""Build synth_en, a synthetic English speech corpus, fully offline. See README.md.

    python recipes/synth_en/prepare.py --out out/synth_en              # default: 20 h
    python recipes/synth_en/prepare.py --out out/synth_en_small --hours 0.5

Writes ``<out>/{train,dev,test-seen-voice,test-unseen-voice}.jsonl`` (our manifest
format), the audio under ``<out>/<split>/``, per-utterance synthesis settings under
``<out>/synthesis/``, and the dataset card ``<out>/CARD.md`` + ``<out>/card.json``.

How the splits are kept apart:
- sentences: every sentence is assigned to one of three groups (train, dev, test) by
  a seeded hash of its text, so dev and test sentences never occur in train; the two
  test splits speak the same test sentences (seen vs unseen voices on equal text);
- voices: voices are split into seen and unseen by the config (whole flite/festival
  voices and espeak-ng variants in every accent); test-unseen-voice uses only unseen
  voices, every other split only seen ones;
- every training utterance gets its own sentence (fortunes first, then the grammar),
  because a decoder trained on repeated sentences memorises them.

Deterministic from the seed: the plan (sentence, voice, rate, pitch per utterance)
is drawn sequentially before any audio is made, the synthesisers are deterministic,
and each split keeps the shortest plan prefix reaching its target duration, however
many worker processes run.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

import synth_card
import synth_text
import synth_voices
from synth_voices import SAMPLE_RATE, Utterance

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "config.json"
SPLITS = ("train", "dev", "test-seen-voice", "test-unseen-voice")
SENTENCE_GROUP = {"train": "train", "dev": "dev", "test-seen-voice": "test", "test-unseen-voice": "test"}
UNSEEN_VOICE_SPLITS = {"test-unseen-voice"}
GUESSED_SECONDS_PER_UTTERANCE = 4.0  # first guess, replaced by the measured mean
TEXT_SOURCES = ("fortunes+grammar", "grammar")
MAX_WAVE = 3000  # utterances planned and synthesised per round
JOB_SIZE = 12  # utterances per worker task (festival starts once per task)
SECONDS_PER_HOUR = 3600.0


# ---------------------------------------------------------------------------- voices


def voice_inventory(config: dict, engines: list[str]) -> dict[str, dict[str, list[str]]]:
    """{engine: {"seen": [...], "unseen": [...]}} for the installed engines."""
    inventory = {}
    if "espeak-ng" in engines:
        cfg = config["espeak-ng"]
        known_variants = synth_voices.espeak_variants()
        known_accents = synth_voices.espeak_languages()
        for name in [v for v in cfg["variants"] if v] + list(cfg["accents"]):
            if name not in known_variants and name not in known_accents:
                raise SystemExit(f"config: espeak-ng has no voice or variant {name!r}")
        voices = {"seen": [], "unseen": []}
        for accent in cfg["accents"]:
            for variant in cfg["variants"]:
                side = "unseen" if variant in cfg["unseen_variants"] else "seen"
                voices[side].append(accent + (f"+{variant}" if variant else ""))
        inventory["espeak-ng"] = voices
    for engine in ("flite", "festival"):
        if engine not in engines:
            continue
        cfg = config[engine]
        names = [v for v in cfg["voices_f0_hz"] if synth_voices.engine_available(engine, v)]
        inventory[engine] = {
            "seen": [v for v in names if v not in cfg["unseen_voices"]],
            "unseen": [v for v in names if v in cfg["unseen_voices"]],
        }
    return inventory


# ---------------------------------------------------------------------------- sentences


def sentence_group(text: str, seed: int, shares: dict) -> str:
    """"dev", "test" or "train" for a sentence, from a seeded hash of its text."""
    digest = hashlib.blake2b(f"{seed}\0{text}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "little") / 2**64  # uniform in [0, 1)
    if u < shares["dev"]:
        return "dev"
    if u < shares["dev"] + shares["test"]:
        return "test"
    return "train"


def sentence_stream(fortunes: list, seed: int, shares: dict, group: str) -> Iterator[synth_text.Sentence]:
    """The group's sentences, each once: shuffled fortunes, then grammar sentences."""
    order = np.random.default_rng([seed, 0x5E]).permutation(len(fortunes))
    seen: set[str] = set()
    for sentence in itertools.chain((fortunes[i] for i in order), synth_text.GrammarSentences(seed)):
        if sentence.text in seen:
            continue
        seen.add(sentence.text)
        if sentence_group(sentence.text, seed, shares) == group:
            yield sentence


# ---------------------------------------------------------------------------- planning


def plan_split(split: str, sentences: Iterator, inventory: dict, config: dict, seed: int, out_dir: Path):
    """Endless plan of utterances for a split, drawn from a split-specific generator."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    side = "unseen" if split in UNSEEN_VOICE_SPLITS else "seen"
    engines = [e for e, w in config["engine_weights"].items() if w > 0 and inventory.get(e, {}).get(side)]
    if not engines:
        raise SystemExit(f"no {side} voices available for split {split}")
    weights = np.array([config["engine_weights"][e] for e in engines], dtype=float)
    weights /= weights.sum()
    low_db, high_db = config["peak_dbfs"]
    for index, sentence in enumerate(sentences):
        engine = engines[rng.choice(len(engines), p=weights)]
        voices = inventory[engine][side]
        voice = voices[rng.integers(len(voices))]
        cfg = config[engine]
        if engine == "espeak-ng":
            rate, pitch = rng.uniform(*cfg["rate_wpm"]), rng.uniform(*cfg["pitch"])
        else:
            rate = rng.uniform(*cfg["duration_stretch"])
            pitch = cfg["voices_f0_hz"][voice] * rng.uniform(*cfg["f0_factor"])
        peak = 10.0 ** (rng.uniform(low_db, high_db) / 20.0)
        uid = f"{split}-{index:06d}"
        yield Utterance(
            id=uid, split=split, text=sentence.text, spoken=sentence.spoken, source=sentence.source,
            engine=engine, voice=voice, rate=round(float(rate), 3), pitch=round(float(pitch), 2),
            peak=round(float(peak), 4), path=str(out_dir / split / f"{uid}.flac"),
        )  # fmt: skip


# ---------------------------------------------------------------------------- synthesis


class SplitProgress:
    """Advances the shared bar by at most a split's target, so it ends at exactly 100 %
    although the last round overshoots a little (and tiny runs keep a minimum count)."""

    def __init__(self, bar: tqdm, allowance_s: float):
        self.bar, self.left = bar, allowance_s

    def update(self, seconds: float) -> None:
        step = min(seconds, self.left)
        self.left -= step
        self.bar.update(step)

    def finish(self) -> None:
        self.update(self.left)


def run_wave(wave: list[Utterance], pool: ProcessPoolExecutor, progress: SplitProgress) -> dict:
    """Synthesise a wave in parallel: {id: (samples, error)}."""
    jobs = []
    # festival jobs first: they are the slowest, so they should not be the stragglers
    for engine in ("festival", "flite", "espeak-ng"):
        mine = [u for u in wave if u.engine == engine]
        jobs += [mine[i : i + JOB_SIZE] for i in range(0, len(mine), JOB_SIZE)]
    results = {}
    futures = [pool.submit(synth_voices.synthesize_job, job) for job in jobs]
    for future in as_completed(futures):
        job_results = future.result()
        for uid, samples, error in job_results:
            results[uid] = (samples, error)
        progress.update(sum(s for _, s, _ in job_results) / SAMPLE_RATE)
    return results


def synthesize_split(split, planner, target_s, min_utterances, pool, progress):
    """Keep the shortest plan prefix reaching target_s seconds and min_utterances clips."""
    kept: list[tuple[Utterance, int]] = []
    failures: list[tuple[str, str]] = []
    total_s = 0.0
    done = False
    while not done:
        mean_s = total_s / len(kept) if kept else GUESSED_SECONDS_PER_UTTERANCE
        needed = max(math.ceil((target_s - total_s) / mean_s), min_utterances - len(kept), 1)
        size = min(needed + max(2, needed // 50), MAX_WAVE)  # ~2 % spare against another round
        wave = list(itertools.islice(planner, size))
        results = run_wave(wave, pool, progress)
        for u in wave:  # plan order decides, not completion order
            samples, error = results[u.id]
            if error:
                failures.append((u.id, error))
            elif done:
                Path(u.path).unlink(missing_ok=True)  # made in the last round, beyond the target
            else:
                kept.append((u, samples))
                total_s += samples / SAMPLE_RATE
                done = total_s >= target_s and len(kept) >= min_utterances
    return kept, failures


def write_split(out_dir: Path, split: str, kept: list[tuple[Utterance, int]]) -> None:
    manifest, synthesis = [], []
    for u, samples in kept:
        manifest.append({
            "id": u.id, "audio": f"{split}/{u.id}.flac", "text": u.text,
            "duration": round(samples / SAMPLE_RATE, 3), "speaker": u.speaker, "group": "synthetic",
        })  # fmt: skip
        synthesis.append({
            "id": u.id, "engine": u.engine, "voice": u.voice, "rate": u.rate, "pitch": u.pitch,
            "peak": u.peak, "source": u.source, "spoken": u.spoken,
        })  # fmt: skip
    _write_jsonl(out_dir / f"{split}.jsonl", manifest)
    _write_jsonl(out_dir / "synthesis" / f"{split}.jsonl", synthesis)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a manifest


def remove_stale_audio(out_dir: Path) -> int:
    """Delete clips a previous build left in our split folders (only our own file names)."""
    removed = 0
    for split in SPLITS:
        folder = out_dir / split
        if folder.is_dir():
            for path in folder.glob(f"{split}-*.flac"):
                if re.fullmatch(rf"{re.escape(split)}-\d{{6}}\.flac", path.name):
                    path.unlink()
                    removed += 1
    return removed


# ---------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--hours", type=float, help="total audio hours over all splits (config: 20)")
    parser.add_argument("--seed", type=int, help="seed for sentences, voices, rates and pitches")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="parallel processes")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--no-install", action="store_true", help="never run apt-get; use what is installed")
    parser.add_argument("--text", choices=TEXT_SOURCES, help="sentences: fortunes, then the grammar (the "
                        "default build), or the grammar alone (~930 words: the easier build of the training trials)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    config = json.loads(args.config.read_text())
    hours = config["hours"] if args.hours is None else args.hours
    seed = config["seed"] if args.seed is None else args.seed
    if hours <= 0:
        raise SystemExit("--hours must be > 0")

    missing = synth_voices.missing_packages(config["festival"]["voices_f0_hz"], True, synth_text.FORTUNE_DIR)
    if missing and not args.no_install:
        synth_voices.install_packages(missing)
    engines = [e for e in config["engine_weights"] if synth_voices.engine_available(e)]
    if "espeak-ng" not in engines:
        raise SystemExit("espeak-ng is required (apt-get install espeak-ng)")
    if len(engines) < len(config["engine_weights"]):
        print(f"warning: engines not installed, left out: {sorted(set(config['engine_weights']) - set(engines))}")
    inventory = voice_inventory(config, engines)

    text_source = args.text or config.get("text", TEXT_SOURCES[0])
    fortunes = synth_text.fortune_sentences() if text_source == "fortunes+grammar" else []
    if not fortunes and text_source == "fortunes+grammar":
        print("warning: no fortunes found (apt-get install fortunes fortunes-min); using the grammar only")
    text_seconds = time.monotonic() - started

    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if (removed := remove_stale_audio(out_dir)):
        print(f"removed {removed} clips of an earlier build in {out_dir}")
    for split in SPLITS:
        (out_dir / split).mkdir(exist_ok=True)

    fractions = config["split_fractions"]
    targets = {s: hours * SECONDS_PER_HOUR * fractions[s] for s in SPLITS if s != "train"}
    targets["train"] = hours * SECONDS_PER_HOUR - sum(targets.values())
    min_utterances = config["min_utterances_per_split"]
    shares = config["sentence_shares"]
    print(
        f"synth_en: {hours:g} h with seed {seed} on {args.workers} workers; {len(fortunes)} fortune sentences; "
        f"voices: " + ", ".join(f"{e} {len(v['seen'])} seen + {len(v['unseen'])} unseen" for e, v in inventory.items())
    )

    failures = []
    audio_seconds = 0.0
    with ProcessPoolExecutor(max_workers=args.workers) as pool, tqdm(
        total=sum(targets.values()), unit="s", desc="audio", dynamic_ncols=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]",
    ) as progress:
        for split in SPLITS:
            sentences = sentence_stream(fortunes, seed, shares, SENTENCE_GROUP[split])
            planner = plan_split(split, sentences, inventory, config, seed, out_dir)
            split_progress = SplitProgress(progress, targets[split])
            kept, failed = synthesize_split(split, planner, targets[split], min_utterances, pool, split_progress)
            split_progress.finish()
            failures += failed
            audio_seconds += sum(samples for _, samples in kept) / SAMPLE_RATE
            write_split(out_dir, split, kept)
    for uid, error in failures[:10]:
        print(f"warning: {uid} not synthesised: {error}")

    wall = time.monotonic() - started
    build = {
        "seed": seed,
        "hours_requested": hours,
        "workers": args.workers,
        "wall_seconds": round(wall, 1),
        "audio_seconds_per_wall_second": round(audio_seconds / wall, 1),
        "text_preparation_seconds": round(text_seconds, 1),
        "failed_utterances": len(failures),
        "engine_versions": synth_voices.engine_versions(),
        "text": text_source,
        "fortune_sentences_available": len(fortunes),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "config": config,
    }
    card = synth_card.build_card(out_dir, list(SPLITS), build)
    print(
        f"done: {card['total']['hours']:.3f} h, {card['total']['utterances']} utterances in {wall:.0f} s "
        f"({build['audio_seconds_per_wall_second']:.0f}x real time); card: {out_dir / 'CARD.md'}"
    )
    return card


if __name__ == "__main__":
    main()
