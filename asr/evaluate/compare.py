"""`asr compare REPORT_DIR...`: several runs over the same utterances side by side.

Each run is a report directory of `asr evaluate` (or scripts/compare_peers.py). The runs must
cover the same utterances (same dataset names and ids) scored with the same normaliser,
otherwise the comparison is refused. Utterances whose audio one run could not read are left
out of every run's scores, and counted.

For every pair of runs, and every dataset (plus all datasets pooled), the paired bootstrap
(Koehn 2004) gives the probability that one system's corpus WER is lower than the other's on
resamples of the same utterances.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Sequence

from ..store.atomic import write_text_atomic
from .report import (ROWS_FILE, SUMMARY_JSON, _bars, _pct, _save_figure, by_key, datasets_of,
                     format_table, markdown_table, read_rows, row_counts, summarize)
from .stats import paired_bootstrap


class CompareError(ValueError):
    """Runs that cannot be compared; one line saying why."""


@dataclass
class Run:
    path: Path
    name: str
    settings: dict
    rows: dict  # (dataset, id) -> row


def load_run(path: Path) -> Run:
    path = Path(path)
    rows_file, summary_file = path / ROWS_FILE, path / SUMMARY_JSON
    if not rows_file.exists() or not summary_file.exists():
        raise CompareError(f"{path}: not a report directory of asr evaluate (no {ROWS_FILE} / {SUMMARY_JSON})")
    settings = json.loads(summary_file.read_text())["settings"]
    rows = {(r["dataset"], r["id"]): r for r in read_rows(rows_file)}
    return Run(path, settings.get("system") or path.name, settings, rows)


def check_comparable(runs: Sequence[Run]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if set(run.rows) != set(first.rows):
            only_a = sorted(set(first.rows) - set(run.rows))
            only_b = sorted(set(run.rows) - set(first.rows))
            example = "/".join((only_a or only_b)[0])
            raise CompareError(
                f"{run.path}: not the same utterances as {first.path} ({len(only_a)} only in the first, "
                f"{len(only_b)} only in the second, e.g. {example}); compare runs over the same data")
        names = (first.settings.get("normalizer", {}).get("name"), run.settings.get("normalizer", {}).get("name"))
        if names[0] != names[1]:
            raise CompareError(f"{run.path}: normaliser {names[1]!r}, but {first.path} used {names[0]!r}; "
                               "scores under different normalisers are not comparable")
        for key, row in first.rows.items():
            if run.rows[key]["text"] != row["text"]:
                raise CompareError(f"{run.path}: the reference of {'/'.join(key)} differs from {first.path}'s")


def _unique_names(runs: Sequence[Run]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        if run.name in seen:
            seen[run.name] += 1
            run.name = f"{run.name} ({run.path.name})"
        else:
            seen[run.name] = 1


@dataclass
class Comparison:
    runs: list[Run]
    keys: list  # the utterances scored by every run, in the first run's order
    excluded: list  # utterances some run could not read
    datasets: list[str]
    summaries: dict  # run name -> dataset -> Summary
    groups: dict  # run name -> dataset -> [Summary per group]
    pairs: list  # (a, b, dataset or "all", a_better, b_better)


def compare(paths: Sequence[Path]) -> Comparison:
    if len(paths) < 2:
        raise CompareError("asr compare needs at least two report directories")
    runs = [load_run(p) for p in paths]
    check_comparable(runs)
    _unique_names(runs)
    order = list(runs[0].rows)
    excluded = [k for k in order if any(run.rows[k]["error"] is not None for run in runs)]
    keys = [k for k in order if k not in set(excluded)]
    datasets = list(dict.fromkeys(k[0] for k in keys))
    summaries, groups = {}, {}
    for run in runs:
        rows = [run.rows[k] for k in keys]
        by_dataset = datasets_of(rows)
        summaries[run.name] = {d: summarize(d, by_dataset[d]) for d in datasets}
        groups[run.name] = {d: [summarize(g, r) for g, r in by_key(by_dataset[d], "group").items()] for d in datasets}
    pairs = []
    for a, b in combinations(runs, 2):
        for dataset in [*datasets, "all"] if len(datasets) > 1 else datasets:
            chosen = [k for k in keys if dataset == "all" or k[0] == dataset]
            words = [row_counts(a.rows[k]).reference_length for k in chosen]
            result = paired_bootstrap([row_counts(a.rows[k]).errors for k in chosen],
                                      [row_counts(b.rows[k]).errors for k in chosen], words)
            pairs.append((a.name, b.name, dataset, result.a_better, result.b_better))
    return Comparison(runs, keys, excluded, datasets, summaries, groups, pairs)


def _mean_wer(summaries: dict) -> float:
    values = [s.wer for s in summaries.values() if s.utterances]
    return sum(values) / len(values) if values else math.nan


def wer_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["system", *[f"{d} WER%" for d in c.datasets], "mean WER%", "RTFx"]
    rows = []
    for run in c.runs:
        s = c.summaries[run.name]
        audio = sum(x.audio_seconds for x in s.values())
        decode = sum(x.decode_seconds for x in s.values())
        cells = [f"{_pct(s[d].wer)} ({_pct(s[d].interval.low)}-{_pct(s[d].interval.high)})" for d in c.datasets]
        rows.append([run.name, *cells, _pct(_mean_wer(s)), f"{audio / decode:.1f}" if decode > 0 else "-"])
    return header, rows


def group_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    labels = [(d, g.name) for d in c.datasets for g in c.groups[c.runs[0].name][d]]
    header = ["dataset/group", *[run.name for run in c.runs]]
    rows = []
    for d, g in labels:
        cells = []
        for run in c.runs:
            match = [s for s in c.groups[run.name][d] if s.name == g]
            cells.append(_pct(match[0].wer) if match else "-")
        rows.append([f"{d}/{g}", *cells])
    return header, rows


def pair_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["A", "B", "dataset", "P(A better)", "P(B better)"]
    return header, [[a, b, d, f"{pa:.3f}", f"{pb:.3f}"] for a, b, d, pa, pb in c.pairs]


def printed(c: Comparison) -> str:
    parts = [format_table(*wer_table(c))]
    header, rows = group_table(c)
    if len(rows) > 1:
        parts += ["", "WER% by group:", format_table(header, rows)]
    parts += ["", "paired bootstrap (same resampled utterances for both):", format_table(*pair_table(c))]
    if c.excluded:
        parts.append(f"{len(c.excluded)} utterance(s) left out of every run: some run could not read their audio")
    return "\n".join(parts)


def markdown(c: Comparison) -> str:
    parts = ["# Comparison", "", "WER% (95% CI) on the same utterances and normaliser "
             f"({c.runs[0].settings.get('normalizer', {}).get('name')}).", "", markdown_table(*wer_table(c)), ""]
    header, rows = group_table(c)
    if rows:
        parts += ["## By group", "", markdown_table(header, rows), ""]
    parts += ["## Paired bootstrap", "", "Share of bootstrap resamples (same utterances for both systems) in "
              "which each system has the lower corpus WER.", "", markdown_table(*pair_table(c)), "",
              "![WER by system](compare.png)", ""]
    parts += ["## Runs", ""] + [f"- {run.name}: `{run.path}`" for run in c.runs]
    if c.excluded:
        parts += ["", f"{len(c.excluded)} utterance(s) left out of every run (unreadable audio in some run): "
                  + ", ".join("/".join(k) for k in c.excluded)]
    return "\n".join(parts) + "\n"


def plot(c: Comparison, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [(d, None) for d in c.datasets]
    for d in c.datasets:
        if len(c.groups[c.runs[0].name][d]) > 1:
            labels += [(d, g.name) for g in c.groups[c.runs[0].name][d]]
    series = {}
    for run in c.runs:
        values: list = []
        for d, g in labels:
            if g is None:
                values.append(c.summaries[run.name][d])
            else:
                values.append(next((s for s in c.groups[run.name][d] if s.name == g), None))
        series[run.name] = values
    figure, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels) * len(c.runs) + 2), 4))
    _bars(ax, [d if g is None else f"{d}/{g}" for d, g in labels], series)
    ax.set_title("WER by system")
    _save_figure(figure, path)


def write(c: Comparison, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "compare.md", markdown(c))
    plot(c, out_dir / "compare.png")


__all__ = ["CompareError", "Comparison", "compare", "printed", "write"]
