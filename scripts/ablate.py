"""The seed-component ablation: every row trained from scratch at equal compute (same recipe,
data, steps and seeds), then scored with `asr evaluate` on the same utterances and compared
with the vanilla row of the same seed by `asr compare`'s paired bootstrap (and also: dynamic
base adjustment with the same rotary run at a fixed base, all components with rotary and dynamic
base alone).

    .venv/bin/python scripts/ablate.py --out out/ablation            # the whole table (resumable)
    .venv/bin/python scripts/ablate.py --out out/ablation --rows vanilla rotary --seeds 1

Rows (each one change to the vanilla Whisper blocks, then all of them together):

    vanilla               Whisper's blocks: sinusoidal encoder / learned decoder positions, MHA
    rotary_plain          + rotary embeddings alone (no Givens rotations, no orthogonal matrix)
    rotary                + rotary with learned Givens rotations and an orthogonal matrix (fixed base)
    rotary+dynamic_base   + the same rotary with dynamic base adjustment
    relative_bias         + relative position bias
    learned_sinusoidal    + learned sinusoidal position embeddings
    hybrid                + hybrid local+global attention in the encoder
    dynconv               + dynamic-convolution attention in the decoder
    all                   every seed component, with dynamic base adjustment

Every run lives in OUT/runs/ROW-seedN. Killed and started again, the script skips finished runs
and resumes an interrupted one from its last checkpoint (`asr train --resume`); a finished run
is one with OUT/runs/ROW-seedN/result.json. With --keep DIR each finished run's small files
(result.json, the per-utterance evaluation, metrics.jsonl, config.yaml, training.png; no
weights) are also copied to DIR/ROW-seedN and a run found there counts as finished, so a table
that takes longer than one machine's session can be committed run by run and completed later. At the end it writes OUT/ablation.md, OUT/ablation.json
OUT/ablation.png (WER by row, one point per seed) and OUT/ablation_curves.png (training loss of
every run), prints the table and, as its last line,
one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from asr.hardware import describe_cpu

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "recipes/synth_en/conf/ablation.yaml"
# the build conf/ablation.yaml trains on (prepare.py --out out/synth_grammar16 --hours 16 --text grammar)
DEFAULT_DATA = ["out/synth_grammar16/dev.jsonl", "out/synth_grammar16/test-seen-voice.jsonl",
                "out/synth_grammar16/test-unseen-voice.jsonl"]
ROTARY = ["model.audio.rotary=true", "model.text.rotary=true",
          "model.audio.rotary_givens=true", "model.text.rotary_givens=true",
          "model.audio.rotary_rotation=true", "model.text.rotary_rotation=true"]
ROTARY_PLAIN = ["model.audio.rotary=true", "model.text.rotary=true",
                "model.audio.rotary_givens=false", "model.text.rotary_givens=false",
                "model.audio.rotary_rotation=false", "model.text.rotary_rotation=false"]
ROWS = {
    "vanilla": ("Whisper blocks", []),
    "rotary_plain": ("+ rotary alone (no Givens rotations, no orthogonal matrix), fixed base", ROTARY_PLAIN),
    "rotary": ("+ rotary, Givens + orthogonal rotation, fixed base", ROTARY),
    "rotary+dynamic_base": ("+ rotary as above, dynamic base adjustment", [*ROTARY, "dynamic_base.enabled=true"]),
    "relative_bias": ("+ relative position bias", ["model.audio.relative_bias=true", "model.text.relative_bias=true"]),
    "learned_sinusoidal": ("+ learned sinusoidal embeddings",
                           ["model.audio.positions=learned_sinusoidal", "model.text.positions=learned_sinusoidal"]),
    "hybrid": ("+ hybrid local+global attention (encoder)", ["model.audio.attention=hybrid"]),
    "dynconv": ("+ dynamic-convolution attention (decoder)", ["model.text.attention=dynconv"]),
    "all": ("all seed components + dynamic base", ["model.preset=seed-cpu-small", "dynamic_base.enabled=true"]),
}
MAIN_ROWS = ("vanilla", "all")  # the rows with the most seeds: they set the seed-to-seed spread
REFERENCE = "vanilla"
# rows also paired with another row of the same seed: the learned rotations against plain rotary,
# dynamic base adjustment against the same rotary run with a fixed base (one switch apart), and
# all components against rotary with dynamic base alone (what relative bias, learned sinusoidal,
# hybrid and dynconv add on top of it)
ALSO_AGAINST = {"rotary": "rotary_plain", "rotary+dynamic_base": "rotary", "all": "rotary+dynamic_base"}
CONFIDENT = 0.95  # paired-bootstrap probability for "better" / "worse" on a seed


def asr_command(*args) -> list[str]:
    return [sys.executable, "-m", "asr", *map(str, args)]


def run_logged(command: list[str], log: Path) -> str:
    """Run a command with its output appended to `log`; returns its standard output."""
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=f, text=True)
        f.write(result.stdout)
    if result.returncode != 0:
        raise SystemExit(f"ablate: {' '.join(command[2:5])} ... failed (exit {result.returncode}); see {log}")
    return result.stdout


def jobs(rows: list[str], main_seeds: int, other_seeds: int,
         seeds_of: dict[str, int] | None = None) -> list[tuple[str, int]]:
    """Seed 0 of every row first, then seed 1, ...: a partial table already covers every row.
    `seeds_of` overrides the number of seeds of single rows (e.g. {"rotary": 3})."""
    wanted = {row: main_seeds if row in MAIN_ROWS else other_seeds for row in rows}
    wanted.update({row: n for row, n in (seeds_of or {}).items() if row in wanted})
    return [(row, seed) for seed in range(max(wanted.values(), default=0)) for row in rows if seed < wanted[row]]


KEPT_FILES = ("metrics.jsonl", "config.yaml", "training.png", "diagnosis.json")
DIAGNOSIS_UTTERANCES = 100  # of the first data set: CTC CER and the decoder's use of the audio


def keep_run(result: dict, run_dir: Path, kept: Path) -> dict:
    """Copy a finished run's small files to `kept` (written last: result.json marks it whole)."""
    import shutil

    partial = kept.with_name(kept.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copytree(run_dir / "eval", partial / "eval")
    for name in KEPT_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, partial / name)
    result = {**result, "run_dir": str(kept)}
    (partial / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(kept, ignore_errors=True)
    partial.rename(kept)
    return result


def train_and_score(row: str, seed: int, args) -> dict:
    run_dir = args.out / "runs" / f"{row}-seed{seed}"
    result_file = run_dir / "result.json"
    kept = args.keep / f"{row}-seed{seed}" if args.keep else None
    if kept is not None and (kept / "result.json").exists():
        return same_scoring(json.loads((kept / "result.json").read_text()), kept, args)
    if result_file.exists():
        result = same_scoring(json.loads(result_file.read_text()), run_dir, args)
        return keep_run(result, run_dir, kept) if kept is not None else result
    run_dir.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs" / f"{row}-seed{seed}.log"
    started = time.time()
    if not (run_dir / "final" / "model.safetensors").exists():
        if (run_dir / "config.yaml").exists():  # interrupted: continue from its last checkpoint
            command = asr_command("train", "--resume", run_dir)
        else:
            overrides = [f"run.seed={seed}", *ROWS[row][1], *args.set]
            command = asr_command("train", args.config, "--run-dir", run_dir,
                                  *[x for o in overrides for x in ("--set", o)])
        run_logged(command, log)
    run_logged(asr_command("evaluate", "--model", run_dir / "final", "--data", *args.data, "--limit", args.limit,
                           "--without-timestamps", "--batch-size", 16, "--quiet", "--resume",
                           "--ctc-weight", args.ctc_weight, "--output-dir", run_dir / "eval"), log)
    run_logged(asr_command("plot", run_dir), log)
    diagnose(run_dir, args.data[0], log)
    result = summarise_run(row, seed, run_dir)
    result["scoring"] = scoring(args)
    result["wall_seconds_this_invocation"] = round(time.time() - started, 1)
    result_file.write_text(json.dumps(result, indent=1) + "\n")
    return keep_run(result, run_dir, kept) if kept is not None else result


# How runs kept before the scoring was recorded were decoded: greedy, the attention decoder alone,
# with the first-step bug fixed on 2026-12-03 (RESULTS.md, "Decoding"). A table never mixes them
# with runs decoded otherwise.
LEGACY_SCORING = "greedy, attention decoder only, before the first-step fix"


def scoring(args) -> str:
    """How this invocation decodes the runs it scores (recorded in every result)."""
    return "greedy, " + (f"joint CTC/attention, CTC weight {args.ctc_weight:g}" if args.ctc_weight
                         else "attention decoder only")


def same_scoring(result: dict, where: Path, args) -> dict:
    """A finished run, provided it was decoded as this invocation decodes (else one clear error:
    its weights may be gone, so it cannot be rescored here)."""
    found = result.get("scoring", LEGACY_SCORING)
    if found != scoring(args):
        raise SystemExit(f"ablate: {where} was scored \"{found}\", not \"{scoring(args)}\" as asked; "
                         "use another --out/--keep folder for a table decoded this way")
    return result


def diagnose(run_dir: Path, data: str, log: Path) -> None:
    """What the WER hides while a short run is still above 100 %: the encoder read through the
    CTC head (greedy CER) and how much the decoder uses the audio (its loss with each clip's own
    audio against another clip's), from the last checkpoint (scripts/diagnose_checkpoint.py)."""
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    if not checkpoints or not (checkpoints[-1] / "tensors.safetensors").exists():
        return  # no CTC head to read (loss.ctc_weight 0): the table shows "-"
    command = [sys.executable, str(REPO / "scripts/diagnose_checkpoint.py"), str(checkpoints[-1]), "--data", data,
               "--limit", str(DIAGNOSIS_UTTERANCES)]
    last_line = run_logged(command, log).strip().splitlines()[-1]  # the script's JSON figures
    (run_dir / "diagnosis.json").write_text(last_line + "\n")


def summarise_run(row: str, seed: int, run_dir: Path) -> dict:
    from safetensors import safe_open

    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [m for m in metrics if m.get("loss") is not None]
    step_seconds = [m["audio_seconds"] / m["audio_s_per_s"] for m in steps if m.get("audio_s_per_s")]
    validations = [m for m in metrics if "dev_wer" in m]
    with safe_open(str(run_dir / "final" / "model.safetensors"), framework="pt") as f:
        parameters = sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    tail = [m["loss"] for m in steps[-50:]]
    diagnosis = run_dir / "diagnosis.json"
    diagnosis = json.loads(diagnosis.read_text()) if diagnosis.exists() else {}
    return {
        "row": row, "seed": seed, "run_dir": str(run_dir), "steps": steps[-1]["step"] if steps else 0,
        "parameters": parameters,
        "median_step_seconds": statistics.median(step_seconds) if step_seconds else None,
        "train_seconds": round(steps[-1]["time"] - steps[0]["time"], 1) if len(steps) > 1 else None,
        "final_train_loss": sum(tail) / len(tail) if tail else None,
        "last_dev_loss": validations[-1].get("dev_loss") if validations else None,
        "rotary_base_final": steps[-1].get("rotary_base") if steps else None,
        "ctc_cer": diagnosis.get("ctc_cer"),
        "cpu": run_cpu(run_dir),
        "decoder_loss_own_audio": diagnosis.get("dev_loss_own_audio"),
        "decoder_loss_swapped_audio": diagnosis.get("dev_loss_swapped_audio"),
        "datasets": {d["name"]: {"wer": d["wer"], "wer_ci95": d["wer_ci95"], "cer": d["cer"],
                                 "utterances": d["utterances"]} for d in summary["datasets"]},
    }


def run_cpu(run_dir: Path) -> str:
    """The CPU a run was trained and scored on, as its evaluation recorded it (model name and
    torch's kernel level, e.g. "AMD EPYC, AVX512"): the table is built over several sessions,
    whose CPUs differ, and step times only compare on one CPU."""
    settings = Path(run_dir) / "eval" / "settings.json"
    environment = json.loads(settings.read_text()).get("environment", {}) if settings.exists() else {}
    return ", ".join(str(environment[k]) for k in ("cpu", "cpu_capability") if environment.get(k)) or "unknown"


def result_cpu(result: dict) -> str:
    """result["cpu"], or for runs kept before it was recorded, read from the kept evaluation."""
    return result.get("cpu") or run_cpu(Path(result["run_dir"]))


def step_ratios(results: list[dict]) -> dict:
    """(row, seed) -> the run's median step time over the mean of vanilla's on the same CPU
    (None where no vanilla run shares its CPU)."""
    vanilla: dict[str, list[float]] = {}
    for r in results:
        if r["row"] == REFERENCE and r["median_step_seconds"]:
            vanilla.setdefault(result_cpu(r), []).append(r["median_step_seconds"])
    out = {}
    for r in results:
        same_cpu = vanilla.get(result_cpu(r))
        out[(r["row"], r["seed"])] = (r["median_step_seconds"] / statistics.mean(same_cpu)
                                      if same_cpu and r["median_step_seconds"] else None)
    return out


def paired_against(results: list[dict], reference_row: str = REFERENCE, rows=None) -> dict:
    """(row, seed) -> P(row better than `reference_row` of the same seed), data sets pooled: by
    WER (`asr compare`'s paired bootstrap) and by CER (the same bootstrap over character errors,
    which separates short runs whose WER is still near 100%). `rows`: the rows to pair (all)."""
    from asr.evaluate.compare import compare
    from asr.evaluate.metrics import char_counts
    from asr.evaluate.stats import paired_bootstrap

    reference = {r["seed"]: r for r in results if r["row"] == reference_row}
    out = {}
    for r in results:
        if r["row"] == reference_row or r["seed"] not in reference or (rows is not None and r["row"] not in rows):
            continue
        paths = [Path(reference[r["seed"]]["run_dir"]) / "eval", Path(r["run_dir"]) / "eval"]
        comparison = compare(paths)
        pooled = [p for p in comparison.pairs if p[2] == "all"] or comparison.pairs
        _, _, _, reference_better, row_better = pooled[-1]
        chars = [[char_counts(run.rows[k]["text_normalized"], run.rows[k]["pred_text_normalized"] or "")
                  for k in comparison.keys] for run in comparison.runs]  # the runs compare() read
        by_cer = paired_bootstrap([c.errors for c in chars[0]], [c.errors for c in chars[1]],
                                  [c.reference_length for c in chars[0]])
        out[(r["row"], r["seed"])] = {"p_better": row_better, "p_worse": reference_better,
                                      "p_better_cer": by_cer.b_better, "p_worse_cer": by_cer.a_better}
    return out


def mean_present(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def mean_rate(result: dict, metric: str = "wer") -> float:
    """The unweighted mean over data sets of one run's WER (or CER)."""
    values = [d[metric] for d in result["datasets"].values()]
    return sum(values) / len(values)


def table(results: list[dict], rows: list[str]) -> dict:
    paired = paired_against(results)
    ratios = step_ratios(results)
    datasets = list(results[0]["datasets"]) if results else []
    by_row = {row: [r for r in results if r["row"] == row] for row in rows}
    summary = {"datasets": datasets, "rows": []}
    for metric in ("wer", "cer"):
        spreads = [max(mean_rate(r, metric) for r in runs) - min(mean_rate(r, metric) for r in runs)
                   for row, runs in by_row.items() if row in MAIN_ROWS and len(runs) > 1]
        summary[f"seed_spread_mean_{metric}"] = max(spreads) if spreads else None
        summary[f"reference_mean_{metric}"] = (statistics.mean(mean_rate(r, metric) for r in by_row[REFERENCE])
                                               if by_row.get(REFERENCE) else None)
    ctc_spreads = [max(values) - min(values) for row, runs in by_row.items() if row in MAIN_ROWS
                   for values in [[r["ctc_cer"] for r in runs if r.get("ctc_cer") is not None]] if len(values) > 1]
    summary["seed_spread_ctc_cer"] = max(ctc_spreads) if ctc_spreads else None
    summary["reference_ctc_cer"] = mean_present(r.get("ctc_cer") for r in by_row.get(REFERENCE, []))
    summary["cpus"] = sorted({result_cpu(r) for r in results})
    for row in rows:
        runs = by_row[row]
        if not runs:
            continue
        line = {"row": row, "what": ROWS[row][0], "seeds": len(runs),
                "wer": {d: statistics.mean(r["datasets"][d]["wer"] for r in runs) for d in datasets},
                "wer_by_seed": {d: [r["datasets"][d]["wer"] for r in runs] for d in datasets},
                "cer": {d: statistics.mean(r["datasets"][d]["cer"] for r in runs) for d in datasets},
                "mean_wer": statistics.mean(mean_rate(r) for r in runs),
                "mean_cer": statistics.mean(mean_rate(r, "cer") for r in runs),
                "parameters": runs[0]["parameters"],
                "step_seconds": statistics.mean(r["median_step_seconds"] for r in runs if r["median_step_seconds"]),
                "step_vs_vanilla": mean_present(ratios[(row, r["seed"])] for r in runs),
                "cpu_by_seed": {r["seed"]: result_cpu(r) for r in runs},
                "dev_loss": mean_present(r["last_dev_loss"] for r in runs),
                "ctc_cer": mean_present(r.get("ctc_cer") for r in runs),
                "ctc_cer_by_seed": [r.get("ctc_cer") for r in runs],
                "audio_use": mean_present(r["decoder_loss_swapped_audio"] - r["decoder_loss_own_audio"]
                                          for r in runs if r.get("decoder_loss_own_audio") is not None),
                "paired": [paired.get((row, r["seed"])) for r in runs if (row, r["seed"]) in paired]}
        line["verdict"] = verdicts(line, summary)
        summary["rows"].append(line)
    summary["against"] = [against_other_row(summary, results, row, other)
                           for row, other in ALSO_AGAINST.items() if row in rows and other in rows
                           and by_row[row] and by_row[other]]
    summary["per_run"] = [run_line(r, paired.get((r["row"], r["seed"])), ratios[(r["row"], r["seed"])]) for r in results]
    return summary


def against_other_row(summary: dict, results: list[dict], row: str, other: str) -> dict:
    """`row` weighed against `other` (not vanilla) with the same rule and the same seed spread:
    the paired test per seed against `other` of that seed, the change of the means."""
    lines = {line["row"]: line for line in summary["rows"]}
    paired = paired_against(results, other, rows=[row])
    seeds = [r["seed"] for r in results if r["row"] == row]
    line = {**lines[row], "paired": [paired[(row, s)] for s in seeds if (row, s) in paired]}
    versus = {**summary, "reference_mean_wer": lines[other]["mean_wer"], "reference_mean_cer": lines[other]["mean_cer"],
              "reference_ctc_cer": lines[other]["ctc_cer"]}
    return {"row": row, "against": other, "paired": line["paired"],
            "change": {m: line[m] - lines[other][m] if line[m] is not None and lines[other][m] is not None else None
                       for m in ("mean_wer", "mean_cer", "ctc_cer", "dev_loss")},
            "verdict": verdicts(line, versus)}


# Where the table reads each run's training loss (the mean of the LOSS_WINDOW steps up to each):
# a run from scratch sits on a plateau near 3.2 nats (the text without the audio) until it starts
# reading, and at 1200 steps whether and when it leaves it decides most of its WER.
LOSS_STEPS = (200, 400, 800)
LOSS_WINDOW = 50


def training_loss_at(run_dir: Path, steps=LOSS_STEPS, window: int = LOSS_WINDOW) -> dict[int, float | None]:
    """{step: mean training loss of the `window` optimiser steps up to it} from the run's
    metrics.jsonl (None where the run has no such steps, or no metrics)."""
    path = Path(run_dir) / "metrics.jsonl"
    losses = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    losses = [(m["step"], m["loss"]) for m in losses if m.get("loss") is not None]
    out = {}
    for step in steps:
        near = [loss for s, loss in losses if step - window < s <= step]
        out[step] = sum(near) / len(near) if near else None
    return out


def run_line(result: dict, paired: dict | None, step_ratio: float | None) -> dict:
    """One run of the table, with the bootstrap interval of each data set's WER."""
    return {"run": f"{result['row']}-seed{result['seed']}", "cpu": result_cpu(result),
            "train_loss_at": {**training_loss_at(result["run_dir"]), "end": result.get("final_train_loss")},
            "train_seconds": result.get("train_seconds"), "step_seconds": result["median_step_seconds"],
            "step_vs_vanilla": step_ratio,
            "datasets": {d: {"wer": v["wer"], "wer_ci95": v["wer_ci95"], "cer": v["cer"]}
                         for d, v in result["datasets"].items()},
            "ctc_cer": result.get("ctc_cer"), "rotary_base_final": result.get("rotary_base_final"),
            "paired": paired}


def verdicts(line: dict, summary: dict) -> str:
    """The WER, CER and CTC CER verdicts of one row against summary's reference, in one line."""
    return "; ".join([*(f"{metric.upper()}: {verdict(line, summary, metric)}" for metric in ("wer", "cer")),
                      f"CTC CER: {ctc_verdict(line, summary)}"])


def verdict(line: dict, summary: dict, metric: str) -> str:
    """helps / hurts only when every seed's paired test is confident and the mean change is
    larger than the seed-to-seed spread of the main rows; otherwise no clear effect; undecided
    while that spread is unmeasured (one seed of vanilla and all)."""
    reference, spread = summary[f"reference_mean_{metric}"], summary[f"seed_spread_mean_{metric}"]
    if line["row"] == REFERENCE:
        return "reference"
    if reference is None:
        return "no reference row in this table"
    change = line[f"mean_{metric}"] - reference
    suffix = "" if metric == "wer" else "_cer"
    paired = line["paired"]
    better = paired and all(p["p_better" + suffix] >= CONFIDENT for p in paired)
    worse = paired and all(p["p_worse" + suffix] >= CONFIDENT for p in paired)
    if spread is None:  # one seed of the main rows so far: nothing to weigh the change against
        return f"undecided: seed spread not yet measured ({100 * change:+.2f} points)"
    beyond_spread = abs(change) > spread
    if better and beyond_spread:
        return f"helps ({100 * change:+.2f} points)"
    if worse and beyond_spread:
        return f"hurts ({100 * change:+.2f} points)"
    return f"no clear effect ({100 * change:+.2f} points)"


def ctc_verdict(line: dict, summary: dict) -> str:
    """The encoder alone, read through its CTC head (one figure per run, no paired test): helps /
    hurts when every seed of the row lies on the same side of vanilla's mean and the mean change
    exceeds the largest seed-to-seed spread of the main rows' CTC CER."""
    reference, spread = summary["reference_ctc_cer"], summary["seed_spread_ctc_cer"]
    seeds = [c for c in line["ctc_cer_by_seed"] if c is not None]
    if line["row"] == REFERENCE:
        return "reference"
    if reference is None:
        return "no reference row in this table"
    if not seeds:
        return "-"
    change = statistics.mean(seeds) - reference
    if spread is None:
        return f"undecided: seed spread not yet measured ({100 * change:+.1f} points)"
    if abs(change) > spread and all(c < reference for c in seeds):
        return f"helps ({100 * change:+.1f} points)"
    if abs(change) > spread and all(c > reference for c in seeds):
        return f"hurts ({100 * change:+.1f} points)"
    return f"no clear effect ({100 * change:+.1f} points)"


def markdown(summary: dict, args) -> str:
    datasets = summary["datasets"]
    head = ["row", "seeds", *[f"{d} WER % (per seed)" for d in datasets], "mean WER %",
            *[f"{d} CER %" for d in datasets], "P(better than vanilla) per seed, by WER", "by CER",
            "dev loss", "CTC CER % (per seed)", "audio use (nats)", "params (M)", "step (s)",
            "step / vanilla's (same CPU)", "verdict"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in summary["rows"]:
        cells = [f"{line['row']} ({line['what']})", str(line["seeds"])]
        for d in datasets:
            seeds = ", ".join(f"{100 * w:.1f}" for w in line["wer_by_seed"][d])
            cells.append(f"{100 * line['wer'][d]:.2f} ({seeds})")
        cells.append(f"{100 * line['mean_wer']:.2f}")
        cells += [f"{100 * line['cer'][d]:.1f}" for d in datasets]
        cells.append(", ".join(f"{p['p_better']:.2f}" for p in line["paired"]) or "-")
        cells.append(", ".join(f"{p['p_better_cer']:.2f}" for p in line["paired"]) or "-")
        cells.append(f"{line['dev_loss']:.3f}" if line["dev_loss"] is not None else "-")
        ctc = ", ".join("-" if c is None else f"{100 * c:.1f}" for c in line["ctc_cer_by_seed"])
        cells.append(f"{100 * line['ctc_cer']:.1f} ({ctc})" if line["ctc_cer"] is not None else "-")
        cells.append(f"{line['audio_use']:.2f}" if line["audio_use"] is not None else "-")
        cells.append(f"{line['parameters'] / 1e6:.2f}")
        cells.append(f"{line['step_seconds']:.2f}")
        cells.append(f"{line['step_vs_vanilla']:.2f}" if line["step_vs_vanilla"] is not None else "-")
        cells.append(line["verdict"])
        out.append("| " + " | ".join(cells) + " |")
    spreads = [summary[f"seed_spread_mean_{m}"] for m in ("wer", "cer")]
    ctc_spread = summary["seed_spread_ctc_cer"]
    cpus = {cpu: [f"{line['row']}-seed{seed}" for line in summary["rows"]
                  for seed, run_cpu_name in line["cpu_by_seed"].items() if run_cpu_name == cpu]
            for cpu in summary["cpus"]}
    out += ["", f"Seed-to-seed spread (largest max-min over the seeds of {', '.join(MAIN_ROWS)} of the mean "
            "WER / CER): " + (f"{100 * spreads[0]:.2f} / {100 * spreads[1]:.2f} points." if spreads[0] is not None
                              else "not measured (one seed)."),
            "Seed-to-seed spread of the CTC CER (the same over the main rows): "
            + (f"{100 * ctc_spread:.1f} points." if ctc_spread is not None else "not measured (one seed)."),
            "A WER or CER verdict says helps or hurts only when every seed's paired test is >= 95% sure and the "
            "mean change exceeds that spread; a CTC CER verdict when every seed lies on the same side of "
            "vanilla's mean and the mean change exceeds the CTC spread.",
            "CPUs the runs were trained and scored on (float32 everywhere; step times compare only on one "
            "CPU, hence the column relative to vanilla on the same CPU): "
            + "; ".join(f"{cpu}: {len(names)} runs ({', '.join(names)})" for cpu, names in cpus.items()) + ".",
            f"Table built on: {describe_cpu()}.",
            f"Config: `{args.config}`; first {args.limit} utterances of each data set; {scoring(args)}; "
            "whisper-english normaliser. CTC CER: the encoder read through the CTC head, greedy, on the first "
            f"{DIAGNOSIS_UTTERANCES} utterances of the first data set; audio use: the decoder's loss with another "
            "clip's audio minus with its own (0: it ignores the audio). P(better): the paired bootstrap (`asr compare`'s, over word errors; the same over "
            "character errors) against vanilla of the same seed, data sets pooled."]
    for line in summary.get("against", []):
        change = line["change"]
        out += ["", f"**{line['row']} against {line['against']}** (paired per seed; the same rule and spreads): "
                "mean WER " + points(change["mean_wer"]) + ", mean CER " + points(change["mean_cer"])
                + ", CTC CER " + points(change["ctc_cer"]) + ", dev loss "
                + or_dash(change["dev_loss"], "{:+.3f}".format) + "; P(better) per seed by WER "
                + (", ".join(f"{p['p_better']:.2f}" for p in line["paired"]) or "-") + ", by CER "
                + (", ".join(f"{p['p_better_cer']:.2f}" for p in line["paired"]) or "-") + f". Verdict: {line['verdict']}."]
    return "\n".join(out) + "\n" + runs_markdown(summary)


def or_dash(value, format_value) -> str:
    return "-" if value is None else format_value(value)


def points(change: float | None) -> str:
    return or_dash(change, lambda c: f"{100 * c:+.2f} points")


def runs_markdown(summary: dict) -> str:
    """Every run on its own line: WER with its 95 % bootstrap interval per data set, the paired
    test against vanilla of its seed, its CPU and time."""
    datasets = summary["datasets"]
    head = ["run", *[f"{d} WER % [95 % CI]" for d in datasets], "CTC CER %",
            f"training loss at step {' / '.join(map(str, LOSS_STEPS))} / end", "P(better than vanilla), WER / CER",
            "rotary base at end", "CPU", "training (s)", "step (s)", "step / vanilla's"]
    out = ["", "Every run:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in summary.get("per_run", []):
        cells = [run["run"]]
        for d in datasets:
            v = run["datasets"][d]
            cells.append(f"{100 * v['wer']:.1f} [{100 * v['wer_ci95'][0]:.1f}, {100 * v['wer_ci95'][1]:.1f}]")
        paired = run["paired"]
        cells += [or_dash(run["ctc_cer"], lambda v: f"{100 * v:.1f}"),
                  " / ".join(or_dash(v, "{:.2f}".format) for v in run.get("train_loss_at", {}).values()) or "-",
                  or_dash(paired, lambda p: f"{p['p_better']:.2f} / {p['p_better_cer']:.2f}"),
                  or_dash(run["rotary_base_final"], "{:.0f}".format), run["cpu"],
                  or_dash(run["train_seconds"], "{:.0f}".format), or_dash(run["step_seconds"], "{:.2f}".format),
                  or_dash(run["step_vs_vanilla"], "{:.2f}".format)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    if not rows:
        return
    figure, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 2), 4))
    for i, line in enumerate(rows):
        seeds = [statistics.mean(values) for values in zip(*line["wer_by_seed"].values())]
        ax.bar(i, 100 * line["mean_wer"], color="#9ecae1")
        ax.plot([i] * len(seeds), [100 * s for s in seeds], "k.", markersize=8)
    ax.set_xticks(range(len(rows)), [line["row"] for line in rows], rotation=30, ha="right")
    ax.set_ylabel("WER % (mean of data sets)")
    ax.set_title("Ablation: bars are means over seeds, dots single seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_curves(results: list[dict], path: Path) -> None:
    """Training loss by step of every run (a 50-step running mean), one colour per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        return
    figure, ax = plt.subplots(figsize=(8, 4.5))
    colours = {row: f"C{i}" for i, row in enumerate(dict.fromkeys(r["row"] for r in results))}
    for r in results:
        rows = [json.loads(line) for line in (Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
        points = [(m["step"], m["loss"]) for m in rows if m.get("loss") is not None]
        window, smoothed = [], []
        for _, loss in points:
            window = (window + [loss])[-50:]
            smoothed.append(sum(window) / len(window))
        ax.plot([p[0] for p in points], smoothed, color=colours[r["row"]], linewidth=1,
                label=r["row"] if r["seed"] == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (50-step mean)")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def row_seeds(text: str) -> tuple[str, int]:
    """--seeds-of ROW=N, checked as argparse checks a type (one clear error otherwise)."""
    row, _, count = text.partition("=")
    if row not in ROWS or not count.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected ROW=N with ROW one of {', '.join(ROWS)}")
    return row, int(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/ablation"))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--data", nargs="+", default=DEFAULT_DATA, help="manifests to score every run on")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=int, default=2, help="seeds of every row but vanilla and all (default 2)")
    parser.add_argument("--main-seeds", type=int, default=3, help="seeds of vanilla and all (default 3)")
    parser.add_argument("--seeds-of", action="append", default=[], metavar="ROW=N", type=row_seeds,
                        help="the number of seeds of one row, over --seeds/--main-seeds (repeatable)")
    parser.add_argument("--limit", type=int, default=200, help="utterances scored per data set (default 200)")
    parser.add_argument("--keep", type=Path, help="also copy each finished run's small files here (see above)")
    parser.add_argument("--ctc-weight", type=float, default=0.3,
                        help="decode for scoring with joint CTC/attention at this CTC weight, as the recipes "
                             "validate (default 0.3; 0: the attention decoder alone)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every run (e.g. run.max_steps=10)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    todo = jobs(args.rows, args.main_seeds, args.seeds, dict(args.seeds_of))
    results, summary = [], table([], args.rows)
    for row, seed in tqdm(todo, desc="ablation runs", unit="run"):
        results.append(train_and_score(row, seed, args))
        summary = table(results, args.rows)  # the table so far, after every run
        (args.out / "ablation.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1) + "\n")
        (args.out / "ablation.md").write_text(markdown(summary, args))
    plot(summary, args.out / "ablation.png")
    plot_curves(results, args.out / "ablation_curves.png")
    print(markdown(summary, args))
    print(json.dumps({"rows": {line["row"]: {"mean_wer": line["mean_wer"], "seeds": line["seeds"],
                                             "verdict": line["verdict"]} for line in summary["rows"]},
                      "seed_spread_mean_wer": summary["seed_spread_mean_wer"],
                      "seed_spread_mean_cer": summary["seed_spread_mean_cer"], "runs": len(results),
                      "against": {f"{a['row']} vs {a['against']}": {"change_mean_wer": a["change"]["mean_wer"],
                                                                   "verdict": a["verdict"]} for a in summary["against"]},
                      "scoring": scoring(args), "cpu": describe_cpu()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
