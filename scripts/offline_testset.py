#!/usr/bin/env python3
"""An offline English test set: real recordings from Debian packages plus sentences
synthesised with espeak-ng, all as 16 kHz mono float32 arrays with reference transcripts.

Sources (each is skipped, with a message, when its package is not installed):
- ``samples``: the repository's own clips, data/samples.jsonl (always present);
- ``librivox``: pocketsphinx-testdata, /usr/share/pocketsphinx/test/data/librivox/*.wav
  (LibriVox read speech, transcripts in librivox/transcription);
- ``cards``: pocketsphinx-testdata, cards/*.wav with cards/cards.transcription;
- ``goforward``: pocketsphinx-testdata, goforward.raw (headerless 16 kHz 16-bit: "go forward
  ten meters");
- ``alsa``: alsa-utils, /usr/share/sounds/alsa/*.wav, spoken channel names (48 kHz; transcript
  from the file name, Front_Center -> "front center"; Noise.wav is not speech and is skipped);
- ``espeak``: espeak-ng, N sentences from the fixed list below, each in one voice of a fixed
  cycle of English voices (en-us, en-gb, en-us+f3, en-gb-x-rp, ...). Deterministic: the same
  N gives the same sentences, voices and audio.

A clip of data/samples.jsonl that is the same recording as a package clip (same id, e.g.
``librivox-0870``) is taken once. Every utterance is (id, audio, text, group), group "real"
(recorded human speech) or "synthetic".

WER and its text normalisation live in the package (asr.evaluate.metrics, asr.text.normalize);
`normalize`, `corpus_wer` and `agreement` are re-exported here for the scripts and tests that
score this set (the basic normaliser: lower case, punctuation stripped, integers in words).

Usage: python scripts/offline_testset.py [--n-synth 24] [--write DIR]
Prints a table of the sources and, as its last line, one JSON object with the counts.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from asr.evaluate.benchmark import ALSA_SOUNDS, POCKETSPHINX, alsa_clips, load_clip, pocketsphinx_clips
from asr.evaluate.metrics import agreement, corpus_wer  # noqa: F401  (re-exported)
from asr.text.normalize import basic_normalize as normalize  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples.jsonl"
SAMPLE_RATE = 16000
SOURCES = ("samples", "librivox", "cards", "goforward", "alsa", "espeak")

# espeak-ng voices, used in turn: (voice, words per minute)
ESPEAK_VOICES = [
    ("en-us", 160), ("en-gb", 155), ("en-us+f3", 150), ("en-gb-x-rp", 150),
    ("en-gb-scotland", 150), ("en-us+m3", 160), ("en-029", 150), ("en-gb-x-gbclan", 150),
]

# Ordinary sentences for synthesis, written for this script. Numbers are spelled out.
SENTENCES = [
    "The train to the city leaves every morning at half past seven.",
    "Please remember to water the plants while we are away.",
    "My brother bought a new bicycle with a bright red frame.",
    "We walked along the river until the sun went down.",
    "The children were playing football in the park after school.",
    "Could you tell me where the nearest post office is?",
    "The soup needs a little more salt and some fresh pepper.",
    "She has been learning to play the piano for three years.",
    "The meeting has been moved to Thursday afternoon.",
    "A strong wind blew the leaves across the empty street.",
    "He forgot his umbrella and got wet on the way home.",
    "The museum is closed on Mondays but open late on Fridays.",
    "Our neighbours painted their front door a dark shade of blue.",
    "I would like a cup of tea with milk and no sugar.",
    "The old bridge was repaired last summer after the flood.",
    "They decided to take the long road through the mountains.",
    "The doctor told him to rest for a few days.",
    "Most of the shops in the village close at six in the evening.",
    "The cat was sleeping on a warm blanket near the window.",
    "We need to buy bread, eggs and cheese for the weekend.",
    "The teacher asked the students to read the first chapter.",
    "It was so quiet that we could hear the clock ticking.",
    "The farmer drove his tractor slowly down the narrow lane.",
    "There is a small garden behind the house with apple trees.",
    "Her letter arrived two weeks after she had sent it.",
    "The airport was crowded because many flights were delayed.",
    "He spent the whole afternoon fixing the kitchen sink.",
    "The lights went out just as the film was about to end.",
    "You should check the weather before going sailing.",
    "The baker opens his shop long before the sun comes up.",
    "We watched the birds building a nest in the old oak tree.",
    "The price of coffee has gone up again this year.",
    "She wrote her name at the top of the page and began.",
    "The hotel room had a lovely view over the harbour.",
    "My grandmother tells wonderful stories about her childhood.",
    "The road was closed for repairs so we took a detour.",
    "Everyone stood up when the judge entered the room.",
    "The library has thousands of books about history and science.",
    "He carried the heavy boxes up four flights of stairs.",
    "The snow melted quickly once the spring sunshine arrived.",
]


# Sentences in other languages for multilingual models (language detection, translation),
# written for this script: (espeak-ng voice = Whisper language code, sentence)
FOREIGN_SENTENCES = [
    ("es", "Buenos días a todos. Hoy vamos a hablar de la cocina española y de los mercados de Madrid."),
    ("it", "Buongiorno a tutti. Oggi parliamo della cucina italiana e dei mercati di Roma."),
    ("pl", "Dzień dobry wszystkim. Dzisiaj porozmawiamy o polskiej kuchni i targach w Krakowie."),
    ("de", "Wir sind am Fluss entlang gelaufen, bis die Sonne untergegangen ist."),
    ("es", "Por favor, no olvides regar las plantas mientras estamos fuera."),
    ("it", "Mio fratello ha comprato una bicicletta nuova con il telaio rosso."),
    ("fr", "Le train pour la ville part tous les matins à sept heures et demie."),
    ("nl", "De vergadering is verplaatst naar donderdagmiddag."),
]
# Whisper base names the language of these espeak-ng voices right (probability > 0.9 on every
# sentence above but MISTAKEN's, measured); French and Dutch it takes for Thai.
WELL_RENDERED_LANGUAGES = ("es", "it", "pl", "de")
MISTAKEN = ("espeak-it-005",)  # Whisper base: Latin, 0.19


class Utterance(NamedTuple):
    id: str
    audio: np.ndarray  # 16 kHz mono float32
    text: str  # reference transcript
    group: str  # "real" or "synthetic"


# ---------------------------------------------------------------------------- audio sources


def _load(path) -> np.ndarray:
    from asr.audio import load_audio  # soundfile + soxr "HQ" resampling to 16 kHz

    return load_audio(path, SAMPLE_RATE)


def _from_samples(log) -> list[Utterance]:
    out = []
    for line in SAMPLES.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out.append(Utterance(row["id"], _load(SAMPLES.parent / row["audio"]), row["text"],
                                 row.get("group", "real")))
    return out


def _package_clips(prefix: str, clips) -> list[Utterance]:
    """Clips of asr.evaluate.benchmark (the one reader of the packages' transcripts) whose id
    starts with ``prefix``, as arrays."""
    return [Utterance(c.id, load_clip(c.path), c.text, "real") for c in clips if c.id.startswith(prefix)]


def _from_librivox(log) -> list[Utterance]:
    return _package_clips("librivox-", pocketsphinx_clips())


def _from_cards(log) -> list[Utterance]:
    if not (POCKETSPHINX / "cards" / "cards.transcription").exists():
        log("cards: no cards.transcription, skipped")
        return []
    return _package_clips("cards-", pocketsphinx_clips())


def _from_goforward(log) -> list[Utterance]:
    return _package_clips("goforward", pocketsphinx_clips())


def _from_alsa(log) -> list[Utterance]:
    return _package_clips("alsa-", alsa_clips())


def _espeak(n: int, log) -> list[Utterance]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        log("espeak: espeak-ng is not installed (apt-get install espeak-ng), skipped")
        return []
    out = []
    for i in range(n):
        sentence = SENTENCES[i % len(SENTENCES)]
        voice, rate = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        audio = _synthesise(exe, voice, rate, sentence, "espeak", log)
        if audio is not None:
            out.append(Utterance(f"espeak-{voice.replace('+', '-')}-{i:03d}", audio, sentence, "synthetic"))
    return out


def _synthesise(exe: str, voice: str, rate: int, sentence: str, source: str, log) -> Optional[np.ndarray]:
    """One sentence spoken by espeak-ng as 16 kHz float32, or None (logged) if the voice fails."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "sentence.wav"
        proc = subprocess.run([exe, "-v", voice, "-s", str(rate), "-w", str(wav), sentence],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not wav.exists():
            log(f"{source}: voice {voice} failed ({proc.stderr.strip()[:80]}), sentence skipped")
            return None
        return _load(wav)


def foreign_testset(log=None) -> list[Utterance]:
    """FOREIGN_SENTENCES synthesised with espeak-ng; each utterance's group is its language."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    exe = shutil.which("espeak-ng")
    if exe is None:
        log("foreign: espeak-ng is not installed (apt-get install espeak-ng), skipped")
        return []
    out = []
    for i, (language, sentence) in enumerate(FOREIGN_SENTENCES):
        audio = _synthesise(exe, language, 150, sentence, "foreign", log)
        if audio is not None:
            out.append(Utterance(f"espeak-{language}-{i:03d}", audio, sentence, language))
    return out


_PACKAGE_CHECKS = {
    "librivox": (lambda: (POCKETSPHINX / "librivox" / "transcription").exists(), "pocketsphinx-testdata"),
    "cards": (lambda: (POCKETSPHINX / "cards").is_dir(), "pocketsphinx-testdata"),
    "goforward": (lambda: (POCKETSPHINX / "goforward.raw").exists(), "pocketsphinx-testdata"),
    "alsa": (lambda: ALSA_SOUNDS.is_dir(), "alsa-utils"),
}


def build_testset(n_synth: int = 24, sources: Sequence[str] = SOURCES, log=None) -> list[Utterance]:
    """The offline test set: package recordings, the repository's clips and `n_synth`
    espeak-ng sentences. `log` (default: print to stderr) receives a line per skipped source."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown source(s) {sorted(unknown)}; known: {SOURCES}")
    loaders = {"samples": _from_samples, "librivox": _from_librivox, "cards": _from_cards,
               "goforward": _from_goforward, "alsa": _from_alsa,
               "espeak": lambda lg: _espeak(n_synth, lg)}
    result: list[Utterance] = []
    seen: set[str] = set()
    for source in SOURCES:
        if source not in sources:
            continue
        check = _PACKAGE_CHECKS.get(source)
        if check and not check[0]():
            log(f"{source}: package {check[1]} is not installed, skipped")
            continue
        for utt in loaders[source](log):
            if utt.id in seen:  # the same recording as one already taken
                continue
            seen.add(utt.id)
            result.append(utt)
    return result


def concatenate(utterances: Sequence[Utterance], min_seconds: float, gap: float = 0.5,
                seed: int = 0) -> tuple[np.ndarray, str, int]:
    """One long recording: the clips in order (repeated if needed) separated by `gap` seconds of
    faint noise, until at least `min_seconds`. Returns (audio, reference text, clips used)."""
    rng = np.random.default_rng(seed)
    pieces, texts, total, count = [], [], 0, 0
    while total < min_seconds * SAMPLE_RATE:
        utt = utterances[count % len(utterances)]
        silence = (rng.standard_normal(int(gap * SAMPLE_RATE)) * 1e-4).astype(np.float32)
        pieces += [utt.audio, silence]
        texts.append(utt.text)
        total += len(utt.audio) + len(silence)
        count += 1
    return np.concatenate(pieces), " ".join(texts), count


def write(utterances: Sequence[Utterance], folder: Path) -> Path:
    """16-bit wav files plus manifest.jsonl (id, audio, text, group, duration)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.jsonl"
    with manifest.open("w") as f:
        for u in utterances:
            sf.write(folder / f"{u.id}.wav", u.audio, SAMPLE_RATE, subtype="PCM_16")
            f.write(json.dumps({"id": u.id, "audio": f"{u.id}.wav", "text": u.text, "group": u.group,
                                "duration": round(len(u.audio) / SAMPLE_RATE, 3)}) + "\n")
    return manifest


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-synth", type=int, default=24, help="espeak-ng sentences (default 24)")
    ap.add_argument("--sources", default=",".join(SOURCES), help="comma-separated subset of " + ",".join(SOURCES))
    ap.add_argument("--write", type=Path, help="also write wav files and manifest.jsonl here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    utts = build_testset(args.n_synth, [s for s in args.sources.split(",") if s])
    print(f"{'id':<32} {'group':<10} {'dur (s)':>7}  text")
    for u in utts:
        print(f"{u.id:<32} {u.group:<10} {len(u.audio) / SAMPLE_RATE:7.2f}  {u.text[:60]}")
    groups = {g: sum(u.group == g for u in utts) for g in ("real", "synthetic")}
    seconds = sum(len(u.audio) for u in utts) / SAMPLE_RATE
    print(f"\n{len(utts)} utterances ({groups['real']} real, {groups['synthetic']} synthetic), {seconds:.1f} s")
    summary = {"utterances": len(utts), **groups, "seconds": round(seconds, 2)}
    if args.write:
        summary["manifest"] = str(write(utts, args.write))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
