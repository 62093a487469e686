"""scripts/ablate.py on a toy corpus: every requested (row, seed) is trained and scored, the
table pairs each row with vanilla of the same seed, and a second invocation reruns nothing
while an interrupted run continues from its checkpoint."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

import pytest

from test_train_resume import REPO, make_toy_corpus

TOY_VANILLA = """
run: {seed: 0, max_steps: 6, threads: 1, deterministic: true, progress: false}
model:
  preset: whisper-cpu-small
  dims: {n_audio_state: 32, n_audio_head: 2, n_audio_layer: 1, n_text_state: 32, n_text_head: 2,
         n_text_layer: 1, n_audio_ctx: 200, n_text_ctx: 40}
data: {train: %(train)s, dev: %(dev)s, max_batch_seconds: 4.0}
tokenizer: {vocab_size: 270}
optim: {lr: 3.0e-3}
schedule: {kind: cosine, warmup_steps: 2}
loss: {ctc_weight: 0.3}
dynamic_base: {enabled: false, start_step: 1, cooldown_steps: 2, tolerance: 0.001, ema_beta: 0.5}
precision: float32
validation: {every_steps: 3, normalizer: none}
checkpoint: {every_steps: 3, keep_last: 2, average: false}
"""


def ablate(out, config, data, *extra):
    command = [sys.executable, "scripts/ablate.py", "--out", str(out), "--config", str(config), "--data", str(data),
               "--rows", "vanilla", "rotary+dynamic_base", "--main-seeds", "2", "--seeds", "1", "--limit", "3", *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_ablation_runs_every_row_pairs_with_vanilla_and_resumes(tmp_path):
    train, dev = make_toy_corpus(tmp_path / "data", n_train=12, n_dev=3)
    config = tmp_path / "toy.yaml"
    config.write_text(TOY_VANILLA % {"train": train, "dev": dev})
    out = tmp_path / "ablation"
    first = ablate(out, config, dev)

    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["runs"] == 3 and set(summary["rows"]) == {"vanilla", "rotary+dynamic_base"}
    assert summary["rows"]["vanilla"]["seeds"] == 2 and summary["rows"]["rotary+dynamic_base"]["seeds"] == 1
    runs = json.loads((out / "ablation.json").read_text())["runs"]
    by_name = {f"{r['row']}-seed{r['seed']}": r for r in runs}
    assert set(by_name) == {"vanilla-seed0", "vanilla-seed1", "rotary+dynamic_base-seed0"}
    # the row's switches reached the model: rotary layers (their base adapted), vanilla has none
    rotary_config = json.loads((out / "runs/rotary+dynamic_base-seed0/final/config.json").read_text())
    vanilla_config = json.loads((out / "runs/vanilla-seed0/final/config.json").read_text())
    assert rotary_config["options"]["audio"]["rotary"] and not vanilla_config["options"]["audio"]["rotary"]
    assert by_name["rotary+dynamic_base-seed0"]["rotary_base_final"] != 10000.0
    assert by_name["vanilla-seed0"]["rotary_base_final"] is None
    assert by_name["rotary+dynamic_base-seed0"]["parameters"] > by_name["vanilla-seed0"]["parameters"]
    # the seeds differ (different init and order), every run scored on the same 3 utterances
    assert by_name["vanilla-seed0"]["final_train_loss"] != by_name["vanilla-seed1"]["final_train_loss"]
    assert all([d["utterances"] for d in r["datasets"].values()] == [3] for r in runs)
    # every run is also read through its CTC head, from its last checkpoint
    for name, r in by_name.items():
        diagnosis = json.loads((out / "runs" / name / "diagnosis.json").read_text())
        assert diagnosis["checkpoint"].endswith("step-00000006") and diagnosis["utterances"] == 3
        assert r["ctc_cer"] == diagnosis["ctc_cer"] and r["ctc_cer"] >= 0.0
        assert r["decoder_loss_own_audio"] > 0.0 and r["decoder_loss_swapped_audio"] > 0.0
    table = json.loads((out / "ablation.json").read_text())["summary"]["rows"]
    rotary_row = next(line for line in table if line["row"] == "rotary+dynamic_base")
    assert len(rotary_row["paired"]) == 1
    assert all(0.0 <= rotary_row["paired"][0][k] <= 1.0 for k in ("p_better", "p_worse", "p_better_cer", "p_worse_cer"))
    assert (out / "ablation.png").stat().st_size > 0 and (out / "ablation_curves.png").stat().st_size > 0
    assert "| vanilla" in (out / "ablation.md").read_text() and "CTC CER" in (out / "ablation.md").read_text()
    # every run also on its own line, with the bootstrap interval of its WER per data set
    per_run = json.loads((out / "ablation.json").read_text())["summary"]["per_run"]
    assert sorted(r["run"] for r in per_run) == sorted(by_name)
    for r in per_run:
        d = r["datasets"][next(iter(r["datasets"]))]
        assert d["wer_ci95"][0] <= d["wer"] <= d["wer_ci95"][1]
    assert "| vanilla-seed1 |" in (out / "ablation.md").read_text()

    # again: nothing is retrained
    logs = {p.name: p.read_text() for p in (out / "runs").glob("*.log")}
    ablate(out, config, dev)
    assert {p.name: p.read_text() for p in (out / "runs").glob("*.log")} == logs

    # a run interrupted after its step-3 checkpoint continues from it
    run_dir = out / "runs/vanilla-seed1"
    for name in ("result.json",):
        (run_dir / name).unlink()
    for name in ("final", "eval", "checkpoints/step-00000006"):
        shutil.rmtree(run_dir / name)
    ablate(out, config, dev)
    log = (out / "runs/vanilla-seed1.log").read_text()
    assert "train --resume" in log and "resumed from" in log and "step 3" in log
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 6

    # --keep: finished runs' small files are copied out; with the run directories gone, the
    # kept copies alone rebuild the same table without training anything
    kept = tmp_path / "kept"
    before = json.loads(ablate(out, config, dev, "--keep", kept).stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in kept.iterdir()) == sorted(by_name)
    assert (kept / "vanilla-seed0/eval").is_dir() and not list(kept.rglob("*.safetensors"))
    shutil.rmtree(out)
    after = json.loads(ablate(out, config, dev, "--keep", kept).stdout.strip().splitlines()[-1])
    assert not (out / "runs").exists() or not list((out / "runs").glob("*.log"))
    assert after["rows"] == before["rows"] and after["runs"] == 3

    # every run was decoded jointly (the recipes' CTC weight 0.3) and says so; a table decoded
    # another way refuses the kept runs rather than mixing two decodings in one table
    assert after["scoring"] == "greedy, joint CTC/attention, CTC weight 0.3"
    settings = json.loads((kept / "vanilla-seed0/eval/settings.json").read_text())
    assert settings["decoding"]["ctc_weight"] == 0.3
    refused = subprocess.run([sys.executable, "scripts/ablate.py", "--out", str(out), "--config", str(config),
                              "--data", str(dev), "--rows", "vanilla", "--main-seeds", "1", "--keep", str(kept),
                              "--ctc-weight", "0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "vanilla-seed0 was scored" in refused.stderr and "attention decoder only" in refused.stderr


def load_ablate():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ablate", REPO / "scripts" / "ablate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdict_needs_every_seed_confident_and_a_change_beyond_the_seed_spread():
    ablate = load_ablate()
    summary = {"reference_mean_wer": 0.50, "seed_spread_mean_wer": 0.02}

    def line(mean, *p_better):
        return {"row": "rotary", "mean_wer": mean,
                "paired": [{"p_better": p, "p_worse": 1.0 - p} for p in p_better]}

    assert ablate.verdict(line(0.45, 0.99, 0.97), summary, "wer").startswith("helps (-5.00")
    assert ablate.verdict(line(0.45, 0.99, 0.90), summary, "wer").startswith("no clear effect")  # one seed unsure
    assert ablate.verdict(line(0.49, 0.99, 0.99), summary, "wer").startswith("no clear effect")  # within spread
    assert ablate.verdict(line(0.56, 0.01, 0.02), summary, "wer").startswith("hurts (+6.00")
    assert ablate.verdict({**line(0.5), "row": "vanilla"}, summary, "wer") == "reference"
    # a table without vanilla (e.g. only rotary against rotary+dynamic_base) says so, not "reference"
    assert ablate.verdict(line(0.45, 0.99), {**summary, "reference_mean_wer": None}, "wer") == "no reference row in this table"
    assert ablate.verdict(line(0.45, 0.99), {**summary, "seed_spread_mean_wer": None}, "wer").startswith("undecided")
    jobs = ablate.jobs(["vanilla", "rotary", "all"], main_seeds=3, other_seeds=2)
    assert jobs[:3] == [("vanilla", 0), ("rotary", 0), ("all", 0)] and len(jobs) == 8
    # --seeds-of gives one row more seeds; a row not in the table is ignored
    jobs = ablate.jobs(["vanilla", "rotary"], main_seeds=2, other_seeds=2, seeds_of={"rotary": 3, "hybrid": 5})
    assert jobs == [("vanilla", 0), ("rotary", 0), ("vanilla", 1), ("rotary", 1), ("rotary", 2)]
    assert ablate.row_seeds("rotary=3") == ("rotary", 3)
    with pytest.raises(argparse.ArgumentTypeError, match="rotaryy=3"):
        ablate.row_seeds("rotaryy=3")


def test_ctc_verdict_weighs_every_seed_against_vanilla_and_the_spread():
    ablate = load_ablate()
    summary = {"reference_ctc_cer": 0.50, "seed_spread_ctc_cer": 0.10}

    def line(*ctc_cer):
        return {"row": "rotary", "ctc_cer_by_seed": list(ctc_cer)}

    assert ablate.ctc_verdict(line(0.25, 0.30), summary).startswith("helps (-22.5")
    assert ablate.ctc_verdict(line(0.20, 0.55), summary).startswith("no clear effect")  # one seed above vanilla
    assert ablate.ctc_verdict(line(0.45, 0.44), summary).startswith("no clear effect")  # within the spread
    assert ablate.ctc_verdict(line(0.80, 0.70), summary).startswith("hurts (+25.0")
    assert ablate.ctc_verdict(line(0.25), {**summary, "seed_spread_ctc_cer": None}).startswith("undecided")
    assert ablate.ctc_verdict({**line(0.5), "row": "vanilla"}, summary) == "reference"
    assert ablate.ctc_verdict(line(0.25), {**summary, "reference_ctc_cer": None}) == "no reference row in this table"


def test_step_time_is_compared_with_vanilla_on_the_same_cpu(tmp_path):
    ablate = load_ablate()

    def run(row, seed, step, cpu):
        return {"row": row, "seed": seed, "median_step_seconds": step, "cpu": cpu, "run_dir": str(tmp_path)}

    results = [run("vanilla", 0, 0.50, "fast"), run("vanilla", 1, 0.70, "fast"), run("vanilla", 2, 1.0, "slow"),
               run("rotary", 0, 0.66, "fast"), run("rotary", 1, 1.2, "slow"), run("hybrid", 0, 0.9, "other")]
    ratios = ablate.step_ratios(results)
    assert abs(ratios[("rotary", 0)] - 0.66 / 0.60) < 1e-12  # mean of the two vanilla runs on "fast"
    assert abs(ratios[("rotary", 1)] - 1.2) < 1e-12
    assert ratios[("hybrid", 0)] is None  # no vanilla run on its CPU
    # a kept run without a recorded CPU reads it from its evaluation's settings
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "settings.json").write_text(json.dumps({"environment": {"cpu": "AMD EPYC", "cpu_capability": "AVX2"}}))
    assert ablate.result_cpu({"run_dir": str(tmp_path)}) == "AMD EPYC, AVX2"


def test_dynamic_base_is_also_weighed_against_the_fixed_base_run(monkeypatch):
    ablate = load_ablate()
    paired_calls = []

    def fake_paired(results, reference_row="vanilla", rows=None):
        paired_calls.append((reference_row, rows))
        return {("rotary+dynamic_base", 0): {"p_better": 0.01, "p_worse": 0.99, "p_better_cer": 0.40, "p_worse_cer": 0.60},
                ("rotary+dynamic_base", 1): {"p_better": 0.02, "p_worse": 0.98, "p_better_cer": 0.30, "p_worse_cer": 0.70}}

    monkeypatch.setattr(ablate, "paired_against", fake_paired)

    def line(row, wer, cer, ctc, loss):
        return {"row": row, "mean_wer": wer, "mean_cer": cer, "ctc_cer": ctc, "dev_loss": loss,
                "ctc_cer_by_seed": [ctc - 0.01, ctc + 0.01], "paired": []}

    summary = {"reference_mean_wer": 1.10, "reference_mean_cer": 0.80, "reference_ctc_cer": 0.45,
               "seed_spread_mean_wer": 0.03, "seed_spread_mean_cer": 0.03, "seed_spread_ctc_cer": 0.10,
               "rows": [line("vanilla", 1.10, 0.80, 0.45, 2.0), line("rotary", 0.90, 0.60, 0.25, 0.9),
                        line("rotary+dynamic_base", 0.95, 0.61, 0.26, 1.0)]}
    results = [{"row": "rotary+dynamic_base", "seed": 0}, {"row": "rotary+dynamic_base", "seed": 1}]
    against = ablate.against_other_row(summary, results, "rotary+dynamic_base", "rotary")
    assert paired_calls == [("rotary", ["rotary+dynamic_base"])]  # paired with rotary, not vanilla
    assert abs(against["change"]["mean_wer"] - 0.05) < 1e-12 and abs(against["change"]["dev_loss"] - 0.1) < 1e-12
    # worse by WER on both seeds and by more than the spread; CER and CTC CER within it
    assert "WER: hurts (+5.00" in against["verdict"]
    assert "CER: no clear effect (+1.00" in against["verdict"] and "CTC CER: no clear effect (+1.0" in against["verdict"]


def test_training_loss_at_averages_the_window_up_to_each_step(tmp_path):
    ablate = load_ablate()
    rows = [{"step": s, "loss": float(s)} for s in range(1, 11)] + [{"step": 10, "dev_wer": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the window (step - 3, step]: steps 2, 3, 4 -> 3.0; steps 8, 9, 10 -> 9.0; no step 12 or later
    assert ablate.training_loss_at(tmp_path, steps=(4, 10, 14), window=3) == {4: 3.0, 10: 9.0, 14: None}
    assert ablate.training_loss_at(tmp_path / "missing", steps=(4,)) == {4: None}
