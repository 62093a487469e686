#!/usr/bin/env python3
"""asr side by side with faster-whisper: same files, same Whisper tiny.en weights, same beam size.

Systems (each loaded once in its own worker process, so peak RSS is its own; every run goes to
the systems in turn, so the shared machine's slow spells fall on all of them alike; --rounds N
repeats everything and keeps each system's fastest time):
- ``asr``: asr.load_model("tiny.en", compute_type="float32") (the numerical reference,
  transcribe_many with its default batch of 8 files); ``asr:<compute type>`` (auto, which users
  get by default, float32, float32_shortlist, bfloat16_encoder, int8, bfloat16) loads it in that compute type,
  ``asr:<compute type>:batched`` also decodes each file's windows in batches (batched long-form);
- ``fw-int8``: faster_whisper.WhisperModel(compute_type="int8"), its usual CPU setting;
- ``fw-float32``: faster-whisper in float32: the numerical reference for word agreement.

Workloads: (a) short clips from the offline test set (scripts/offline_testset.py), one file each;
(b) one long file (>= 5 minutes): the offline clips concatenated with 0.5 s gaps of faint noise,
its reference the concatenated transcripts. Each is decoded greedily (beam 1) and with beam 5.
Decoding settings are the same on both sides: temperature 0 only (no fallback: sampling draws
different random numbers, so it cannot be compared), condition_on_previous_text=False,
timestamps on, no VAD, language "en"; faster-whisper's other defaults (suppress_tokens=[-1],
suppress_blank, max_initial_timestamp=1.0, patience 1) equal asr's. --fallback uses the default
temperature tuple on both (faster-whisper with best_of=1, as asr samples one candidate).

Reported per workload and system: wall time (model loaded and warmed up on 8 clips, greedy),
real-time factor (wall / audio seconds), wall-time ratio against fw-int8, corpus WER against the
references (asr.text.normalize.basic_normalize on both), and word agreement with fw-float32
(1 - WER of the system's output measured against fw-float32's output). Per system: load time
and peak RSS.

Whole-process rows (--whole-process, or --whole-process-only): what a user runs, start-up
included: `asr transcribe FILES --compute-type T --temperature 0 --threads N` against a short
faster-whisper script that imports, loads the same tiny.en weights and transcribes the same files
(same beam, temperature 0, no VAD, cpu_threads N), on a one-second file, the short clips (one
call) and the long file, alternating between systems, fastest of --rounds kept, each process's own
peak RSS (os.wait4). Systems: --whole-systems (default asr:auto, asr:int8, asr:int8:batched,
fw-int8). The asr package is byte-compiled first, as pip compiles a regular install and had
compiled faster-whisper (byte_compile_asr), and each system runs once, untimed, before the
rounds (asr's first call on a machine fills its cache of converted weights).
The load average before and after and the CPU's avx/amx flags are reported beside the figures.

Usage: python scripts/compare_peers.py [--quick] [--rounds N] [--whole-process] [--save scripts/RESULTS-peers.md]
Prints a table and, as its last line, one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from asr.hardware import cpu_flags, cpu_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# asr systems are "asr" (float32) or "asr:<compute type>[:batched]", e.g. asr:auto:batched
ASR_COMPUTE_TYPES = ("auto", "float32", "float32_shortlist", "float16_decoder", "bfloat16_encoder",
                     "bfloat16_encoder_float16_decoder", "int8", "bfloat16")
SYSTEMS = ("asr", "asr:auto", "asr:int8", "asr:int8:batched", "fw-int8", "fw-float32")
FW_SYSTEMS = ("fw-int8", "fw-float32")
ASR_REFERENCE_SYSTEM = "asr"  # word agreement of each compute type with asr's float32
REFERENCE_SYSTEM = "fw-float32"
BASELINE_SYSTEM = "fw-int8"
FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


# ---------------------------------------------------------------------------- child process


def load_system(spec: dict):
    """Load one system; returns its transcribe(paths, beam) -> texts."""
    threads = spec["threads"]
    if spec["system"].startswith("asr"):
        import torch

        torch.set_num_threads(threads)
        import asr

        compute_type, batched = asr_system(spec["system"])
        model = asr.load_model("tiny.en", device="cpu", quiet=True, compute_type=compute_type)

        def transcribe(paths, beam):
            temperature = tuple(FALLBACK) if spec["fallback"] else 0.0
            results = model.transcribe_many(paths, beam_size=beam, temperature=temperature, batched=batched,
                                            condition_on_previous_text=False, without_timestamps=False)
            return [r["text"].strip() for r in results]
        return transcribe

    from faster_whisper import WhisperModel

    import asr.convert

    compute_type = spec["system"].split("-", 1)[1]
    model = WhisperModel(str(asr.convert.bundled_model_dir()), device="cpu",
                         compute_type=compute_type, cpu_threads=threads)

    def transcribe(paths, beam):
        temperature = list(FALLBACK) if spec["fallback"] else 0.0
        texts = []
        for path in paths:
            segments, _ = model.transcribe(
                path, language="en", beam_size=beam, best_of=1, temperature=temperature,
                condition_on_previous_text=False, without_timestamps=False, vad_filter=False,
                word_timestamps=False)
            texts.append("".join(s.text for s in segments).strip())
        return texts
    return transcribe


def asr_system(system: str) -> tuple[str, bool]:
    """(compute type, batched) of an asr system name: asr, asr:int8, asr:auto:batched ..."""
    parts = system.split(":")
    compute_type = parts[1] if len(parts) > 1 else "float32"
    batched = parts[2:] == ["batched"]
    if parts[0] != "asr" or compute_type not in ASR_COMPUTE_TYPES or parts[2:] not in ([], ["batched"]):
        raise SystemExit(f"unknown asr system {system!r}: asr[:{'|'.join(ASR_COMPUTE_TYPES)}[:batched]]")
    return compute_type, batched


def known_system(system: str) -> bool:
    if system in FW_SYSTEMS:
        return True
    if not system.startswith("asr"):
        return False
    asr_system(system)
    return True


# ---------------------------------------------------------------------------- whole process
# A user runs `asr transcribe FILES` or a short faster-whisper script: import, load, transcribe,
# exit. These rows time exactly that, start-up included, and take each process's own peak RSS
# (os.wait4 gives the child's rusage).

FW_SCRIPT = """
import sys
from faster_whisper import WhisperModel
model_dir, compute_type, beam, threads, *paths = sys.argv[1:]
model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=int(threads))
for path in paths:
    segments, _ = model.transcribe(path, language="en", beam_size=int(beam), best_of=1, temperature=0.0,
                                   condition_on_previous_text=False, without_timestamps=False,
                                   vad_filter=False, word_timestamps=False)
    print("".join(s.text for s in segments).strip())
