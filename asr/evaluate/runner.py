"""Running an evaluation: decode every utterance once, record a row per utterance, build the
report.

- Audio is read by our own loader (asr.audio.load_audio) a chunk at a time, before decoding,
  so read time is not decode time; a file that cannot be read becomes a row with its error,
  excluded from the scores and listed in the summary.
- RTFx excludes warm-up: each process first decodes one utterance untimed (thread pools,
  allocator and caches warm), then times the rest. A row's decode_seconds is the time from the
  previous result to its own (systems that decode one utterance at a time), or its share by
  audio duration of its chunk's decoding time (batched systems); rows add up to the decoding
  wall time either way.
- A hypothesis longer than the audio can hold (MAX_WORDS_PER_SECOND) is a decoding loop: it is
  cut there and the row marked ``capped``, so one loop cannot swamp a corpus WER.
- Resumable: rows are saved (atomically) every SAVE_INTERVAL_SECONDS; with ``resume`` the rows
  already in the output directory are kept and only the missing or unreadable utterances are
  decoded. The settings that change results must match the earlier run's.
- Sharded under torchrun: each rank decodes a duration-balanced shard and rank 0 gathers every
  row and writes the one report, identical to a single-process run but for timings.
"""
from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path
from typing import Optional, Sequence

import soundfile as sf

from ..audio import SAMPLE_RATE, AudioError, load_audio
from ..hardware import cpu_model
from ..store.atomic import write_text_atomic
from .datasets import Dataset
from .report import ROWS_FILE, Report, build_report, make_row, read_rows, write_report, write_rows

CHUNK_UTTERANCES = 32  # utterances read into memory and decoded together
SAVE_INTERVAL_SECONDS = 30.0  # how much decoding a crash may lose
PARTIAL_DIR = ".partial"
SETTINGS_FILE = "settings.json"
# Read speech runs at ~2.5-3 words/s and fast speech rarely passes 5; more than this is a loop.
MAX_WORDS_PER_SECOND = 6.0
MIN_WORDS_ALLOWED = 10  # short clips still get room for a few words
# Settings that change the hypotheses or their scores: a resumed run must not mix them.
RESULT_SETTINGS = ("system", "model", "checkpoint", "decoding", "dtype", "normalizer")


class EvaluationError(ValueError):
    """An evaluation that cannot go on; one line naming the problem."""


def cap_hypothesis(text: str, duration: float) -> tuple[str, bool]:
    """The hypothesis cut to what `duration` seconds of speech can hold, and whether it was cut."""
    words = text.split()
    limit = MIN_WORDS_ALLOWED + math.ceil(MAX_WORDS_PER_SECOND * duration)
    return (text, False) if len(words) <= limit else (" ".join(words[:limit]), True)


# ---------------------------------------------------------------------------- distribution


def world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(durations: Sequence[float], ranks: int) -> list[list[int]]:
    """Indices split into `ranks` shards of near-equal total duration: longest first, each to
    the least-loaded rank (ties to the lowest rank), so every rank computes the same split."""
    loads = [0.0] * ranks
    shards: list[list[int]] = [[] for _ in range(ranks)]
    for i in sorted(range(len(durations)), key=lambda i: (-durations[i], i)):
        rank = min(range(ranks), key=lambda r: (loads[r], r))
        shards[rank].append(i)
        loads[rank] += durations[i]
    return [sorted(s) for s in shards]


def _barrier() -> None:
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def _gather(rows: list[dict]) -> Optional[list[list[dict]]]:
    rank, size = world()
    if size == 1:
        return [rows]
    import torch.distributed as dist

    gathered = [None] * size if rank == 0 else None
    dist.gather_object(rows, gathered, dst=0)
    return gathered


# ---------------------------------------------------------------------------- the run


def measured_duration(utterance) -> float:
    """The manifest's duration, else the file header's, else 0 (an unreadable file: reported
    when it is read)."""
    if utterance.duration is not None:
        return float(utterance.duration)
    try:
        return sf.info(str(utterance.audio_path)).duration
    except Exception:  # noqa: BLE001 - any unreadable file is reported when decoded
        return 0.0


def environment() -> dict:
    import numpy

    cpu = cpu_model()
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        capability = None
    return {"cpu": cpu, "cpu_capability": capability, "nproc": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy.__version__}


def _saved_rows(out_dir: Path) -> list[dict]:
    """Rows an earlier run left: the report's, then each rank's partial file (later wins)."""
    rows = []
    if (out_dir / ROWS_FILE).exists():
        rows += read_rows(out_dir / ROWS_FILE)
    for partial in sorted((out_dir / PARTIAL_DIR).glob("*.jsonl")):
        rows += read_rows(partial)
    return rows


def _check_resumable(out_dir: Path, settings: dict) -> None:
    import json

    path = out_dir / SETTINGS_FILE
    if not path.exists():
        return
    before = json.loads(path.read_text())
    changed = [k for k in RESULT_SETTINGS if before.get(k) != settings.get(k)]
    if changed:
        raise EvaluationError(f"{out_dir}: --resume with other settings than the earlier run ({', '.join(changed)} "
                              "differ); use a new --output-dir")


