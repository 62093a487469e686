#!/usr/bin/env python3
"""Transcription speed and memory of a built-in model on CPU (default tiny.en).

Real-time factor = wall seconds of transcription / seconds of audio (below 1: faster than real
time). Each configuration runs in a fresh subprocess, which loads the model, runs one untimed
warm-up transcription of the first short clip with the same settings, then the timed run; its peak
resident memory is the child's VmHWM (/proc/self/status) at the end, and its baseline is VmHWM
right after the model is loaded (before any audio is read), so peak - baseline is what decoding
adds.

Workloads:
  (a) short: the 8 clips of data/ plus 12 sentences synthesised with espeak-ng (--quick: the 8
      data clips only), each its own file; batch 1 = m.transcribe() per file, batch 8 =
      m.transcribe_many(files, batch_size=8);
  (b) long: one file of the short clips cycled with 0.5 s gaps up to 10 minutes (--quick: 2),
      written to a temporary FLAC. Batching packs windows of *different files* together, so it
      does not apply to a single file: the long file runs at batch 1 only.
Each with greedy decoding and beam search (beam 5). temperature=0.0 throughout (no temperature
fallback), so every configuration decodes each window exactly once and timings are comparable.
Times include reading the FLAC files (as transcribe(path) does). The machine may be shared and
noisy: treat small differences with care.

--compute-type runs every row in that compute type; --batched adds batched long-form rows;
--kernels only times the int8 candidates (dynamic quantisation, weight-only int8 matmul) against
float32 and bf16 at Whisper tiny's shapes.

Prints a table, then one JSON line with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
GAP_SECONDS = 0.5

SENTENCES = [
    "The train to the coast leaves from platform four every hour.",
    "Please remember to water the plants while I am away.",
    "Our meeting has been moved to Thursday afternoon at three.",
    "He found an old map folded inside the back cover of the book.",
    "The soup needs a little more salt and a pinch of pepper.",
    "Turn left at the bakery and walk two blocks to the river.",
    "She has been learning to play the violin since she was seven.",
    "The children built a snowman in the garden this morning.",
    "Could you send me the report before the end of the week?",
    "A strong wind blew the leaves across the empty parking lot.",
    "The museum will be closed for repairs until the spring.",
    "We counted more than forty birds on the lake yesterday.",
]


# ---------------------------------------------------------------------------------------------
# child: one configuration in a fresh process


def vm_hwm_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(spec: dict) -> dict:
    import torch
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    import asr

    model = asr.load_model(spec["model"], device="cpu", quiet=True, compute_type=spec.get("compute_type", "float32"))
    baseline = vm_hwm_mb()
    files = spec["files"]
    options = dict(temperature=0.0, beam_size=spec["beam_size"])
    batch = spec["batch_size"]
    if spec.get("batched"):  # batched long-form: batch_size windows of one file at a time
        options["batched"] = True

    def work(paths):
        if batch == 1 and not spec.get("batched"):
            return [model.transcribe(p, batch_size=1, **options) for p in paths]
        return model.transcribe_many(paths, batch_size=batch, **options)

    work([spec["warmup"]])
    cpu_start = time.process_time()
    start = time.perf_counter()
    results = work(files)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {"seconds": seconds, "cpu_seconds": cpu, "baseline_mb": baseline, "peak_mb": vm_hwm_mb(),
            "threads": torch.get_num_threads(), "texts": [r["text"].strip() for r in results]}


# Whisper tiny's matrix shapes (out features, in features) and the rows they see: 1 and 5 (a
# decoding step, greedy and beam 5) and 1500 (one 30 s window in the encoder)
KERNEL_SHAPES = [(51864, 384), (1536, 384), (1152, 384), (384, 1536)]
KERNEL_ROWS = [1, 5, 1500]


def bench_kernels(threads) -> None:
    """Milliseconds per call (fastest of 20) of y = x W^T for each way asr could run it."""
    import warnings

    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from asr.inference.compute import int8_per_channel

    warnings.simplefilter("ignore")
    if threads:
        torch.set_num_threads(threads)

    def best_ms(f, n=20):
        f()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times) * 1e3

    print(f"torch threads {torch.get_num_threads()}, CPU {cpu_model()}; ms per call, fastest of 20")
    print(f"{'out x in':>12} {'rows':>5} {'float32':>9} {'int8 dynamic':>13} {'int8 weight-only':>17} {'bf16':>8}")
    for out_features, in_features in KERNEL_SHAPES:
        for rows in KERNEL_ROWS:
            if rows == 1500 and out_features > 10000:
                continue  # the output projection only runs in decoding steps
            w, x = torch.randn(out_features, in_features), torch.randn(rows, in_features)
            dynamic = DynamicLinear(1, 1, bias_=False, dtype=torch.qint8)
            dynamic.set_weight_bias(int8_per_channel(w), None)
            scales = w.abs().amax(dim=1) / 127.5
            w8 = (w / scales[:, None]).round().to(torch.int8)
            wb, xb = w.bfloat16(), x.bfloat16()
            with torch.inference_mode():
                row = [best_ms(lambda: torch.nn.functional.linear(x, w)), best_ms(lambda: dynamic(x)),
                       best_ms(lambda: torch._weight_int8pack_mm(x, w8, scales)),
                       best_ms(lambda: torch.nn.functional.linear(xb, wb))]
            print(f"{out_features:>6} x {in_features:<4} {rows:>5} {row[0]:>9.3f} {row[1]:>13.3f} {row[2]:>17.3f} "
                  f"{row[3]:>8.3f}")


# ---------------------------------------------------------------------------------------------
# parent: audio preparation, one subprocess per configuration, report


def spawn(spec: dict, threads) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"configuration {spec['name']} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used (non-idle time in /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:7]) - idle) / os.sysconf("SC_CLK_TCK")


def spawn_measuring_others(spec: dict, threads) -> dict:
    """spawn(), plus the share of the machine's CPU time that other processes used meanwhile."""
    import resource
    before_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, start = busy_cpu_seconds(), time.perf_counter()
    r = spawn(spec, threads)
    busy, wall = busy_cpu_seconds() - busy, time.perf_counter() - start
    after_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (after_self.ru_utime + after_self.ru_stime) - (before_self.ru_utime + before_self.ru_stime)
    r["others"] = max(0.0, busy - ours) / (wall * (os.cpu_count() or 1))
    return r