"""


def whole_process_command(system: str, paths: list[str], beam: int, threads: int) -> list[str]:
    if system in FW_SYSTEMS:
        import asr.convert

        return [sys.executable, "-c", FW_SCRIPT, str(asr.convert.bundled_model_dir()),
                system.split("-", 1)[1], str(beam), str(threads), *paths]
    compute_type, batched = asr_system(system)
    asr_cli = str(Path(sys.executable).with_name("asr"))
    command = [asr_cli, "transcribe", *paths, "--model", "tiny.en", "--compute-type", compute_type,
               "--temperature", "0", "--threads", str(threads), "--quiet"]
    if beam > 1:
        command += ["--beam-size", str(beam)]
    return command + (["--batched"] if batched else [])


def byte_compile_asr() -> None:
    """Write the .pyc files of the asr package, as pip does at a regular (not editable) install.

    faster-whisper's modules were byte-compiled when pip installed them. An editable install of
    asr is not, and a process started with PYTHONDONTWRITEBYTECODE=1 (as on the machines these
    benchmarks ran on) then compiles every asr module it imports anew, every run: 95 ms of a
    1-second file's start-up against 24 ms from .pyc files (2-core AVX-512 EPYC, 2026-12-06)."""
    import compileall

    import asr

    compileall.compile_dir(str(Path(asr.__file__).parent), quiet=1)


