"""`asr plot RUN_DIR [RUN_DIR ...]`: one PNG of training loss, dev WER, learning rate and rotary
base by step. Several runs share the axes, one colour each, to compare them at equal steps."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from ..errors import InputError
from .loop import METRICS_FILE

# matplotlib's default colour cycle, spelled out so that a run keeps one colour on every panel
RUN_COLOURS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
# line style of each stack's rotary base (a run has one colour, its stacks one style each)
STACK_STYLES = {"audio": "-", "text": "--"}


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InputError(path, f"cannot read the run's metrics ({err.strerror or err})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"{path}:{number}", "not a JSON object") from None
    if not rows:
        raise InputError(path, "no metrics rows yet")
    return rows


def running_mean(values: list[float], window: int) -> list[float]:
    """The mean of the last `window` values at each position (fewer at the start): the per-step
    loss of small batches is too noisy to compare runs by eye."""
    if window < 1:
        raise ValueError(f"the smoothing window must be >= 1 step; got {window}")
    means, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        means.append(total / min(i + 1, window))
    return means


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a name."""
    names = [Path(d).name or str(d) for d in run_dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, run_dirs)]


def training_figure(runs: list[tuple[str, list[dict]]], smooth: int = 1):
    """A matplotlib figure of (label, metrics rows) runs: four panels sharing the step axis."""
    import matplotlib.pyplot as plt

    several = len(runs) > 1
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    for (label, rows), colour in zip(runs, itertools.cycle(RUN_COLOURS)):
        rows = [r for r in rows if r.get("loss") is not None]
        steps = [r["step"] for r in rows]
        prefix = f"{label}: " if several else ""
        axes[0].plot(steps, running_mean([r["loss"] for r in rows], smooth), lw=0.8, color=colour,
                     label=f"{prefix}joint loss")
        if not several and any(r.get("ctc_loss") for r in rows):  # one run: its two losses too
            for key, name in (("attention_loss", "attention"), ("ctc_loss", "CTC")):
                part = [r for r in rows if r.get(key) is not None]
                axes[0].plot([r["step"] for r in part], running_mean([r[key] for r in part], smooth),
                             lw=0.6, alpha=0.7, label=name)
        dev = [r for r in rows if "dev_wer" in r]
        axes[1].plot([r["step"] for r in dev], [100 * r["dev_wer"] for r in dev], "o-", color=colour,
                     label=label if several else None)
        axes[2].plot(steps, [r["lr"] for r in rows], color=colour)
        for key in sorted({k for r in rows for k in r if k.startswith("rotary_base_")}):
            stack = key.removeprefix("rotary_base_")
            axes[3].plot(steps, [r.get(key) for r in rows], STACK_STYLES.get(stack, ":"),
                         color=colour if several else None, label=f"{prefix}{stack}")
    axes[0].set_ylabel("training loss" + (f" (mean of {smooth} steps)" if smooth > 1 else ""))
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].set_ylabel("dev WER (%)")
    if several:
        axes[1].legend()
    axes[2].set_ylabel("learning rate")
    axes[3].set_ylabel("rotary base")
    if axes[3].lines:
        axes[3].legend()
    axes[3].set_xlabel("optimiser step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(" vs ".join(label for label, _ in runs))
    fig.tight_layout()
    return fig


def plot_runs(run_dirs: list[Path], output: Path | None = None, smooth: int = 1) -> Path:
    """Write the PNG of one run (default RUN_DIR/training.png) or of several (output required)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise InputError("asr plot", "no run directory given")
    if output is None and len(run_dirs) > 1:
        raise InputError("asr plot", f"{len(run_dirs)} runs go into one PNG: name it with -o PNG")
    if smooth < 1:
        raise InputError("--smooth", f"{smooth} is not a number of steps >= 1")
    labels = [str(run_dirs[0])] if len(run_dirs) == 1 else run_labels(run_dirs)
    runs = [(label, read_metrics(d)) for label, d in zip(labels, run_dirs)]
    output = Path(output) if output else Path(run_dirs[0]) / "training.png"
    fig = training_figure(runs, smooth)
    from ..store.atomic import atomic_write

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, lambda p: fig.savefig(p, format="png", dpi=100))
    except OSError as err:
        raise InputError(output, f"cannot write the plot ({err.strerror or err})") from None
    finally:
        plt.close(fig)
    return output
