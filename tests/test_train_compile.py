"""`run.compile: true` (torch.compile of the training forward, Inductor's C++ backend on CPU)
trains the same trajectory as eager mode on the seed model."""
from __future__ import annotations

import shutil

import pytest

from test_train_resume import losses, make_toy_corpus, run, train_command, write_config

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile's CPU backend needs a C++ compiler")


def test_compiled_training_follows_the_eager_trajectory(tmp_path):
    # equal clips two per batch: one input shape, so one compilation
    train, dev = make_toy_corpus(tmp_path / "data", n_train=8, n_dev=2, equal_lengths=True)
    config = write_config(tmp_path / "toy.yaml", train, dev, max_steps=4, dropout=0.0, augment="false", batch_size=2)
    run(train_command(config, "--run-dir", tmp_path / "eager"))
    run(train_command(config, "--run-dir", tmp_path / "compiled", "--set", "run.compile=true"), timeout=600)
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert sorted(compiled) == sorted(eager) == [1, 2, 3, 4]
    for step, loss in eager.items():
        assert abs(compiled[step] - loss) <= 1e-4 * max(1.0, abs(loss)), (step, loss, compiled[step])
    assert len({round(v, 4) for v in eager.values()}) == 4  # the loss moved