def _decode_chunk(system, dataset_name: str, items: list, normalize) -> list[dict]:
    """Rows for (utterance, duration) items: read each, decode the readable ones together."""
    rows: list[Optional[dict]] = [None] * len(items)
    audios, positions = [], []
    for i, (utterance, _) in enumerate(items):
        try:
            audio = load_audio(utterance.audio_path, SAMPLE_RATE)
        except AudioError as err:
            rows[i] = make_row(dataset_name, utterance, None, None, normalize, error=err.reason)
            continue
        audios.append(audio)
        positions.append(i)
    texts, seconds = {}, {}
    chunk_start = start = time.perf_counter()
    for k, text in system.transcribe(audios):
        now = time.perf_counter()
        texts[k], seconds[k], start = text, now - start, now
    if getattr(system, "batched", False):
        # utterances decoded together share the chunk's time in proportion to their audio
        total = time.perf_counter() - chunk_start
        audio_total = sum(len(a) for a in audios) or 1
        seconds = {k: total * len(audios[k]) / audio_total for k in texts}
    for k, text in texts.items():
        duration = len(audios[k]) / SAMPLE_RATE
        text, capped = cap_hypothesis(text, duration)
        rows[positions[k]] = make_row(dataset_name, items[positions[k]][0], duration, text, normalize,
                                      decode_seconds=seconds[k], capped=capped)
    return rows


def _warm_up(system, items: list) -> None:
    for utterance, _ in items:
        try:
            audio = load_audio(utterance.audio_path, SAMPLE_RATE)
        except AudioError:
            continue
        for _ in system.transcribe([audio]):
            pass
        return


def evaluate(system, datasets: Sequence[Dataset], normalizer, out_dir: Path, limit: Optional[int] = None,
             resume: bool = False, extra_settings: Optional[dict] = None, log=print,
             progress: bool = True) -> Optional[Report]:
    """Decode, score and write the report to `out_dir`; returns the Report on rank 0 (None on
    the other ranks of a torchrun group)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    rank, size = world()
    settings = {**system.settings(), "normalizer": {"name": normalizer.name, "version": normalizer.version},
                "limit": limit, "processes": size, **(extra_settings or {})}
    settings["versions"] = {**settings.get("versions", {}), "jiwer": _version("jiwer"),
                            "asr": _version("asr")}
    settings["environment"] = environment()
    plan = [(d.name, u) for d in datasets for u in (d.utterances[:limit] if limit else d.utterances)]
    keys = [(name, u.id) for name, u in plan]

    done: dict[tuple[str, str], dict] = {}
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            _check_resumable(out_dir, settings)
            wanted = set(keys)
            for row in _saved_rows(out_dir):
                key = (row["dataset"], row["id"])
                if key in wanted and row.get("error") is None:
                    done[key] = row
            # one file of what is done, so this run's partial files can start afresh
            write_rows(out_dir / ROWS_FILE, [done[k] for k in keys if k in done])
        for partial in (out_dir / PARTIAL_DIR).glob("*.jsonl"):
            partial.unlink()
        import json

        write_text_atomic(out_dir / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    _barrier()
    if rank != 0 and resume:
        done = {(r["dataset"], r["id"]): r for r in read_rows(out_dir / ROWS_FILE)} if (out_dir / ROWS_FILE).exists() else {}
    missing = [i for i, key in enumerate(keys) if key not in done]
    if resume and rank == 0:
        log(f"resuming: {len(done)} of {len(keys)} utterances already decoded, {len(missing)} to go")
    durations = [measured_duration(plan[i][1]) for i in missing]
    mine = [missing[j] for j in shard(durations, size)[rank]]
    duration_of = dict(zip(missing, durations))

    new_rows: list[dict] = []
    partial = out_dir / PARTIAL_DIR / f"rank-{rank}.jsonl"
    partial.parent.mkdir(parents=True, exist_ok=True)
    last_save = time.monotonic()
    bar = tqdm(total=sum(duration_of[i] for i in mine), unit="audio s", desc=f"decoding{f' rank {rank}' if size > 1 else ''}",
               disable=not progress, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")
    if mine:
        _warm_up(system, [(plan[i][1], None) for i in mine])
    try:
        for start in range(0, len(mine), CHUNK_UTTERANCES):
            chunk = mine[start:start + CHUNK_UTTERANCES]
            # a chunk holds one dataset's utterances at a time (rows carry the dataset's name)
            for name in dict.fromkeys(plan[i][0] for i in chunk):
                part = [i for i in chunk if plan[i][0] == name]
                new_rows += _decode_chunk(system, name, [(plan[i][1], duration_of[i]) for i in part], normalizer)
                bar.update(sum(duration_of[i] for i in part))
            if time.monotonic() - last_save > SAVE_INTERVAL_SECONDS:
                write_rows(partial, new_rows)
                last_save = time.monotonic()
    finally:  # interrupted or not, what is decoded is kept for --resume
        bar.close()
        write_rows(partial, new_rows)

    gathered = _gather(new_rows)
    if rank != 0:
        _barrier()
        return None
    for rows in gathered:
        for row in rows:
            done[(row["dataset"], row["id"])] = row
    rows = [done[k] for k in keys]
    report = build_report(rows, settings)
    write_report(report, out_dir)
    for partial_file in (out_dir / PARTIAL_DIR).glob("*.jsonl"):
        partial_file.unlink()
    _barrier()
    return report


def _version(name: str) -> Optional[str]:
    from .systems import package_version

    return package_version(name)


__all__ = ["EvaluationError", "cap_hypothesis", "evaluate", "shard", "world"]
