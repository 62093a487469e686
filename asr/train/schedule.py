"""Learning-rate schedules: linear warmup to the peak, then cosine or inverse-sqrt decay."""
from __future__ import annotations

import math

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
