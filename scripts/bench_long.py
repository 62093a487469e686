"""Long-file benchmark (issue 14): a synthesised recording of sentences with known start times,
transcribed in one call; reports how many sentences come back, how far segment starts drift
by the end of the file, whether memory stays flat, and the real-time factor.

    python scripts/bench_long.py                  # 60 minutes, tiny.en
    python scripts/bench_long.py --minutes 10     # shorter

Sentences come from a small grammar (varied, clearly spoken by espeak-ng), separated by pauses
of 0.4-1.6 s. A sentence counts as recovered when at least half of its words are aligned as
hits (jiwer's word alignment of the whole transcript against the whole reference): a window
dropped by the no-speech rule loses every sentence in it. The start error is |segment start -
sentence start| for sentences in the last 10% of the file whose first word opens a segment.
Peak RSS (VmHWM) is read when decoding passes minute 10 and at the end. Prints a table and one
JSON line.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
PAUSE_S = (0.4, 1.6)  # silence between sentences, uniform
ONSET_THRESHOLD = 0.01  # |sample| above this: the sentence has started (espeak-ng leads with ~0.05 s)
RECOVERED_FRACTION = 0.5  # of a sentence's words aligned as hits
END_FRACTION = 0.1  # the start error is measured over the last 10% of the file
RSS_CHECKPOINT_S = 600  # minute 10

SUBJECTS = ["the old farmer", "a young teacher", "my brother", "the tired doctor", "our neighbour", "the small child",
            "a quiet student", "the captain", "her mother", "the baker", "a famous singer", "the new manager"]
VERBS = ["painted", "carried", "opened", "found", "cleaned", "sold", "borrowed", "repaired", "watched", "described",
         "visited", "ordered"]
OBJECTS = ["a red wooden boat", "the heavy box", "an empty bottle", "the green garden gate", "a long letter",
           "the broken window", "seven yellow apples", "the kitchen table", "a warm blanket", "the front door",
           "a silver key", "the station clock"]
PLACES = ["near the river", "after breakfast", "in the morning", "before the storm", "at the market",
          "behind the school", "on sunday", "during the night", "next to the bridge", "in the village"]


def sentences(rng: np.random.Generator):
    while True:
        yield " ".join([rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(PLACES)])


def speak(text: str, voice: str, work: Path) -> np.ndarray:
    path = work / "sentence.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True, capture_output=True)
    samples, rate = sf.read(path, dtype="float32")
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE)
    return samples


def build(minutes: float, path: Path, seed: int, voice: str) -> list[tuple[float, str]]:
    """Write the recording; return (start time in seconds, text) per sentence."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SAMPLE_RATE)
    written, truth = 0, []
    with tempfile.TemporaryDirectory() as work, sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as out:
        for text in sentences(rng):
            audio = speak(text, voice, Path(work))
            pause = np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), np.float32)
            if written + len(pause) + len(audio) > total:
                break
            onset = int(np.argmax(np.abs(audio) > ONSET_THRESHOLD))
            truth.append(((written + len(pause) + onset) / SAMPLE_RATE, text))
            out.write(np.concatenate([pause, audio]))
            written += len(pause) + len(audio)
        out.write(np.zeros(total - written, np.float32))
    return truth


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def score(truth: list[tuple[float, str]], segments: list[dict], duration: float) -> dict:
    import jiwer

    ref, owner = [], []  # reference words and the sentence each belongs to
    for i, (_, text) in enumerate(truth):
        for w in words(text):
            ref.append(w)
            owner.append(i)
    hyp, segment_of = [], []  # hypothesis words and their segment
    for j, segment in enumerate(segments):
        for w in words(segment["text"]):
            hyp.append(w)
            segment_of.append(j)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp) or "<empty>")
    hit_ref = {}  # reference word index -> hypothesis word index, for exact hits
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                hit_ref[chunk.ref_start_idx + k] = chunk.hyp_start_idx + k
    n_words = np.bincount(owner, minlength=len(truth))
    n_hits = np.bincount([owner[r] for r in hit_ref], minlength=len(truth))
    recovered = n_hits >= RECOVERED_FRACTION * n_words
    first_word = {}
    for r, i in enumerate(owner):
        first_word.setdefault(i, r)
    errors, errors_all = [], []
    for i, (start, _) in enumerate(truth):
        h = hit_ref.get(first_word[i])
        if h is None:
            continue
        j = segment_of[h]
        if h == 0 or segment_of[h - 1] != j:  # the sentence's first word opens segment j
            errors_all.append(abs(segments[j]["start"] - start))
            if start >= (1 - END_FRACTION) * duration:
                errors.append(errors_all[-1])
    missed = [round(truth[i][0], 1) for i in np.flatnonzero(~recovered)]
    return {"sentences": len(truth), "recovered": int(recovered.sum()),
            "recovered_pct": round(100 * recovered.mean(), 2), "wer_pct": round(100 * out.wer, 2),
            "start_error_end_s": round(float(np.median(errors)), 3) if errors else None,
            "start_error_end_max_s": round(float(np.max(errors)), 3) if errors else None,
            "start_error_n": len(errors),
            "start_error_all_s": round(float(np.median(errors_all)), 3) if errors_all else None,
            "missed_at_s": missed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--voice", default="en-us")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--beam-size", type=int, default=None)
    parser.add_argument("--keep", help="write the recording here (default: a temporary file)")
    args = parser.parse_args()

    import torch

    import asr

    if args.threads:
        torch.set_num_threads(args.threads)
    work = tempfile.TemporaryDirectory()
    path = Path(args.keep) if args.keep else Path(work.name) / "long.wav"
    t0 = time.perf_counter()
    truth = build(args.minutes, path, args.seed, args.voice)
    build_s = time.perf_counter() - t0
    model = asr.load_model(args.model, device="cpu", quiet=True)
    rss = {}
    decoded = [0.0]

    def progress(seconds: float) -> None:
        decoded[0] += seconds
        if "minute_10" not in rss and decoded[0] >= RSS_CHECKPOINT_S:
            rss["minute_10"] = peak_rss_mb()

    t0 = time.perf_counter()
    (_, result), = list(model.transcribe_stream([path], on_progress=progress, beam_size=args.beam_size))
    wall = time.perf_counter() - t0
    if isinstance(result, Exception):
        print(f"bench_long: {result}", file=sys.stderr)
        return 1
    rss["end"] = peak_rss_mb()
    figures = score(truth, result["segments"], result["duration"])
    figures.update(minutes=args.minutes, model=args.model, voice=args.voice, build_s=round(build_s, 1),
                   transcribe_s=round(wall, 1), rtf=round(wall / result["duration"], 4),
                   peak_rss_mb_min10=round(rss["minute_10"], 1) if "minute_10" in rss else None, peak_rss_mb_end=round(rss["end"], 1),
                   cpu=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads())
    rows = [("sentences", figures["sentences"]),
            ("recovered", f"{figures['recovered']} ({figures['recovered_pct']}%)"),
            ("WER", f"{figures['wer_pct']}%"),
            ("start error, last 10% (median / max)", f"{figures['start_error_end_s']} / {figures['start_error_end_max_s']} s"
             f" over {figures['start_error_n']} sentences (whole file, median: {figures['start_error_all_s']} s)"),
            ("peak RSS at minute 10 / at the end", f"{figures['peak_rss_mb_min10']} / {figures['peak_rss_mb_end']} MB"),
            ("real-time factor", figures["rtf"]),
            ("missed sentences at (s)", ", ".join(map(str, figures["missed_at_s"][:20])) or "none")]
    print(f"| {args.minutes:g}-minute file, {args.model}, espeak-ng {args.voice} | |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
