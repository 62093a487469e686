"""Two CPU processes under torchrun (gloo): each rank trains on its own shard of the batches and
the loss at every step equals single-process training on the same global batch (two
micro-batches accumulated), with DDP (the replicas end identical) and with FSDP (sharded
parameters, gradients and optimiser state; its checkpoints are whole and resume on one
process)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as td

from test_train_resume import REPO, make_toy_corpus, write_config

STEPS = 6  # 8 batches an epoch = 4 global steps: the run crosses an epoch boundary
pytestmark = pytest.mark.skipif(not td.is_available() or not td.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return [r["loss"] for r in rows]


def train(*args, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    result = subprocess.run([sys.executable, *launcher, "-m", "asr", "train", *map(str, args)],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A toy corpus, the two-rank config, and a single-process run on the same global batches."""
    root = tmp_path_factory.mktemp("distributed")
    # equal clips, two per batch: every world size packs the same 8 batches, none split
    train_manifest, dev = make_toy_corpus(root / "data", n_train=16, n_dev=2, equal_lengths=True)
    common = dict(max_steps=STEPS, dropout=0.0, augment="false", batch_size=2)
    single_config = write_config(root / "single.yaml", train_manifest, dev, accumulate=2, **common)
    two_rank_config = write_config(root / "two.yaml", train_manifest, dev, accumulate=1, **common)
    train(single_config, "--run-dir", root / "single")
    return root, train_manifest, two_rank_config


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "final" / "model.safetensors")


def final_logits(run_dir: Path):
    """The final model's logits on a fixed random input."""
    import torch

    from asr.store.checkpoint import load_checkpoint

    model, _ = load_checkpoint(run_dir / "final")
    generator = torch.Generator().manual_seed(0)
    mels = torch.randn(1, model.dims.n_mels, 100, generator=generator)
    tokens = torch.randint(0, model.dims.n_vocab, (1, 6), generator=generator)
    with torch.no_grad():
        return model(mels, tokens)


def assert_close_losses(reference: list[float], other: list[float]) -> None:
    for step, (a, b) in enumerate(zip(reference, other), start=1):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (step, a, b)


def test_two_process_ddp_equals_single_process_on_the_global_batch(corpus):
    root, train_manifest, ddp_config = corpus
    ddp = train(ddp_config, "--run-dir", root / "ddp", processes=2)

    # rank 0 alone logs and checkpoints
    assert (root / "ddp" / "checkpoints" / f"step-{STEPS:08d}").is_dir()
    assert ddp.stderr.count("precision:") == 1
    assert "largest weight difference from rank 0: 0\n" in ddp.stderr

    reference, distributed = losses(root / "single"), losses(root / "ddp")
    assert_close_losses(reference, distributed)
    # the whole trajectory moved (not a run that stood still on both sides)
    assert len(set(round(x, 4) for x in reference)) == STEPS

    # the ranks' shards are disjoint and together the whole epoch
    from asr.data.manifest import read_manifest
    from asr.train.config import load_config
    from asr.train.data import make_sampler

    config = load_config(ddp_config)
    utterances = read_manifest(train_manifest)
    shards = [sum(make_sampler(utterances, config, rank, 2), []) for rank in (0, 1)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(len(utterances)))


def test_two_process_fsdp_equals_single_process_and_its_checkpoint_resumes_on_one(corpus):
    root, _, config = corpus
    fsdp = train(config, "--run-dir", root / "fsdp", "--set", "distributed.strategy=fsdp", processes=2)
    assert "sharded over 2 ranks" in fsdp.stderr
    assert fsdp.stderr.count("precision:") == 1
    reference = losses(root / "single")
    assert_close_losses(reference, losses(root / "fsdp"))

    # the saved model is the whole model (gathered from the shards) and computes what
    # single-process training's does (compared as functions: the key half of each attention's
    # bias has a zero gradient up to rounding, which AdamW turns into lr-sized noise)
    single_weights, fsdp_weights = final_weights(root / "single"), final_weights(root / "fsdp")
    assert {k: v.shape for k, v in single_weights.items()} == {k: v.shape for k, v in fsdp_weights.items()}
    single_logits, fsdp_logits = (final_logits(root / name) for name in ("single", "fsdp"))
    assert (single_logits - fsdp_logits).abs().max() <= 1e-4 * single_logits.abs().max()

    # resume the two-rank run from its step-3 checkpoint in one process (the same global
    # batches: two accumulated micro-batches): steps 4..6 repeat the two-rank losses
    resumed = root / "fsdp-resumed-on-one"
    shutil.copytree(root / "fsdp", resumed)
    for later in ("checkpoints/step-00000006", "final", "averaged", "best.json"):
        path = resumed / later
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    result = train("--resume", resumed, "--set", "optim.accumulate=2")
    assert "resumed from" in result.stderr and "step 3" in result.stderr
    assert_close_losses(reference, losses(resumed))


def test_sampler_position_reshards_between_world_sizes():
    from asr.data.sampler import DurationBucketSampler
    from asr.train.distributed import reshard_sampler_state

    durations = [1.0] * 16  # 8 batches of two
    ranks = [DurationBucketSampler(durations, 4.0, seed=1, rank=r, world_size=2, max_batch_size=2) for r in (0, 1)]
    for sampler in ranks:  # each rank finished 2 of its 4 batches: 4 global batches done
        iterator = iter(sampler)
        next(iterator), next(iterator)
    single = DurationBucketSampler(durations, 4.0, seed=1, max_batch_size=2)
    single.load_state_dict(reshard_sampler_state(ranks[0].state_dict(), single))
    whole_epoch = list(DurationBucketSampler(durations, 4.0, seed=1, max_batch_size=2))
    assert list(single) == whole_epoch[4:]

    odd = DurationBucketSampler([1.0] * 14, 4.0, seed=1, rank=0, world_size=2, max_batch_size=2)
    state = odd.state_dict(batches_consumed=1)  # 7 batches: not the same list on 1 and 2 ranks
    with pytest.raises(ValueError, match="cannot resume a run of 2 processes on 1"):
        reshard_sampler_state(state, DurationBucketSampler([1.0] * 14, 4.0, seed=1, max_batch_size=2))


def test_bad_input_under_torchrun_ends_each_rank_with_one_line(corpus, tmp_path):
    """A missing manifest is found once the process group is up: every rank says so in one line
    and leaves (the group destroyed, no traceback of ours, no abort at exit), and torchrun fails
    (its own report of the failed workers, a traceback of torch's launcher, follows)."""
    root, _, ddp_config = corpus
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run([sys.executable, *launcher, "-m", "asr", "train", str(ddp_config), "--run-dir",
                             str(tmp_path / "run"), "--set", f"data.train={tmp_path / 'missing.jsonl'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("asr: error:")]
    assert len(errors) == 2 and all("missing.jsonl" in line for line in errors), result.stderr[-2000:]
    ours = f'File "{REPO / "asr"}'  # a traceback frame in the package
    assert ours not in result.stderr and "terminate called" not in result.stderr, result.stderr[-2000:]
