"""Two CPU processes under torchrun (DDP, gloo): each rank trains on its own shard of the
batches, the replicas end with identical weights, and the loss at every step equals
single-process training on the same global batch (two micro-batches accumulated)."""
from __future__ import annotations

import json
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


def test_two_process_ddp_equals_single_process_on_the_global_batch(tmp_path):
    # equal clips, two per batch: every world size packs the same 8 batches, none split
    train, dev = make_toy_corpus(tmp_path / "data", n_train=16, n_dev=2, equal_lengths=True)
    common = dict(max_steps=STEPS, dropout=0.0, augment="false", batch_size=2)
    single_config = write_config(tmp_path / "single.yaml", train, dev, accumulate=2, **common)
    ddp_config = write_config(tmp_path / "ddp.yaml", train, dev, accumulate=1, **common)

    single = subprocess.run([sys.executable, "-m", "asr.cli.train", "train", str(single_config),
                             "--run-dir", str(tmp_path / "single")], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "asr.cli.train", "train", str(ddp_config), "--run-dir", str(tmp_path / "ddp")],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    # rank 0 alone logs and checkpoints
    assert (tmp_path / "ddp" / "checkpoints" / f"step-{STEPS:08d}").is_dir()
    assert ddp.stderr.count("precision:") == 1
    assert "largest weight difference from rank 0: 0\n" in ddp.stderr

    reference, distributed = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    for step, (a, b) in enumerate(zip(reference, distributed), start=1):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (step, a, b)
    # the whole trajectory moved (not a run that stood still on both sides)
    assert len(set(round(x, 4) for x in reference)) == STEPS

    # the ranks' shards are disjoint and together the whole epoch
    from asr.data.manifest import read_manifest
    from asr.train.config import load_config
    from asr.train.data import make_sampler

    config = load_config(ddp_config)
    utterances = read_manifest(train)
    shards = [sum(make_sampler(utterances, config, rank, 2), []) for rank in (0, 1)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(len(utterances)))


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
