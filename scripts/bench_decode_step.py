#!/usr/bin/env python3
"""Milliseconds per decoded token, and where they go, on windows of the long-form benchmark file:
the figure by which the decoding-step changes for issue 13 were measured.

The file is compare_peers.py's long file (the offline test set's clips concatenated to at least
300 s). --windows of its 30-s windows (default 3: windows 1, 4 and 7) are encoded, then decoded
greedily and with beam 5 (temperature 0, tiny.en in the default compute type, timestamps on),
each window twice, the faster kept. Every round runs each variant in a fresh process,
alternating: this checkout and, with --compare-to DIR, another checkout's package (the process
gets PYTHONPATH=DIR; make one with `git worktree add /tmp/before HEAD~3`), each in every compute
type of --compute-types (default auto), so they are timed side by side on a noisy machine. Per tree and decoding: ms per token (min and median over the
rounds), the part spent in model.logits and, inside it, in the vocabulary projection, then the
logit filters and the search step (a timer around each; what is left is the loop itself), and
whether the tokens equal the first variant's (this checkout in the first compute type).

Usage: python scripts/bench_decode_step.py [--rounds 6] [--compare-to DIR] [--compute-types auto,float32]
       [--threads 2]
Prints a table and, as its last line, one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WINDOW_SECONDS = 30
BEAMS = (None, 5)  # greedy, beam 5
PARTS = ("logits", "projection", "filters", "search")


def timed(function, totals: dict, part: str):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[part] += time.perf_counter() - started
    return wrapper


def instrument(model, totals: dict) -> None:
    """Timers around the parts of a decoding step, on this process's asr (whichever tree)."""
    import asr.inference.decoding as decoding

    model.logits = timed(model.logits, totals, "logits")
    projection = getattr(model.decoder, "output_projection", None)
    if projection is not None:
        projection.forward = timed(projection.forward, totals, "projection")
    build_filters = decoding.build_filters

    def timed_filters(*args, **kwargs):
        filters = build_filters(*args, **kwargs)
        for f in filters:
            f.apply = timed(f.apply, totals, "filters")
        return filters

    decoding.build_filters = timed_filters
    for search in (decoding.GreedySearch, decoding.BeamSearch):
        search.step = timed(search.step, totals, "search")


def child(args) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from offline_testset import SAMPLE_RATE, build_testset, concatenate

    import asr
    from asr.audio import batch_log_mel
    from asr.inference.decoding import DecodingOptions, decode

    torch.set_num_threads(args.threads)
    audio, _, _ = concatenate(build_testset(n_synth=24), 300.0)
    loaded = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type=args.compute_types)
    model, tokenizer = loaded.model, loaded.tokenizer
    windows = [1 + 3 * k for k in range(args.windows)]
    encoded = []
    for w in windows:
        samples = audio[w * WINDOW_SECONDS * SAMPLE_RATE:(w + 1) * WINDOW_SECONDS * SAMPLE_RATE]
        mel, _ = batch_log_mel([torch.from_numpy(np.ascontiguousarray(samples))])
        with torch.inference_mode():
            encoded.append(model.embed_audio(mel[:, :, :100 * WINDOW_SECONDS])[0])
    totals: dict = defaultdict(float)
    instrument(model, totals)
    result = {"tree": os.environ.get("PYTHONPATH", str(REPO)), "asr": str(Path(asr.__file__).parent),
              "compute_type": loaded.compute_type}
    for beam in BEAMS:
        options = DecodingOptions(beam_size=beam, language=None, task=None)
        decode(model, tokenizer, encoded[0], None, options)  # warm-up
        best = None
        for _ in range(2):
            totals.clear()
            started = time.perf_counter()
            tokens = [decode(model, tokenizer, a, None, options)[0].tokens for a in encoded]
            seconds = time.perf_counter() - started
            if best is None or seconds < best[0]:
                best = (seconds, tokens, dict(totals))
        seconds, tokens, parts = best
        n = sum(len(t) for t in tokens)
        result["greedy" if beam is None else f"beam{beam}"] = {
            "ms_per_token": 1e3 * seconds / n, "tokens": n,
            "tokens_md5": hashlib.md5(json.dumps(tokens).encode()).hexdigest()[:12],
            "parts_ms_per_token": {p: round(1e3 * parts.get(p, 0.0) / n, 3) for p in PARTS}}
    print(json.dumps(result))


def run_child(tree: Path, compute_type: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(args.threads),
               "--windows", str(args.windows), "--compute-types", compute_type]
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/")
    if out.returncode != 0:
        raise SystemExit(f"{tree}: exit {out.returncode}: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--compare-to", type=Path, help="another checkout (its folder holding asr/), timed alternately")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--compute-types", default="auto", help="comma-separated compute types, each timed (default auto)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    trees = [REPO] + ([args.compare_to.resolve()] if args.compare_to else [])
    for tree in trees:
        if not (tree / "asr" / "__init__.py").is_file():
            raise SystemExit(f"{tree}: no asr package there")
    variants = [(tree, compute_type) for tree in trees for compute_type in args.compute_types.split(",")]
    started = time.perf_counter()
    runs = defaultdict(list)
    for round_ in range(args.rounds):
        for tree, compute_type in variants[round_ % len(variants):] + variants[:round_ % len(variants)]:
            runs[f"{tree}:{compute_type}"].append(run_child(tree, compute_type, args))
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
            f"{Path(v).name} {runs[v][-1]['greedy']['ms_per_token']:.2f} ms" for v in runs), file=sys.stderr)

    sys.path.insert(0, str(REPO))
    from asr.hardware import describe_cpu, shown_flags

    rows = []
    first = f"{variants[0][0]}:{variants[0][1]}"
    for tree, compute_type in variants:
        variant = f"{tree}:{compute_type}"
        for decoding in ("greedy", "beam5"):
            results = [r[decoding] for r in runs[variant]]
            times = [r["ms_per_token"] for r in results]
            parts = {p: round(statistics.median(r["parts_ms_per_token"][p] for r in results), 3) for p in PARTS}
            rows.append({"tree": str(tree), "compute_type": runs[variant][0]["compute_type"], "decoding": decoding,
                         "min_ms": round(min(times), 3),
                         "median_ms": round(statistics.median(times), 3), "tokens": results[0]["tokens"],
                         "same_tokens_as_first": results[0]["tokens_md5"] == runs[first][0][decoding]["tokens_md5"],
                         "parts_median_ms": parts})
    print(f"\n{args.windows} windows of the long-form file, tiny.en, {args.threads} threads, "
          f"{args.rounds} rounds; CPU {describe_cpu()}")
    print("| tree | compute type | decoding | ms/token min | median | logits | of which projection | filters | search "
          "| same tokens as the first |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        p = r["parts_median_ms"]
        print(f"| {r['tree']} | {r['compute_type']} | {r['decoding']} | {r['min_ms']:.3f} | {r['median_ms']:.3f} "
              f"| {p['logits']:.3f} | {p['projection']:.3f} | {p['filters']:.3f} | {p['search']:.3f} "
              f"| {r['same_tokens_as_first']} |")
    print(json.dumps({"rows": rows, "rounds": args.rounds, "threads": args.threads, "windows": args.windows,
                      "cpu_flags": shown_flags(), "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
