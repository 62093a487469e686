"""Learning-rate schedules: linear warmup to the peak, then cosine or inverse-sqrt decay."""
from __future__ import annotations

import math
import statistics
from typing import Sequence

from .config import ScheduleConfig


def lr_factor(step: int, config: ScheduleConfig, max_steps: int) -> float:
    """Multiplier of the peak lr for optimiser step ``step`` (0-based: the step about to run)."""
    warmup = config.warmup_steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if config.kind == "constant":
        return 1.0
    if config.kind == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / (step + 1))
    # cosine from the end of warmup down to min_lr_ratio at max_steps
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


FIT_RESERVE = 0.02  # of the time left, kept back for the pace's jitter when a schedule is fitted
DISTURBED_STEP = 1.5  # a step slower than this many median steps counts as this many (another job's)


def steady_step_seconds(step_seconds: Sequence[float]) -> float:
    """The pace to expect for the rest of a run: the mean step time, with each step slower than
    DISTURBED_STEP x the median counted as DISTURBED_STEP x the median. Minutes lost to another
    job early in a run are already spent (the time left counts them); projected onto the rest of
    the run at their full length they shortened the schedule more than needed (RESULTS.md,
    eleventh attempt: 13688 steps instead of 17000). Counting them at the cap, rather than not
    at all, keeps the estimate on the slow side: a quiet run's steps also slow down a little
    as it goes on. A machine that stays busy moves the median itself, so its pace is kept."""
    if not step_seconds:
        raise ValueError("steady_step_seconds needs at least one step time")
    cap = DISTURBED_STEP * statistics.median(step_seconds)
    return sum(min(t, cap) for t in step_seconds) / len(step_seconds)


def fitted_max_steps(step: int, max_steps: int, seconds_left: float, step_seconds: float,
                     validation_seconds: float, every_steps: int, reserve: float = FIT_RESERVE) -> int:
    """The longest schedule, at most ``max_steps`` and at least ``step + 1`` steps, whose steps and
    validations after ``step`` fit in ``seconds_left`` at the pace measured so far: each step
    ``step_seconds``, each validation ``validation_seconds`` (one every ``every_steps`` steps and
    one at the end). run.fit_to_max_minutes: a recipe sized for one CPU then still completes its
    decay on a slower one, instead of being cut off by run.max_minutes with the lr near its peak."""
    budget = seconds_left * (1.0 - reserve)

    def cost(total: int) -> float:
        validations = total // every_steps - step // every_steps + (total % every_steps != 0)
        return (total - step) * step_seconds + validations * validation_seconds

    low, high = step + 1, max_steps  # the answer lies in [low, high]; cost grows with total
    if cost(high) <= budget:
        return high
    while low < high:
        middle = (low + high + 1) // 2
        if cost(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low
