"""`asr evaluate`, `asr compare` and `asr benchmark build` from the command line with the real
tiny.en model: bad audio listed and in the exit status, and a torchrun run over 2 CPU
processes (gloo) whose merged report equals the single-process one."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asr.data.manifest import Utterance, write_manifest
from asr.evaluate.benchmark import ALSA_SOUNDS, alsa_clips
from asr.evaluate.report import TIMING_KEYS, read_rows

from peer_helpers import load_builtin

needs_alsa = pytest.mark.skipif(not ALSA_SOUNDS.is_dir(), reason="alsa-utils is not installed")
TORCHRUN = Path(sys.executable).with_name("torchrun")
CLIPS = 4  # alsa-utils channel names, ~1.5 s each


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("asr-cache")
    load_builtin("tiny.en", cache)  # converted once for every process below
    return {**os.environ, "ASR_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alsa-set")
    clips = alsa_clips()[:CLIPS]
    utterances = [Utterance(c.id, str(c.path), c.text, None, c.speaker, c.group) for c in clips]
    utterances.append(Utterance("alsa-missing", str(folder / "missing.wav"), "front center", 1.0, "alsa", "alsa"))
    for u in utterances:
        u.duration = u.duration or 1.5
    path = folder / "alsa.jsonl"
    write_manifest(path, utterances)
    return path


def asr_cli(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "asr", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.fixture(scope="module")
def single(manifest, env, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run = asr_cli(["evaluate", "--data", str(manifest), "--output-dir", str(out), "--quiet", "--threads", "1"], env)
    return out, run


@needs_alsa
def test_evaluate_prints_table_and_fails_on_bad_audio(single):
    out, run = single
    assert run.returncode == 1, run.stderr[-2000:]
    assert "dataset" in run.stdout and "WER%" in run.stdout and "95% CI" in run.stdout and "RTFx" in run.stdout
    assert "alsa/alsa-missing: file not found" in run.stdout
    assert "1 utterance(s) could not be read" in run.stderr
    assert "Traceback" not in run.stderr
    rows = read_rows(out / "utterances.jsonl")
    assert [r["id"] for r in rows][-1] == "alsa-missing" and rows[-1]["error"] == "file not found"
    scored = [r for r in rows if r["error"] is None]
    assert len(scored) == CLIPS
    # channel names are easy: tiny.en gets most words right
    hits = sum(r["hits"] for r in scored)
    assert hits >= 0.6 * sum(len(r["text_normalized"].split()) for r in scored)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["normalizer"]["name"] == "whisper-english"
    assert summary["datasets"][0]["rtfx"] > 0


@needs_alsa
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_torchrun_two_processes_merge_to_the_single_process_report(single, manifest, env, tmp_path):
    out_single, _ = single
    out = tmp_path / "sharded"
    run = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", "29517", "-m", "asr", "evaluate",
                          "--data", str(manifest), "--output-dir", str(out), "--quiet", "--threads", "1"],
                         capture_output=True, text=True, env=env, timeout=400)
    assert run.returncode == 1, run.stderr[-3000:]  # the missing clip, as in the single run
    assert without_timing(read_rows(out / "utterances.jsonl")) == without_timing(read_rows(out_single / "utterances.jsonl"))
    assert (out / "errs-alsa.txt").read_text() == (out_single / "errs-alsa.txt").read_text()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, out_single))
    timing = {"decode_seconds", "rtfx"}
    strip = lambda s: {k: v for k, v in s.items() if k not in timing}  # noqa: E731
    assert [strip(s) for s in a["datasets"]] == [strip(s) for s in b["datasets"]]
    assert a["settings"]["processes"] == 2
    compared = asr_cli(["compare", str(out_single), str(out), "--output-dir", str(tmp_path / "cmp")], env)
    assert compared.returncode == 0, compared.stderr
    assert "P(A better)" in compared.stdout and (tmp_path / "cmp" / "compare.png").exists()


@needs_alsa
def test_compare_refuses_other_utterances(single, manifest, env, tmp_path):
    out_single, _ = single
    out = tmp_path / "fewer"
    run = asr_cli(["evaluate", "--data", str(manifest), "--limit", "2", "--output-dir", str(out), "--quiet"], env)
    assert run.returncode == 0, run.stderr  # the missing clip is past the limit
    compared = asr_cli(["compare", str(out_single), str(out)], env)
    assert compared.returncode == 1
    assert "not the same utterances" in compared.stderr and "Traceback" not in compared.stderr


def test_evaluate_bad_source_is_one_line(env, tmp_path):
    run = asr_cli(["evaluate", "--data", str(tmp_path / "nothing.jsonl"), "--output-dir", str(tmp_path / "o")], env)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "nothing.jsonl" in run.stderr


@pytest.mark.skipif(shutil.which("true") is None or not Path("/usr/share/pocketsphinx/test/data").is_dir(),
                    reason="pocketsphinx-testdata is not installed")
def test_benchmark_build_offline_en(env, tmp_path):
    run = asr_cli(["benchmark", "build", "offline-en", str(tmp_path / "oe")], env)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in (tmp_path / "oe" / "manifest.jsonl").read_text().splitlines()]
    groups = {r["group"] for r in rows}
    assert {"pocketsphinx", "alsa"} <= groups
    go = [r for r in rows if r["id"] == "goforward"][0]
    assert go["text"] == "go forward ten meters" and (tmp_path / "oe" / go["audio"]).exists()
    assert not any(r["id"] == "alsa-noise" for r in rows)


@pytest.mark.skipif(not Path("/usr/share/pocketsphinx/test/data/librivox").is_dir(),
                    reason="pocketsphinx-testdata is not installed")
def test_decoding_length_is_tied_to_audio_length(env):
    from asr.evaluate.benchmark import load_clip, pocketsphinx_clips
    from asr.inference.transcribe import MIN_SAMPLE_LEN

    model = load_builtin("tiny.en", Path(env["ASR_CACHE_DIR"]))
    clip = [c for c in pocketsphinx_clips() if c.id == "librivox-0870"][0]  # 7.1 s, 22 words
    audio = load_clip(clip.path)
    free = model.transcribe(audio, temperature=0.0)["text"]
    rate = 0.5  # tokens per second: far below speech, so the cap must bite
    cap = MIN_SAMPLE_LEN + math.ceil(rate * len(audio) / 16000)
    cut = model.transcribe(audio, temperature=0.0, max_tokens_per_second=rate)["text"]
    assert len(model.tokenizer.encode(" " + free.strip())) > cap  # the full text would not fit
    assert len(model.tokenizer.encode(" " + cut.strip())) <= cap
    assert free.startswith(cut.strip()[:20])
    # the evaluation's rate leaves normal speech alone
    from asr.evaluate.systems import MAX_TOKENS_PER_SECOND

    assert model.transcribe(audio, temperature=0.0, max_tokens_per_second=MAX_TOKENS_PER_SECOND)["text"] == free


@needs_alsa
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_resume_under_torchrun_decodes_only_the_missing(single, manifest, env, tmp_path):
    out_single, _ = single
    out = tmp_path / "resumed"
    shutil.copytree(out_single, out)
    rows = read_rows(out / "utterances.jsonl")
    kept = rows[:2]  # as if interrupted after two utterances
    (out / "utterances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    run = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", "29519", "-m", "asr", "evaluate",
                          "--data", str(manifest), "--output-dir", str(out), "--quiet", "--threads", "1", "--resume"],
                         capture_output=True, text=True, env=env, timeout=400)
    assert run.returncode == 1, run.stderr[-3000:]  # the missing clip is still missing
    assert f"resuming: 2 of {CLIPS + 1} utterances already decoded, {CLIPS - 1} to go" in run.stdout
    resumed = read_rows(out / "utterances.jsonl")
    assert resumed[:2] == kept  # kept as they were, timings included: not decoded again
    assert without_timing(resumed) == without_timing(rows)


def test_each_torchrun_process_takes_its_own_gpu(monkeypatch):
    """`torchrun --nproc_per_node N -m asr evaluate --device cuda`: process k decodes on cuda:k,
    not all N on cuda:0; an explicit index, the CPU and a single process are left alone."""
    from asr.cli.evaluate import _rank_device

    monkeypatch.setenv("LOCAL_RANK", "3")
    assert _rank_device("cuda", 4) == "cuda:3"
    assert _rank_device("cuda:1", 4) == "cuda:1"
    assert _rank_device("cpu", 4) == "cpu"
    assert _rank_device("cuda", 1) == "cuda"
