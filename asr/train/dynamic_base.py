"""Dynamic base adjustment: the rotary base follows the smoothed training loss.

The rule, with every constant from ``DynamicBaseConfig``:

    ema  <- beta * ema + (1 - beta) * loss          after every optimiser step
    every cooldown_steps steps from start_step on, compare ema with the ema of the last decision:
        improved by more than tolerance (relative)  -> base *= grow    (keep stretching the
                                                       wavelengths while it helps)
        rose by more than tolerance                 -> base *= shrink  (back off)
        otherwise (a plateau)                       -> hold
    base stays within [min_base, max_base]

A larger base means longer rotary wavelengths: position information reaches further but is
coarser nearby. Moving it while the loss improves and backing off when the loss rises is a
slow, bounded search, never a flip between two values every step (the prototype's bug: it
multiplied by 1.05 or divided on each step's loss and never wrote the result back).

The controller is called by the training loop after the optimiser step, never between forward
and backward (the graph would mix two bases) and never in evaluation. It writes the base into
the model through the model's one base per stack, which updates every rotary layer in place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .config import DynamicBaseConfig

STACK_MODULES = {"audio": "encoder", "text": "decoder"}


def rotary_bases(model) -> dict[str, float]:
    """{stack: base} for the stacks of ``model`` that have rotary embeddings."""
    if hasattr(model, "rotary_bases"):  # {"encoder": base, "decoder": base}
        names = {module: stack for stack, module in STACK_MODULES.items()}
        return {names[name]: float(base) for name, base in model.rotary_bases().items()}
    bases = {}
    for stack, name in STACK_MODULES.items():
        frequencies = getattr(model, name).positions.rotary_frequencies
        if frequencies is not None:
            bases[stack] = float(frequencies.base)
    return bases


def set_rotary_base(model, value: float, stack: str) -> None:
    """Every rotary layer of one stack reads ``value`` from now on (in place, no new tensors)."""
    try:
        model.set_rotary_base(value, stack=STACK_MODULES[stack])
    except TypeError:  # a model with one base for both stacks only
        frequencies = getattr(model, STACK_MODULES[stack]).positions.rotary_frequencies
        if frequencies is not None:
            frequencies.set_base(value)


@dataclass
class Decision:
    step: int
    action: str  # "grow" | "shrink" | "hold" | "wait" (no decision this step)
    base: float


class DynamicBaseController:
    """Holds the smoothed loss and the base; ``update(step, loss)`` returns the base to use."""

    def __init__(self, config: DynamicBaseConfig, initial_base: float):
        self.config = config
        self.base = float(min(max(initial_base, config.min_base), config.max_base))
        self.ema: Optional[float] = None
        self.reference: Optional[float] = None  # the ema at the last decision
        self.last_decision_step: Optional[int] = None
        self.changes = 0

    def update(self, step: int, loss: float) -> Decision:
        """One optimiser step's (finite) training loss; ``step`` counts optimiser steps from 1."""
        c = self.config
        if not math.isfinite(loss):
            return Decision(step, "wait", self.base)  # a skipped step tells nothing
        self.ema = loss if self.ema is None else c.ema_beta * self.ema + (1.0 - c.ema_beta) * loss
        if step < c.start_step:
            return Decision(step, "wait", self.base)
        if self.reference is None:  # the first reference point: no decision yet
            self.reference, self.last_decision_step = self.ema, step
            return Decision(step, "wait", self.base)
        if step - self.last_decision_step < c.cooldown_steps:
            return Decision(step, "wait", self.base)
        relative = (self.reference - self.ema) / max(abs(self.reference), 1e-12)  # > 0: improving
        if relative > c.tolerance:
            action, base = "grow", self.base * c.grow
        elif relative < -c.tolerance:
            action, base = "shrink", self.base * c.shrink
        else:
            action, base = "hold", self.base
        base = min(max(base, c.min_base), c.max_base)
        if base != self.base:
            self.changes += 1
        self.base = base
        self.reference, self.last_decision_step = self.ema, step
        return Decision(step, action, self.base)

    def apply(self, model) -> None:
        """Write the controller's base into the configured stacks of ``model``."""
        present = rotary_bases(model)
        for stack in self.config.stacks:
            if stack in present and present[stack] != self.base:
                set_rotary_base(model, self.base, stack)

    def state_dict(self) -> dict:
        return {"base": self.base, "ema": self.ema, "reference": self.reference,
                "last_decision_step": self.last_decision_step, "changes": self.changes}

    def load_state_dict(self, state: dict) -> None:
        self.base = float(state["base"])
        self.ema = state["ema"]
        self.reference = state["reference"]
        self.last_decision_step = state["last_decision_step"]
        self.changes = int(state["changes"])
