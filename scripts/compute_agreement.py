#!/usr/bin/env python3
"""Word agreement of each compute type with float32 on the offline test set: the figure `auto`
is chosen by (asr/inference/compute.py: the fastest type that agrees on >= 99 % of words).

The offline test set (scripts/offline_testset.py: package recordings, the repository's clips,
espeak-ng sentences) is transcribed by tiny.en in every compute type this machine runs, in one
process, temperature 0 without fallback, timestamps on. Per type: word agreement with float32
(1 - WER of the type's output measured against float32's output, basic normaliser), WER
against the references, how many utterances differ from float32 at all, and the warm wall time
of the whole set (a rough speed figure; whole-process speed is scripts/compare_peers.py's job).

Usage: python scripts/compute_agreement.py [--types float32_shortlist,int8] [--beam-size 5] [--n-synth 24]
Prints a table and, as its last line, one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from offline_testset import build_testset  # noqa: E402

from asr.evaluate.metrics import agreement, corpus_wer  # noqa: E402
from asr.hardware import describe_cpu, shown_flags  # noqa: E402
from asr.inference.compute import COMPUTE_TYPES, ComputeTypeError, resolve_compute_type  # noqa: E402

REFERENCE = "float32"


def transcribe_all(compute_type: str, utts, beam_size, threads: int) -> tuple[list[str], float]:
    import torch

    import asr

    torch.set_num_threads(threads)
    model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type=compute_type)
    options = dict(temperature=0.0, beam_size=beam_size, language="en")
    model.transcribe(utts[0].audio, **options)  # warm-up
    started = time.perf_counter()
    texts = [model.transcribe(u.audio, **options)["text"] for u in utts]
    return texts, time.perf_counter() - started


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    runnable = [t for t in COMPUTE_TYPES if t not in ("auto", REFERENCE)]
    ap.add_argument("--types", default=",".join(runnable),
                    help=f"compute types to compare with float32 (default: those of {runnable} this machine runs)")
    ap.add_argument("--beam-size", type=int, default=None, help="beam search (default greedy)")
    ap.add_argument("--n-synth", type=int, default=24, help="espeak-ng sentences in the test set (default 24)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    types = []
    for name in (t for t in args.types.split(",") if t):
        try:
            types.append(resolve_compute_type(name, "cpu"))
        except ComputeTypeError as err:
            print(f"skipped {name}: {err}", file=sys.stderr)
    utts = build_testset(n_synth=args.n_synth)
    refs = [u.text for u in utts]
    started = time.perf_counter()
    rows = []
    reference_texts = None
    for compute_type in [REFERENCE] + [t for t in types if t != REFERENCE]:
        texts, seconds = transcribe_all(compute_type, utts, args.beam_size, args.threads)
        if reference_texts is None:
            reference_texts = texts
        rows.append({"compute_type": compute_type,
                     "agreement": round(agreement(texts, reference_texts), 4),
                     "utterances_differing": sum(a.strip() != b.strip() for a, b in zip(texts, reference_texts)),
                     "wer": round(corpus_wer(refs, texts), 4),
                     "wall_s": round(seconds, 2)})
        print(f"{compute_type}: {rows[-1]}", file=sys.stderr)

    decoding = f"beam {args.beam_size}" if args.beam_size else "greedy"
    print(f"\n{len(utts)} utterances, tiny.en, {decoding}, temperature 0, {args.threads} threads, "
          f"CPU {describe_cpu()}")
    print("| compute type | agreement with float32 | utterances differing | WER | warm wall s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['compute_type']} | {100 * r['agreement']:.2f}% | {r['utterances_differing']}/{len(utts)} "
              f"| {100 * r['wer']:.2f}% | {r['wall_s']:.1f} |")
    flags = shown_flags()
    print(json.dumps({"utterances": len(utts), "decoding": decoding, "threads": args.threads, "rows": rows,
                      "cpu_flags": flags, "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
