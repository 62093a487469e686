"""How many CPU threads the decoding steps of one window run on, chosen by timing them.

A decoding step is ~100 small operations (a few rows through 384-wide layers). On an idle
machine torch's intra-op threads pay off even there: the 302.6 s benchmark file took 6.4 s
greedy with the steps on 2 threads against 9.0 s on 1, and 10.1 s against 16.6 s at beam 5
(2-core Intel Xeon, nothing else running, 2026-12-06). On a machine whose cores are busy with
other work they are a disaster: each operation's fork-join waits for whichever thread the
kernel descheduled, and the same 60 s of audio took 39 s on 2 threads against 5.0 s on 1 with
two other CPU-bound processes running (same machine and day). Which case holds changes while a
file is transcribed, so each window measures it: after the first step (which also projects the
audio for cross-attention, a large product that threads always help), PROBE_STEPS steps
alternate between the caller's thread count and 1, and the rest of the window runs on the
count whose median step was shorter. Probing costs a few steps per window at the slower count:
a few milliseconds when idle, ~0.1 s when loaded.
"""
from __future__ import annotations

import statistics
import time
from typing import Optional

import torch

PROBE_STEPS = 6  # steps after the first, alternating most threads / 1 thread (3 timings each)


class StepThreads:
    """Sets torch's intra-op thread count before each decoding step of one window.

    most: the caller's thread count (torch.get_num_threads() when the window starts); with 1,
    or probe_steps 0, there is nothing to choose: every step runs on `most`. Use start_step() before a step and
    end_step() after it; restore() puts the caller's count back."""

    def __init__(self, most: int, probe_steps: int = PROBE_STEPS):
        self.most = most
        self.probe_steps = probe_steps if most > 1 else 0
        self.timings: dict[int, list[float]] = {most: [], 1: []}
        self.choice: Optional[int] = None if self.probe_steps else most
        self.step = 0
        self.current = most
        self.started = 0.0

    def start_step(self) -> None:
        if self.choice is not None:
            threads = self.choice
        elif self.step == 0:
            threads = self.most  # the step that also projects the audio
        else:
            threads = self.most if self.step % 2 else 1
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.current = threads
        self.started = time.perf_counter()

    def end_step(self) -> None:
        elapsed = time.perf_counter() - self.started
        if self.choice is None and self.step > 0:
            self.timings[self.current].append(elapsed)
            if self.step == self.probe_steps:
                self.choice = self.faster()
        self.step += 1

    def faster(self) -> int:
        """The thread count whose median probed step was shorter (ties: the caller's)."""
        many, one = (statistics.median(self.timings[n]) for n in (self.most, 1))
        return 1 if one < many else self.most

    def restore(self) -> None:
        if torch.get_num_threads() != self.most:
            torch.set_num_threads(self.most)
