"""The dynamic base rule on synthetic loss sequences, checked against the rule written out by
hand (improving -> grow, rising -> shrink, plateau -> hold, bounds, cooldown), and its effect
on a model: every rotary layer of the chosen stacks reads the new base, in place."""
from __future__ import annotations

import math

import pytest
import torch

from asr.nn.model import ASRModel
from asr.nn.presets import preset
from asr.train.config import DynamicBaseConfig
from asr.train.dynamic_base import DynamicBaseController, rotary_bases


def config(**values) -> DynamicBaseConfig:
    defaults = dict(ema_beta=0.0, tolerance=0.01, grow=2.0, shrink=0.5, min_base=100.0, max_base=10000.0,
                    start_step=1, cooldown_steps=1)
    return DynamicBaseConfig(**{**defaults, **values})


def run(controller, losses):
    return [controller.update(step, loss) for step, loss in enumerate(losses, start=1)]


def test_improving_loss_grows_the_base_every_decision():
    decisions = run(DynamicBaseController(config(), 1000.0), [10.0, 9.0, 8.0, 7.0])
    # step 1 sets the reference; each later step improved by > 1%: x2 each time
    assert [d.action for d in decisions] == ["wait", "grow", "grow", "grow"]
    assert [d.base for d in decisions] == [1000.0, 2000.0, 4000.0, 8000.0]


def test_rising_loss_shrinks_and_plateau_holds():
    decisions = run(DynamicBaseController(config(), 1000.0), [5.0, 6.0, 6.0, 6.001, 5.0])
    assert [d.action for d in decisions] == ["wait", "shrink", "hold", "hold", "grow"]
    assert [d.base for d in decisions] == [1000.0, 500.0, 500.0, 500.0, 1000.0]


def test_bounds_are_never_crossed():
    c = DynamicBaseController(config(), 1000.0)
    bases = [d.base for d in run(c, [10.0 - 0.5 * i for i in range(12)])]
    assert max(bases) == 10000.0 and bases[-1] == 10000.0  # 1000 -> 2000 -> ... capped
    bases = [d.base for d in run(DynamicBaseController(config(), 1000.0), [1.0 + i for i in range(12)])]
    assert min(bases) == 100.0 and bases[-1] == 100.0


def test_cooldown_and_start_step():
    c = DynamicBaseController(config(start_step=3, cooldown_steps=4), 1000.0)
    decisions = run(c, [10.0 - i for i in range(10)])
    acted = [d.step for d in decisions if d.action != "wait"]
    assert acted == [7]  # reference at step 3, next decision 4 steps later (step 11 is past the end)
    assert decisions[-1].base == 2000.0


def test_ema_matches_a_hand_computed_smoothing():
    beta = 0.9
    losses = [4.0, 3.0, 3.5, 2.0, 2.5]
    c = DynamicBaseController(config(ema_beta=beta, start_step=100), 1000.0)
    run(c, losses)
    ema = losses[0]
    for loss in losses[1:]:
        ema = beta * ema + (1 - beta) * loss
    assert math.isclose(c.ema, ema, rel_tol=1e-12)


def test_non_finite_loss_is_ignored_and_state_round_trips():
    c = DynamicBaseController(config(), 1000.0)
    run(c, [10.0, 9.0])
    before = c.state_dict()
    assert c.update(3, float("nan")).action == "wait" and c.state_dict() == before
    restored = DynamicBaseController(config(), 5.0)
    restored.load_state_dict(before)
    assert restored.update(3, 8.0) == c.update(3, 8.0)


@pytest.mark.parametrize("stacks", [["audio"], ["text"], ["audio", "text"]])
def test_apply_changes_the_chosen_stacks_in_place(stacks):
    dims, options = preset("seed-cpu-small", n_vocab=100)
    dims.n_audio_layer = dims.n_text_layer = 1
    model = ASRModel(dims, options)
    frequencies = {"audio": model.encoder.positions.rotary_frequencies,
                   "text": model.decoder.positions.rotary_frequencies}
    buffers = {k: f.inv_freq for k, f in frequencies.items()}
    c = DynamicBaseController(config(stacks=stacks, max_base=1e6), 10000.0)
    run(c, [3.0, 2.0])
    c.apply(model)
    bases = rotary_bases(model)
    for stack in ("audio", "text"):
        expected = 20000.0 if stack in stacks else 10000.0
        assert bases[stack] == expected
        assert frequencies[stack].inv_freq is buffers[stack]  # same tensor, updated in place
        head_dim = dims.n_audio_state // dims.n_audio_head
        reference = expected ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        assert torch.allclose(frequencies[stack].inv_freq.double(), reference, rtol=1e-6)
