"""The report of one evaluation run, from its per-utterance rows.

A row (one line of utterances.jsonl) holds everything the scores are computed from, so a report
can be rebuilt, merged from shards, resumed or compared from the rows alone. Its keys include
the Open ASR Leaderboard's manifest keys (audio_filepath, duration, text, pred_text), so its
tooling reads our files as they are:

    {"dataset", "id", "group", "speaker", "audio_filepath", "duration", "text", "pred_text",
     "text_normalized", "pred_text_normalized", "substitutions", "deletions", "insertions",
     "hits", "decode_seconds", "capped", "error"}

``error`` is null, or the one-line reason the audio could not be read; such a row is excluded
from every score and listed (and counted) in the summary.

Files of a report directory: utterances.jsonl, summary.json (settings and scores),
summary.md, errs-<dataset>.txt (icefall-style alignments and confusions), wer_by_group.png,
wer_by_duration.png.
"""
from __future__ import annotations

import json
import math
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..store.atomic import atomic_write, write_text_atomic
from ..text.normalize import no_normalize
from .metrics import CorpusScore, ErrorCounts, align_words, char_counts, error_rate, word_counts
from .stats import BOOTSTRAP_SAMPLES, CONFIDENCE, Interval, bootstrap_interval

ROWS_FILE = "utterances.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
WORST_UTTERANCES = 20
TOP_CONFUSIONS = 20
TIMING_KEYS = ("decode_seconds",)  # the only row keys that differ between two identical runs
SETTINGS_WIDTH = 110  # characters per printed settings line
DURATION_BINS_SECONDS = (0, 2, 4, 8, 16, 30, math.inf)


def make_row(dataset: str, utterance, duration: Optional[float], hypothesis: Optional[str],
             normalize, decode_seconds: float = 0.0, error: Optional[str] = None,
             capped: bool = False) -> dict:
    """One utterances.jsonl row: the texts, their normalised forms and the word counts."""
    reference = utterance.text
    row = {"dataset": dataset, "id": utterance.id, "group": utterance.group, "speaker": utterance.speaker,
           "audio_filepath": str(utterance.audio_path), "duration": None if duration is None else round(duration, 3),
           "text": reference, "pred_text": hypothesis}
    if error is None:
        ref_n, hyp_n = normalize(reference), normalize(hypothesis or "")
        counts = word_counts(ref_n, hyp_n)
        row.update(text_normalized=ref_n, pred_text_normalized=hyp_n, **counts.as_dict())
    else:
        row.update(text_normalized=None, pred_text_normalized=None, substitutions=None, deletions=None,
                   insertions=None, hits=None)
    row.update(decode_seconds=round(decode_seconds, 4), capped=capped, error=error)
    return row


def row_counts(row: dict) -> ErrorCounts:
    return ErrorCounts(row["substitutions"], row["deletions"], row["insertions"], row["hits"])