def run_whole_process(command: list[str]) -> dict:
    """Wall time and peak RSS of one process from start to exit."""
    t = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(REPO))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace").strip()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:3])}...: exit {os.waitstatus_to_exitcode(status)}: {err[-300:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def whole_process_rows(systems, runs, rounds: int) -> list[dict]:
    """Every run as a whole process for every system, alternating (order rotating per round),
    the fastest of `rounds` kept, with the largest peak RSS seen.

    Each system first runs the first workload once, untimed: on a fresh machine asr's first
    call converts the bundled weights and builds its int8 table in the cache, once per machine
    (on an AVX2-only EPYC that first 1-second run took 7.8 s and peaked at 575 MB, against
    3.3 s and 434 MB afterwards, 2026-12-07), which is not what the rows compare."""
    name, paths, beam, threads = runs[0]
    for system in systems:
        run_whole_process(whole_process_command(system, paths, beam, threads))
    best: dict = {}
    for round_ in range(rounds):
        for name, paths, beam, threads in runs:
            order = systems[round_ % len(systems):] + systems[:round_ % len(systems)]
            for system in order:
                out = run_whole_process(whole_process_command(system, paths, beam, threads))
                key = (name, system)
                if key not in best:
                    best[key] = out
                else:
                    best[key] = {"wall_s": min(best[key]["wall_s"], out["wall_s"]),
                                 "peak_rss_mb": max(best[key]["peak_rss_mb"], out["peak_rss_mb"])}
            print(f"whole-process round {round_ + 1}/{rounds} {name}: " + ", ".join(
                f"{s} {best[(name, s)]['wall_s']:.1f} s" for s in systems), file=sys.stderr)
    rows = []
    for name, paths, beam, _ in runs:
        base = best.get((name, BASELINE_SYSTEM))
        for system in systems:
            out = best[(name, system)]
            rows.append({"workload": name.rsplit("-", 1)[0], "beam": beam, "system": system, "files": len(paths),
                         "wall_s": round(out["wall_s"], 3), "peak_rss_mb": round(out["peak_rss_mb"], 1),
                         "ratio_vs_fw_int8": round(out["wall_s"] / base["wall_s"], 3) if base else None})
    return rows


def load_average() -> Optional[list[float]]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def run_worker(spec: dict) -> None:
    """A worker process: load and warm up one system, then answer jobs read from stdin, one JSON
    line each ({"paths": [...], "beam": n}), with one JSON line ({"wall_s", "texts"}); at end
    of input, report load time and peak RSS."""
    t0 = time.perf_counter()
    transcribe = load_system(spec)
    load_s = time.perf_counter() - t0
    transcribe(spec["warmup"], 1)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        t = time.perf_counter()
        texts = transcribe(job["paths"], job["beam"])
        print(json.dumps({"wall_s": time.perf_counter() - t, "texts": texts}), flush=True)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"load_s": load_s, "peak_rss_mb": peak_kb / 1024}), flush=True)


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, spec: dict):
        self.system = spec["system"]
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
        self.receive()  # loaded and warmed up
        self.pause()

    # An idle worker is stopped outright: OpenMP/CTranslate2 threads keep spinning for a while
    # after their last job, and on a 2-core machine that spinning slows whoever runs next.
    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.system}: worker process failed (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, paths, beam) -> dict:
        self.resume()
        self.proc.stdin.write(json.dumps({"paths": paths, "beam": beam}) + "\n")
        self.proc.stdin.flush()
        result = self.receive()
        self.pause()
        return result

    def close(self) -> dict:
        self.resume()
        self.proc.stdin.close()
        stats = self.receive()
        self.proc.wait()
        return stats


