"""The decoding steps' thread count is chosen per window by timing: the first step on the
caller's threads, then PROBE_STEPS steps alternating the caller's count and 1, then the count
with the shorter median for the rest. Timed with a fake clock, so the test decides which is
faster; the caller's count is put back afterwards."""
import pytest
import torch

from asr.inference import step_threads
from asr.inference.step_threads import PROBE_STEPS, StepThreads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def run_steps(monkeypatch, n_steps, seconds_on):
    """Drive StepThreads through n_steps with a clock where a step on k threads takes
    seconds_on[k]; returns the thread count torch had during each step."""
    clock = [0.0]
    monkeypatch.setattr(step_threads.time, "perf_counter", lambda: clock[0])
    chooser = StepThreads(torch.get_num_threads())
    seen = []
    for _ in range(n_steps):
        chooser.start_step()
        seen.append(torch.get_num_threads())
        clock[0] += seconds_on[torch.get_num_threads()]
        chooser.end_step()
    chooser.restore()
    return seen


@pytest.mark.parametrize("seconds_on, chosen", [
    ({2: 0.003, 1: 0.005}, 2),  # an idle machine: threads pay
    ({2: 0.040, 1: 0.005}, 1),  # busy cores: fork-join waits on descheduled threads
])
def test_the_faster_thread_count_is_kept_after_the_probe(monkeypatch, two_threads, seconds_on, chosen):
    seen = run_steps(monkeypatch, 1 + PROBE_STEPS + 5, seconds_on)
    assert seen[0] == 2  # the first step projects the audio: always the caller's threads
    assert sorted(seen[1:1 + PROBE_STEPS]) == [1] * (PROBE_STEPS // 2) + [2] * (PROBE_STEPS // 2)
    assert seen[1 + PROBE_STEPS:] == [chosen] * 5
    assert torch.get_num_threads() == 2  # restored


def test_one_thread_means_no_probe(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_steps(monkeypatch, 10, {1: 0.001}) == [1] * 10
    finally:
        torch.set_num_threads(before)


def test_a_short_window_restores_the_callers_threads_mid_probe(monkeypatch, two_threads):
    seen = run_steps(monkeypatch, 3, {2: 0.003, 1: 0.005})  # ends while probing, on 1 thread
    assert seen == [2, 2, 1] and torch.get_num_threads() == 2


def test_no_probe_leaves_the_callers_threads_alone(monkeypatch, two_threads):
    """probe_steps=0 (decoding off the CPU): every step on the caller's count, restored as is."""
    clock = [0.0]
    monkeypatch.setattr(step_threads.time, "perf_counter", lambda: clock[0])
    chooser = StepThreads(torch.get_num_threads(), probe_steps=0)
    for _ in range(1 + PROBE_STEPS + 3):
        chooser.start_step()
        assert torch.get_num_threads() == 2
        clock[0] += 0.001
        chooser.end_step()
    chooser.restore()
    assert torch.get_num_threads() == 2