def read_rows(path: Path) -> list[dict]:
    """Rows of a utterances.jsonl; a torn last line (a crash mid-write) is ignored."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_rows(path: Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ---------------------------------------------------------------------------- scoring


@dataclass(frozen=True, kw_only=True)
class Summary(CorpusScore):
    """Scores of one set of rows (a dataset, or a group or speaker within one): the corpus
    counts (wer, cer, ser) plus what a report adds to them."""

    name: str
    raw_wer: float
    interval: Interval
    audio_seconds: float
    decode_seconds: float
    bad: list = field(default_factory=list)  # rows whose audio could not be read
    capped: int = 0

    @property
    def rtfx(self) -> float:
        """Seconds of audio per second of decoding (the leaderboard's RTFx)."""
        return self.audio_seconds / self.decode_seconds if self.decode_seconds > 0 else math.nan

    def as_dict(self) -> dict:
        return {"name": self.name, "utterances": self.utterances, "reference_words": self.words.reference_length,
                "wer": self.wer, "wer_ci95": list(self.interval), "raw_wer": self.raw_wer, "cer": self.cer,
                "ser": self.ser, **self.words.as_dict(), "bad_audio": len(self.bad), "capped": self.capped,
                "audio_seconds": round(self.audio_seconds, 3), "decode_seconds": round(self.decode_seconds, 3),
                "rtfx": self.rtfx}


def summarize(name: str, rows: Sequence[dict], samples: int = BOOTSTRAP_SAMPLES) -> Summary:
    scored = [r for r in rows if r["error"] is None]
    words, chars, raw_errors, raw_words, wrong = ErrorCounts(), ErrorCounts(), 0, 0, 0
    for r in scored:
        counts = row_counts(r)
        words += counts
        wrong += counts.errors > 0
        chars += char_counts(r["text_normalized"], r["pred_text_normalized"])
        raw = word_counts(no_normalize(r["text"]), no_normalize(r["pred_text"] or ""))
        raw_errors, raw_words = raw_errors + raw.errors, raw_words + raw.reference_length
    interval = bootstrap_interval([row_counts(r).errors for r in scored],
                                  [row_counts(r).reference_length for r in scored], samples)
    return Summary(words=words, chars=chars, utterances=len(scored), sentence_errors=wrong, name=name,
                   raw_wer=error_rate(raw_errors, raw_words), interval=interval,
                   audio_seconds=sum(r["duration"] or 0.0 for r in scored),
                   decode_seconds=sum(r["decode_seconds"] for r in scored),
                   bad=[r for r in rows if r["error"] is not None], capped=sum(bool(r["capped"]) for r in scored))


def by_key(rows: Sequence[dict], key: str) -> dict[str, list[dict]]:
    """Rows split by "group" or "speaker" (in first-seen order); {} when no row has the key."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.get(key) is not None:
            out.setdefault(str(r[key]), []).append(r)
    return out


def datasets_of(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["dataset"], []).append(r)
    return out


@dataclass
class Report:
    settings: dict
    rows: list[dict]
    datasets: list[Summary]
    groups: dict[str, list[Summary]]  # dataset -> its groups' summaries (when it has groups)
    speakers: dict[str, list[Summary]]

    @property
    def mean(self) -> dict:
        """Unweighted means over datasets (the leaderboard's average), RTFx over all audio."""
        scored = [d for d in self.datasets if d.utterances]
        if not scored:
            return {"wer": math.nan, "cer": math.nan, "raw_wer": math.nan, "rtfx": math.nan}
        audio = sum(d.audio_seconds for d in scored)
        decode = sum(d.decode_seconds for d in scored)
        return {"wer": sum(d.wer for d in scored) / len(scored), "cer": sum(d.cer for d in scored) / len(scored),
                "raw_wer": sum(d.raw_wer for d in scored) / len(scored),
                "rtfx": audio / decode if decode > 0 else math.nan}

    @property
    def bad(self) -> list[dict]:
        return [r for r in self.rows if r["error"] is not None]


def build_report(rows: list[dict], settings: dict, samples: int = BOOTSTRAP_SAMPLES) -> Report:
    datasets, groups, speakers = [], {}, {}
    for name, dataset_rows in datasets_of(rows).items():
        datasets.append(summarize(name, dataset_rows, samples))
        for key, into in (("group", groups), ("speaker", speakers)):
            parts = by_key(dataset_rows, key)
            if parts:
                into[name] = [summarize(part, part_rows, samples) for part, part_rows in parts.items()]
    return Report(settings, rows, datasets, groups, speakers)


# ---------------------------------------------------------------------------- text output


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else ("inf" if math.isinf(x) else f"{100 * x:.2f}")


def _rtfx(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}"


TABLE_COLUMNS = ("dataset", "utts", "words", "WER%", "95% CI", "raw WER%", "CER%", "SER%", "sub", "del", "ins",
                 "hits", "bad", "RTFx")


def table_rows(summaries: Sequence[Summary]) -> list[list[str]]:
    return [[s.name, str(s.utterances), str(s.words.reference_length), _pct(s.wer),
             f"{_pct(s.interval.low)}-{_pct(s.interval.high)}", _pct(s.raw_wer), _pct(s.cer), _pct(s.ser),
             str(s.words.substitutions), str(s.words.deletions), str(s.words.insertions), str(s.words.hits),
             str(len(s.bad)), _rtfx(s.rtfx)] for s in summaries]


def mean_row(report: Report) -> list[str]:
    m = report.mean
    return ["mean (unweighted)", "", "", _pct(m["wer"]), "", _pct(m["raw_wer"]), _pct(m["cer"]), "", "", "", "",
            "", str(len(report.bad)), _rtfx(m["rtfx"])]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def settings_lines(settings: dict) -> list[str]:
    def flat(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from flat(f"{prefix}.{k}" if prefix else k, v)
        else:
            yield f"{prefix}: {value}"

    return list(flat("", settings))


def printed_summary(report: Report) -> str:
    """What `asr evaluate` prints: the table (each dataset, then its groups indented), the bad
    audio, the settings."""
    rows = []
    for summary in report.datasets:
        rows += table_rows([summary])
        groups = report.groups.get(summary.name, [])
        if len(groups) > 1:
            rows += [["  " + row[0], *row[1:]] for row in table_rows(groups)]
    if len(report.datasets) > 1:
        rows.append(mean_row(report))
    parts = [format_table(TABLE_COLUMNS, rows)]
    if report.bad:
        parts.append(f"{len(report.bad)} utterance(s) excluded, their audio could not be read:")
        parts += [f"  {r['dataset']}/{r['id']}: {r['error']}" for r in report.bad]
    parts.append(f"WER% on normalised text ({report.settings.get('normalizer', {}).get('name')}), raw WER% on the "
                 f"text as written; 95% CI: bootstrap over utterances ({BOOTSTRAP_SAMPLES} resamples)")
    parts.append(textwrap.fill("settings: " + "; ".join(settings_lines(report.settings)), SETTINGS_WIDTH,
                               subsequent_indent="  ", break_on_hyphens=False))
    return "\n".join(parts)


def aligned_text(row: dict) -> str:
    """icefall's per-utterance form: correct words as they are, errors as (ref->hyp), * for none."""
    out = []
    for op, ref, hyp in align_words(row["text_normalized"], row["pred_text_normalized"]):
        out.append(ref if op == "=" else f"({ref or '*'}->{hyp or '*'})")
    return " ".join(out)


def confusions(rows: Sequence[dict]) -> tuple[Counter, Counter, Counter, dict]:
    """(substitutions (ref, hyp), deletions, insertions, per-word [corr, errs, in ref, in hyp])."""
    subs, dels, ins = Counter(), Counter(), Counter()
    words: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        if row["error"] is not None:
            continue
        for op, ref, hyp in align_words(row["text_normalized"], row["pred_text_normalized"]):
            if ref is not None:
                words[ref][2] += 1
            if hyp is not None:
                words[hyp][3] += 1
            if op == "=":
                words[ref][0] += 1
            elif op == "S":
                subs[(ref, hyp)] += 1
                words[ref][1] += 1
                words[hyp][1] += 1
            elif op == "D":
                dels[ref] += 1
                words[ref][1] += 1
            else:
                ins[hyp] += 1
                words[hyp][1] += 1
    return subs, dels, ins, words


def errs_text(summary: Summary, rows: Sequence[dict]) -> str:
    """An icefall errs-*.txt: totals, per-utterance alignments, ranked confusions, per-word stats."""
    w = summary.words
    lines = [f"%WER = {_pct(summary.wer)}",
             f"Errors: {w.insertions} insertions, {w.deletions} deletions, {w.substitutions} substitutions, "
             f"over {w.reference_length} reference words ({w.hits} correct)",
             "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, INSERTIONS:, "
             "PER-WORD STATS:", "", "PER-UTT DETAILS: corr or (ref->hyp)"]
    for row in rows:
        if row["error"] is None:
            lines.append(f"{row['id']}:\t{aligned_text(row)}")
        else:
            lines.append(f"{row['id']}:\tEXCLUDED ({row['error']})")
    subs, dels, ins, words = confusions(rows)
    lines += ["", "SUBSTITUTIONS: count ref -> hyp"]
    lines += [f"{n}   {r} -> {h}" for (r, h), n in sorted(subs.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "DELETIONS: count ref"]
    lines += [f"{n}   {r}" for r, n in sorted(dels.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "INSERTIONS: count hyp"]
    lines += [f"{n}   {h}" for h, n in sorted(ins.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp"]
    ranked = sorted(words.items(), key=lambda kv: (-kv[1][1], kv[0]))
    lines += [f"{word}   {c} {e} {r} {h}" for word, (c, e, r, h) in ranked]
    return "\n".join(lines) + "\n"


def _utterance_wer(row: dict) -> float:
    return row_counts(row).rate


def worst(rows: Sequence[dict], n: int = WORST_UTTERANCES) -> list[dict]:
    scored = [r for r in rows if r["error"] is None and row_counts(r).errors > 0]
    return sorted(scored, key=lambda r: (-row_counts(r).errors, -_utterance_wer(r), r["id"]))[:n]


def markdown_summary(report: Report) -> str:
    rows = table_rows(report.datasets)
    if len(report.datasets) > 1:
        rows.append(mean_row(report))
    parts = [f"# Evaluation: {report.settings.get('system', '')}", "", markdown_table(TABLE_COLUMNS, rows), "",
             f"WER on normalised text ({report.settings.get('normalizer', {}).get('name')}); raw WER on the text as "
             f"written; 95% CI by bootstrap over utterances ({BOOTSTRAP_SAMPLES} resamples); RTFx = audio seconds / "
             "decoding seconds, warm-up excluded.", "", "![WER by group](wer_by_group.png)",
             "![WER by duration](wer_by_duration.png)", "", "## Settings", ""]
    parts += [f"- {line}" for line in settings_lines(report.settings)]
    if report.bad:
        parts += ["", f"## Excluded: {len(report.bad)} utterance(s) whose audio could not be read", ""]
        parts += [f"- `{r['dataset']}/{r['id']}`: {r['error']}" for r in report.bad]
    dataset_rows = datasets_of(report.rows)
    for summary in report.datasets:
        name = summary.name
        parts += ["", f"## {name}", ""]
        for title, parts_of in (("group", report.groups), ("speaker", report.speakers)):
            if name in parts_of and len(parts_of[name]) > 1:
                parts += [f"### By {title}", "", markdown_table((title, *TABLE_COLUMNS[1:]), table_rows(parts_of[name])), ""]
        bad_ones = worst(dataset_rows[name])
        if bad_ones:
            parts += [f"### The {len(bad_ones)} worst utterances", ""]
            for r in bad_ones:
                c = row_counts(r)
                parts.append(f"- `{r['id']}` ({c.errors} errors / {c.reference_length} words): {aligned_text(r)}")
            parts.append("")
        subs, dels, ins, _ = confusions(dataset_rows[name])
        if subs or dels or ins:
            parts += ["### Top confusions", "", "| substitution | n | deletion | n | insertion | n |", "|---|---|---|---|---|---|"]
            columns = [[(f"{r} -> {h}", n) for (r, h), n in subs.most_common(TOP_CONFUSIONS)],
                       dels.most_common(TOP_CONFUSIONS), ins.most_common(TOP_CONFUSIONS)]
            for i in range(max(len(c) for c in columns)):
                cells = []
                for column in columns:
                    cells += [str(column[i][0]), str(column[i][1])] if i < len(column) else ["", ""]
                parts.append("| " + " | ".join(cells) + " |")
        parts.append(f"\nAlignments of every utterance: errs-{name}.txt")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- plots


def _save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight"))
    plt.close(figure)


def _bars(ax, labels, summaries_by_series: dict[str, list[Optional[Summary]]]) -> None:
    """Grouped bars of WER% with 95% CI error bars: one bar per series at each label."""
    import numpy as np

    n = max(1, len(summaries_by_series))
    width = 0.8 / n
    x = np.arange(len(labels))
    for i, (series, summaries) in enumerate(summaries_by_series.items()):
        wer = [100 * s.wer if s and math.isfinite(s.wer) else 0.0 for s in summaries]
        low = [max(0.0, w - 100 * s.interval.low) if s and math.isfinite(s.interval.low) else 0.0 for w, s in zip(wer, summaries)]
        high = [max(0.0, 100 * s.interval.high - w) if s and math.isfinite(s.interval.high) else 0.0 for w, s in zip(wer, summaries)]
        ax.bar(x + (i - (n - 1) / 2) * width, wer, width, yerr=[low, high], capsize=3, label=series)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("WER % (95% CI)")
    if n > 1:
        ax.legend()


def plot_by_group(report: Report, path: Path) -> None:
    """WER per dataset, and per group within datasets that have groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, summaries = [], []
    for s in report.datasets:
        groups = report.groups.get(s.name, [])
        if len(groups) > 1:
            labels += [f"{s.name}/{g.name}" for g in groups]
            summaries += groups
        else:
            labels.append(s.name)
            summaries.append(s)
    figure, ax = plt.subplots(figsize=(max(5, 0.8 * len(labels) + 2), 4))
    _bars(ax, labels, {report.settings.get("system", "system"): summaries})
    ax.set_title(f"WER by group: {report.settings.get('system', '')}")
    _save_figure(figure, path)


def plot_by_duration(report: Report, path: Path) -> None:
    """Per-utterance WER against duration (dots), and the corpus WER of duration bins (line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in report.rows if r["error"] is None and row_counts(r).reference_length > 0]
    figure, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["duration"] for r in scored], [100 * _utterance_wer(r) for r in scored], s=10, alpha=0.5,
               label="utterance")
    centres, rates = [], []
    for low, high in zip(DURATION_BINS_SECONDS, DURATION_BINS_SECONDS[1:]):
        in_bin = [r for r in scored if low <= r["duration"] < high]
        if in_bin:
            total = sum((row_counts(r) for r in in_bin), ErrorCounts())
            centres.append(sum(r["duration"] for r in in_bin) / len(in_bin))
            rates.append(100 * total.rate)
    ax.plot(centres, rates, "o-", color="black", label="corpus WER of bin")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("WER %")
    ax.set_title(f"WER by duration: {report.settings.get('system', '')}")
    ax.legend()
    _save_figure(figure, path)


# ---------------------------------------------------------------------------- the directory


def summary_json(report: Report) -> dict:
    return {"settings": report.settings, "datasets": [s.as_dict() for s in report.datasets], "mean": report.mean,
            "groups": {k: [s.as_dict() for s in v] for k, v in report.groups.items()},
            "speakers": {k: [s.as_dict() for s in v] for k, v in report.speakers.items()},
            "bad_audio": [{"dataset": r["dataset"], "id": r["id"], "audio_filepath": r["audio_filepath"],
                           "error": r["error"]} for r in report.bad],
            "bootstrap": {"samples": BOOTSTRAP_SAMPLES, "confidence": CONFIDENCE}}


def _json_safe(value):
    """NaN and infinity are not JSON: written as null and the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else "inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(report: Report, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows(out_dir / ROWS_FILE, report.rows)
    write_text_atomic(out_dir / SUMMARY_JSON, json.dumps(_json_safe(summary_json(report)), indent=2) + "\n")
    rows_of = datasets_of(report.rows)
    for summary in report.datasets:
        write_text_atomic(out_dir / f"errs-{summary.name}.txt", errs_text(summary, rows_of[summary.name]))
    write_text_atomic(out_dir / SUMMARY_MD, markdown_summary(report))
    plot_by_group(report, out_dir / "wer_by_group.png")
    plot_by_duration(report, out_dir / "wer_by_duration.png")


__all__ = ["ROWS_FILE", "Report", "Summary", "TIMING_KEYS", "build_report", "make_row", "printed_summary",
           "read_rows", "summarize", "write_report", "write_rows"]
