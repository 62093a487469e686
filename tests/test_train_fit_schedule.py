"""run.fit_to_max_minutes: the schedule shortened, once, so that it ends inside run.max_minutes.

The rule is checked against a step-by-step simulation of the rest of a run; the loop's use of it
on a toy run whose clock is faked (each optimiser step 1 s, each validation 5 s; in one run two
steps disturbed by "another job"), so the fitted length is known exactly whatever the machine's
speed."""
from __future__ import annotations

import json
import random
import types

import numpy as np
import pytest
import yaml

import asr.train.loop as loop
from asr.train.checkpoints import Checkpoints, read_state
from asr.train.config import ConfigError, load_config
from asr.train.schedule import FIT_RESERVE, fitted_max_steps, lr_factor, steady_step_seconds
from test_train_resume import make_toy_corpus, write_config


def simulated_fit(step, max_steps, seconds_left, step_seconds, validation_seconds, every_steps, reserve=FIT_RESERVE):
    """The longest total whose remaining run, walked one step at a time (a validation after every
    `every_steps`-th step and after the last), takes no more than the budget."""
    budget = seconds_left * (1 - reserve)
    for total in range(max_steps, step, -1):
        seconds = 0.0
        for s in range(step + 1, total + 1):
            seconds += step_seconds + (validation_seconds if s % every_steps == 0 or s == total else 0.0)
        if seconds <= budget:
            return total
    return step + 1


def test_fitted_length_matches_a_step_by_step_simulation():
    rng = random.Random(5)
    for _ in range(300):
        every = rng.randint(1, 40)
        step = rng.randint(0, 200)
        max_steps = step + rng.randint(1, 300)
        args = (step, max_steps, rng.uniform(-10, 400), rng.uniform(0.01, 3), rng.uniform(0, 30), every)
        assert fitted_max_steps(*args) == simulated_fit(*args), args


def test_a_schedule_that_fits_is_kept_and_one_that_cannot_ends_after_the_next_step():
    assert fitted_max_steps(100, 1000, seconds_left=1e6, step_seconds=1.0, validation_seconds=5.0,
                            every_steps=100) == 1000
    assert fitted_max_steps(100, 1000, seconds_left=-5.0, step_seconds=1.0, validation_seconds=5.0,
                            every_steps=100) == 101


class FakeClock:
    """perf_counter for the loop: moved on by the wrapped optimiser step and validation only."""

    def __init__(self):
        self.now = 1000.0

    def module(self, real_time):
        return types.SimpleNamespace(perf_counter=lambda: self.now, time=real_time.time)


def test_the_steady_pace_caps_disturbed_steps_only():
    quiet = [0.27, 0.28, 0.26, 0.29] * 50
    assert steady_step_seconds(quiet) == pytest.approx(sum(quiet) / len(quiet))
    # a burst of another job's load early in the run: the steps it slowed count as 1.5 median steps
    burst = quiet + [0.9] * 30 + [0.5] * 10
    median = np.median(burst)
    assert steady_step_seconds(burst) == pytest.approx(np.mean(np.minimum(burst, 1.5 * median)))
    assert steady_step_seconds(burst) < 0.3 < np.mean(burst)
    # a machine busy all along: its slow pace is the pace
    busy = [0.6, 0.7] * 100
    assert steady_step_seconds(busy) == pytest.approx(0.65)
    with pytest.raises(ValueError):
        steady_step_seconds([])


@pytest.mark.parametrize("disturbed", [False, True])
def test_the_loop_shortens_the_schedule_and_the_lr_follows_it(tmp_path, monkeypatch, disturbed):
    import time

    train_manifest, dev = make_toy_corpus(tmp_path / "data", n_train=12, n_dev=2)
    config_path = write_config(tmp_path / "fit.yaml", train_manifest, dev, max_steps=40)
    config = load_config(config_path, ["run.fit_to_max_minutes=true", "run.max_minutes=1.0",
                                       "validation.every_steps=5", "checkpoint.every_steps=100",
                                       "checkpoint.average_start=20"])
    clock = FakeClock()
    step, validate = loop.optimizer_step, loop.run_validation

    calls = []

    def timed_step(*args, **kwargs):
        calls.append(None)
        # "another job" on the machine makes steps 2 and 3 take 3 s each
        clock.now += 3.0 if disturbed and len(calls) in (2, 3) else 1.0
        return step(*args, **kwargs)

    def timed_validation(*args, **kwargs):
        clock.now += 5.0
        return validate(*args, **kwargs)

    monkeypatch.setattr(loop, "time", clock.module(time))
    monkeypatch.setattr(loop, "optimizer_step", timed_step)
    monkeypatch.setattr(loop, "run_validation", timed_validation)
    monkeypatch.setattr(loop, "FIT_AFTER_STEPS", 4)
    run_dir = tmp_path / "run"
    summary = loop.train(config, run_dir)

    # at the first validation (step 5): 5 steps and one validation took 10 (or 14) of the 60 s;
    # the rest is fitted at 1 s a step (disturbed: steps of 1, 1.5, 1.5, 1, 1 s, the 3 s ones
    # capped at 1.5 medians)
    spent, pace = (14.0, 1.2) if disturbed else (10.0, 1.0)
    expected = simulated_fit(5, 40, 60.0 - spent, pace, 5.0, 5)
    assert 5 < expected < 40
    if disturbed:  # the plain mean, 1.8 s a step, would have shortened the schedule more
        assert simulated_fit(5, 40, 60.0 - spent, 1.8, 5.0, 5) < expected
    assert summary["step"] == expected  # ended by the schedule, not cut off by max_minutes
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, expected + 1))
    assert [r["max_steps"] for r in rows if "max_steps" in r] == [expected]
    for r in rows:  # steps 1-5 ran on the configured 40-step schedule, the rest on the fitted one
        length = 40 if r["step"] <= 5 else expected
        assert r["lr"] == pytest.approx(config.optim.lr * lr_factor(r["step"] - 1, config.schedule, length))
    assert rows[-1]["lr"] < 0.1 * config.optim.lr  # decayed by the end (the 40-step cosine: 0.84 of the peak)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run"]["max_steps"] == expected
    assert saved["checkpoint"]["average_start"] == round(20 * expected / 40)
    # the last checkpoint says the schedule was fitted, so a resume keeps it (and does not fit again)
    state, _, _ = read_state(Checkpoints(run_dir, keep_last=2).latest_valid())
    assert state["step"] == expected and state["progress"]["schedule_fitted"] is True


def test_fitting_needs_max_minutes_and_a_validation_before_the_end(tmp_path):
    train_manifest, dev = make_toy_corpus(tmp_path / "data", n_train=4, n_dev=1)
    config_path = write_config(tmp_path / "fit.yaml", train_manifest, dev, max_steps=40)
    with pytest.raises(ConfigError, match="run.fit_to_max_minutes: true needs run.max_minutes"):
        load_config(config_path, ["run.fit_to_max_minutes=true"])
    with pytest.raises(ConfigError, match="validation.every_steps must be < run.max_steps"):
        load_config(config_path, ["run.fit_to_max_minutes=true", "run.max_minutes=10",
                                  "validation.every_steps=40"])