def read_16k(path: Path):
    import numpy as np
    import soundfile as sf
    import soxr
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = data.mean(axis=1).astype(np.float32)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    return audio


def synthesise(tmp: Path) -> list[Path]:
    import soundfile as sf
    paths = []
    for i, sentence in enumerate(SENTENCES):
        wav, flac = tmp / f"espeak-{i:02d}.wav", tmp / f"espeak-{i:02d}.flac"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), sentence], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sf.write(str(flac), read_16k(wav), SAMPLE_RATE, subtype="PCM_16")
        wav.unlink()
        paths.append(flac)
    return paths


def make_long(clips: list[Path], seconds: float, out: Path) -> float:
    import numpy as np
    import soundfile as sf
    pieces = [read_16k(p) for p in clips]
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    target = int(seconds * SAMPLE_RATE)
    parts, total, i = [], 0, 0
    while total < target:
        piece = pieces[i % len(pieces)]
        parts += [piece, gap]
        total += len(piece) + len(gap)
        i += 1
    audio = np.concatenate(parts)[:target]
    sf.write(str(out), audio, SAMPLE_RATE, subtype="PCM_16")
    return len(audio) / SAMPLE_RATE


def duration(path: Path) -> float:
    import soundfile as sf
    return sf.info(str(path)).duration


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 short clips and a 2-minute file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the batched short run")
    parser.add_argument("--long-minutes", type=float, default=None, help="length of the long file (10; --quick 2)")
    parser.add_argument("--compute-type", default="float32",
                        help="auto, float32, int8, bfloat16 (default float32)")
    parser.add_argument("--batched", action="store_true",
                        help="the long rows also with batched long-form (batch-size windows of the file at once)")
    parser.add_argument("--kernels", action="store_true",
                        help="only time the int8 candidates against float32/bf16 at Whisper tiny's shapes "
                             "(how asr.inference.compute chose dynamic quantisation)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    if args.kernels:
        bench_kernels(args.threads)
        return

    wall_start = time.perf_counter()
    samples = [json.loads(line) for line in (ROOT / "data/samples.jsonl").read_text().splitlines() if line.strip()]
    data_clips = [ROOT / "data" / s["audio"] for s in samples]
    long_minutes = args.long_minutes or (2.0 if args.quick else 10.0)

    with tempfile.TemporaryDirectory(prefix="bench_transcribe.") as tmpdir:
        tmp = Path(tmpdir)
        short = list(data_clips) if args.quick else data_clips + synthesise(tmp)
        short_seconds = sum(duration(p) for p in short)
        long_path = tmp / "long.flac"
        long_seconds = make_long(short, long_minutes * 60, long_path)

        # convert the model on first use, outside any measured child
        subprocess.run([sys.executable, "-c", f"import asr; asr.load_model({args.model!r}, device='cpu', quiet=True)"],
                       check=True)

        configs = []
        for decoding, beam in (("greedy", None), ("beam5", 5)):
            for batch in (1, args.batch_size):
                configs.append((f"short_{decoding}_b{batch}", "short", decoding, batch, beam, short, short_seconds))
        for decoding, beam in (("greedy", None), ("beam5", 5)):
            configs.append((f"long_{decoding}", "long", decoding, 1, beam, [long_path], long_seconds))
            if args.batched:
                configs.append((f"long_{decoding}_batched", "long", decoding, args.batch_size, beam, [long_path],
                                long_seconds))

        rows, figures = [], {}
        for name, workload, decoding, batch, beam, files, audio_seconds in configs:
            spec = {"name": name, "model": args.model, "threads": args.threads, "beam_size": beam,
                    "batch_size": batch, "files": [str(p) for p in files], "warmup": str(short[0]),
                    "compute_type": args.compute_type, "batched": name.endswith("_batched")}
            print(f"running {name} ...", file=sys.stderr, flush=True)
            r = spawn_measuring_others(spec, args.threads)
            rtf = r["seconds"] / audio_seconds
            rows.append((name, workload, len(files), audio_seconds, decoding, batch, r, rtf))
            figures[f"{name}_rtf"] = round(rtf, 4)
            figures[f"{name}_seconds"] = round(r["seconds"], 2)
            figures[f"{name}_cpu_seconds"] = round(r["cpu_seconds"], 2)
            figures[f"{name}_others_cpu_share"] = round(r["others"], 3)
            figures[f"{name}_peak_rss_mb"] = round(r["peak_mb"], 1)
            figures[f"{name}_baseline_rss_mb"] = round(r["baseline_mb"], 1)

    # batched results should match batch-1 results text for text
    texts = {row[0]: row[6]["texts"] for row in rows}
    agreement = {}
    for decoding in ("greedy", "beam5"):
        a, b = texts[f"short_{decoding}_b1"], texts[f"short_{decoding}_b{args.batch_size}"]
        agreement[decoding] = sum(x == y for x, y in zip(a, b))
        figures[f"short_{decoding}_b{args.batch_size}_same_text_as_b1"] = f"{agreement[decoding]}/{len(a)}"

    threads = rows[0][6]["threads"]
    print(f"model {args.model} on CPU ({cpu_model()}, nproc {os.cpu_count()}), torch threads {threads}; "
          f"temperature=0.0 (no fallback); one fresh process per row")
    header = (f"{'config':<18} {'files':>5} {'audio s':>8} {'decoding':>8} {'batch':>5} {'wall s':>8} "
              f"{'cpu s':>8} {'RTF':>7} {'x realtime':>10} {'base MB':>8} {'peak MB':>8} {'+MB':>7} {'others':>6}")
    print(header)
    print("-" * len(header))
    for name, workload, n, audio_seconds, decoding, batch, r, rtf in rows:
        print(f"{name:<18} {n:>5} {audio_seconds:>8.1f} {decoding:>8} {batch:>5} {r['seconds']:>8.2f} "
              f"{r['cpu_seconds']:>8.2f} {rtf:>7.3f} {1 / rtf:>10.1f} {r['baseline_mb']:>8.0f} {r['peak_mb']:>8.0f} "
              f"{r['peak_mb'] - r['baseline_mb']:>7.0f} {r['others']:>6.0%}")
    print(f"cpu s: CPU time of the timed run, all threads; others: share of the machine's CPU time "
          f"used by other processes during the row (well above 0%: the row's time is inflated)")
    print(f"base MB: VmHWM after model load; peak MB: VmHWM after the run; long file: batch 1 only "
          f"(batching groups different files, a single file has nothing to batch with)")
    for decoding, same in agreement.items():
        print(f"short {decoding}: batch {args.batch_size} text identical to batch 1 for {same}/{len(short)} clips")
    busy_rows = [row[0] for row in rows if row[6]["others"] > 0.10]
    if busy_rows:
        print(f"WARNING: other processes used over 10% of the CPUs during {', '.join(busy_rows)}: "
              f"those timings are inflated, rerun on a quiet machine")
    wall = time.perf_counter() - wall_start
    print(f"total wall time {wall:.0f} s")

    figures.update({"model": args.model, "quick": args.quick, "threads": threads, "nproc": os.cpu_count(),
                    "cpu": cpu_model(), "temperature": 0.0, "batch_size": args.batch_size,
                    "short_clips": len(short), "short_audio_seconds": round(short_seconds, 2),
                    "long_audio_seconds": round(long_seconds, 2), "contended_rows": busy_rows, "wall_seconds": round(wall, 1)})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