def cpu_times() -> Optional[list[int]]:
    """/proc/stat's aggregate CPU counters (user nice system idle iowait irq softirq steal ...)."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def steal_fraction(before, after) -> Optional[float]:
    """Share of CPU time the hypervisor gave to other machines between two cpu_times()."""
    if not before or not after or len(before) < 8:
        return None
    delta = [b - a for a, b in zip(before, after)]
    return delta[7] / sum(delta) if sum(delta) else None


# ---------------------------------------------------------------------------- parent


def machine() -> dict:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()}


def other_benchmarks() -> list[str]:
    """Command lines of other benchmark processes running now (their load skews our timings)."""
    try:
        out = subprocess.run(["pgrep", "-af", "scripts/bench_"], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [line for line in out.splitlines() if line.strip()]


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "faster-whisper", "ctranslate2"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 short clips, a 90 s long file, fewer synthetic sentences")
    ap.add_argument("--n-short", type=int, help="short clips (default 20, quick 8)")
    ap.add_argument("--long-seconds", type=float, help="minimum length of the long file (default 300, quick 90)")
    ap.add_argument("--beams", default="1,5", help="beam sizes, comma-separated (default 1,5)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="default " + ",".join(SYSTEMS))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads per system (default nproc)")
    ap.add_argument("--fallback", action="store_true", help="temperature fallback tuple instead of 0 only")
    ap.add_argument("--save", type=Path, help="write the results as markdown here")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every run this many times, keep the fastest (default 1)")
    ap.add_argument("--whole-process", action="store_true",
                    help="also time `asr transcribe` and a faster-whisper script as whole processes")
    ap.add_argument("--whole-process-only", action="store_true", help="only the whole-process rows")
    ap.add_argument("--whole-systems", default="asr:auto,asr:int8,asr:int8:batched,fw-int8",
                    help="systems of the whole-process rows (default asr:auto,asr:int8,asr:int8:batched,fw-int8)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return

    started = time.perf_counter()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    import soundfile as sf
    from offline_testset import SAMPLE_RATE, build_testset, concatenate

    from asr.evaluate.metrics import agreement, corpus_wer

    n_short = args.n_short or (8 if args.quick else 20)
    long_seconds = args.long_seconds or (90.0 if args.quick else 300.0)
    beams = [int(b) for b in args.beams.split(",") if b]
    systems = [s for s in args.systems.split(",") if s]
    whole_systems = [s for s in args.whole_systems.split(",") if s]
    if unknown := {s for s in systems + whole_systems if not known_system(s)}:
        raise SystemExit(f"unknown system(s) {sorted(unknown)}; known: {SYSTEMS} and asr:<compute type>[:batched]")
    if args.whole_process_only:
        systems = []
    load_before = load_average()

    utts = build_testset(n_synth=8 if args.quick else 24)
    real = [u for u in utts if u.group == "real"]
    synthetic = [u for u in utts if u.group != "real"]
    short = real[: (n_short + 1) // 2] + synthetic[: n_short // 2]
    short += [u for u in utts if u not in short][: n_short - len(short)]
    long_audio, long_ref, long_clips = concatenate(utts, long_seconds)

    tmp = Path(tempfile.mkdtemp(prefix="compare-peers-"))
    short_paths = []
    for u in short:
        path = tmp / f"{u.id}.wav"
        sf.write(path, u.audio, SAMPLE_RATE, subtype="PCM_16")
        short_paths.append(str(path))
    long_path = tmp / "long.wav"
    sf.write(long_path, long_audio, SAMPLE_RATE, subtype="PCM_16")

    workloads = {"short": (short_paths, [u.text for u in short], sum(len(u.audio) for u in short) / SAMPLE_RATE),
                 "long": ([str(long_path)], [long_ref], len(long_audio) / SAMPLE_RATE)}
    runs = [(f"{w}-b{b}", paths, b) for w, (paths, _, _) in workloads.items() for b in beams]
    print(f"short: {len(short)} clips, {workloads['short'][2]:.1f} s; long: {workloads['long'][2]:.1f} s "
          f"({long_clips} clips); beams {beams}; {args.threads} threads; systems {systems}", file=sys.stderr)

    concurrent = set(other_benchmarks())
    stop = threading.Event()

    def watch():  # note any other benchmark that runs while we measure
        while not stop.wait(5.0):
            concurrent.update(other_benchmarks())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # Every system is loaded once in its own process; then each run goes to every system in
    # turn (the order rotating from round to round), so a slow spell of this shared machine
    # hits all systems alike instead of whichever happened to be measured then.
    whole_rows = []
    if args.whole_process or args.whole_process_only:
        one_second = tmp / "one-second.wav"
        sf.write(one_second, short[0].audio[:SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
        whole_runs = [("one-second-b1", [str(one_second)], 1, args.threads)]
        whole_runs += [(f"{w}-b{b}", paths, b, args.threads) for w, (paths, _, _) in workloads.items() for b in beams]
        byte_compile_asr()
        whole_rows = whole_process_rows(whole_systems, whole_runs, args.rounds)
    workers = {}
    for system in systems:
        spec = {"system": system, "threads": args.threads, "fallback": args.fallback, "warmup": short_paths[:8]}
        workers[system] = Worker(spec)
    results = {system: {"runs": {}} for system in systems}
    cpu_before = cpu_times()
    for round_ in range(args.rounds if systems else 0):
        for name, paths, beam in runs:
            order = systems[round_ % len(systems):] + systems[:round_ % len(systems)]
            for system in order:
                out = workers[system].run(paths, beam)
                best = results[system]["runs"].get(name)
                if best is None or out["wall_s"] < best["wall_s"]:
                    results[system]["runs"][name] = {"wall_s": out["wall_s"],
                                                     "texts": best["texts"] if best else out["texts"]}
            print(f"round {round_ + 1}/{args.rounds} {name}: " + ", ".join(
                f"{s} {results[s]['runs'][name]['wall_s']:.1f} s" for s in systems), file=sys.stderr)
    steal = steal_fraction(cpu_before, cpu_times())
    for system, worker in workers.items():
        results[system].update(worker.close())
    stop.set()
    watcher.join()
    concurrent.update(other_benchmarks())
    shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for name, _, beam in runs:
        workload = name.split("-")[0]
        _, refs, seconds = workloads[workload]
        base = results.get(BASELINE_SYSTEM, {}).get("runs", {}).get(name)
        reference = results.get(REFERENCE_SYSTEM, {}).get("runs", {}).get(name)
        asr_reference = results.get(ASR_REFERENCE_SYSTEM, {}).get("runs", {}).get(name)
        for system in systems:
            run = results[system]["runs"][name]
            rows.append({
                "workload": workload, "beam": beam, "system": system, "audio_s": round(seconds, 2),
                "wall_s": round(run["wall_s"], 3), "rtf": round(run["wall_s"] / seconds, 4),
                "ratio_vs_fw_int8": round(run["wall_s"] / base["wall_s"], 3) if base else None,
                "wer": round(corpus_wer(refs, run["texts"]), 4),
                "agreement_vs_fw_float32": round(agreement(run["texts"], reference["texts"]), 4) if reference else None,
                "agreement_vs_asr_float32": (round(agreement(run["texts"], asr_reference["texts"]), 4)
                                             if asr_reference and system.startswith("asr") else None),
            })
    per_system = {s: {"load_s": round(r["load_s"], 2), "peak_rss_mb": round(r["peak_rss_mb"], 1)}
                  for s, r in results.items()}
    total_s = time.perf_counter() - started

    load_after = load_average()
    table = markdown_table(rows, per_system) if systems else ""
    if whole_rows:
        table += ("\n\n" if table else "") + whole_process_table(whole_rows)
    print(table)
    summary = {"machine": machine(), "versions": versions(), "threads": args.threads,
               "temperature": "fallback" if args.fallback else 0.0, "quick": args.quick,
               "short_clips": len(short), "long_audio_s": round(workloads["long"][2], 2),
               "rounds": args.rounds, "cpu_steal": None if steal is None else round(steal, 3),
               "rows": rows, "systems": per_system, "wall_s": round(total_s, 1),
               "concurrent_benchmarks": sorted(concurrent), "whole_process_rows": whole_rows,
               "load_average_before": load_before, "load_average_after": load_after,
               "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))}
    if concurrent:
        print(f"WARNING: other benchmarks ran during this run, timings are skewed: {sorted(concurrent)}",
              file=sys.stderr)
    if args.save:
        save_markdown(args.save, table, summary, argv)
        print(f"saved {args.save}", file=sys.stderr)
    diffs = [(u.id, a, b) for u, a, b in zip(short, results.get("asr", {}).get("runs", {}).get("short-b1", {}).get("texts", []),
                                              results.get(REFERENCE_SYSTEM, {}).get("runs", {}).get("short-b1", {}).get("texts", []))
             if a != b]
    for i, a, b in diffs:
        print(f"  short-b1 differs {i}: asr {a!r} | fw-float32 {b!r}", file=sys.stderr)
    print(json.dumps(summary))


def whole_process_table(rows) -> str:
    lines = ["Whole process (start-up, model load and transcription; fastest of the rounds, largest peak RSS):", "",
             "| workload | beam | system | files | wall s | wall / fw-int8 | peak RSS MB |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "" if r["ratio_vs_fw_int8"] is None else f"{r['ratio_vs_fw_int8']:.2f}x"
        lines.append(f"| {r['workload']} | {r['beam']} | {r['system']} | {r['files']} | {r['wall_s']:.2f} | "
                     f"{ratio} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def markdown_table(rows, per_system) -> str:
    lines = ["Warm process (model loaded once, warmed up):", "",
             "| workload | beam | system | audio s | wall s | RTF | wall / fw-int8 | WER | agreement with fw-float32 "
             "| agreement with asr float32 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "" if r["ratio_vs_fw_int8"] is None else f"{r['ratio_vs_fw_int8']:.2f}x"
        agree = "" if r["agreement_vs_fw_float32"] is None else f"{r['agreement_vs_fw_float32']:.2%}"
        own = "" if r.get("agreement_vs_asr_float32") is None else f"{r['agreement_vs_asr_float32']:.2%}"
        lines.append(f"| {r['workload']} | {r['beam']} | {r['system']} | {r['audio_s']:.1f} | {r['wall_s']:.2f} | "
                     f"{r['rtf']:.3f} | {ratio} | {r['wer']:.2%} | {agree} | {own} |")
    lines += ["", "| system | load s | peak RSS MB |", "|---|---:|---:|"]
    for s, v in per_system.items():
        lines.append(f"| {s} | {v['load_s']:.2f} | {v['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def save_markdown(path: Path, table: str, summary: dict, argv) -> None:
    m = summary["machine"]
    command = " ".join([".venv/bin/python", "scripts/compare_peers.py", *(argv if argv is not None else sys.argv[1:])])
    text = f"""# asr vs faster-whisper (Whisper tiny.en, CPU)

Generated by `scripts/compare_peers.py`; see its docstring for what is measured.

- Command: `{command}`
- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}
- Machine: {m['nproc']} CPUs (nproc), {m['cpu']}; Python {m['python']}; {', '.join(f'{k} {v}' for k, v in summary['versions'].items())}
- CPU flags: {' '.join(summary['cpu_flags'])}
- Load average (1, 5, 15 min) before / after: {summary['load_average_before']} / {summary['load_average_after']}
- Threads per system: {summary['threads']}; temperature: {summary['temperature']}
- Workloads: {summary['short_clips']} short clips; one long file of {summary['long_audio_s']:.1f} s
- Wall time of the whole run: {summary['wall_s']:.0f} s; rounds (fastest kept): {summary['rounds']}
- CPU time taken by the hypervisor for other machines (steal) during the measurements: {'unknown' if summary['cpu_steal'] is None else f"{summary['cpu_steal']:.0%}"}
- Other benchmarks seen running during the run: {'; '.join(summary['concurrent_benchmarks']) or 'none'}

{table}
"""
    path.write_text(text)


if __name__ == "__main__":
    main()
