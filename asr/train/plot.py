"""`asr plot RUN_DIR`: one PNG of training loss, dev WER, learning rate and rotary base by step."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .loop import METRICS_FILE


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


def plot_run(run_dir: Path, output: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(run_dir) if r.get("loss") is not None]
    output = Path(output) if output else Path(run_dir) / "training.png"
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    axes[0].plot(steps, [r["loss"] for r in rows], lw=0.8, label="joint loss")
    if any(r.get("ctc_loss") for r in rows):
        axes[0].plot(steps, [r.get("attention_loss") for r in rows], lw=0.6, alpha=0.7, label="attention")
        axes[0].plot(steps, [r.get("ctc_loss") for r in rows], lw=0.6, alpha=0.7, label="CTC")
    axes[0].set_ylabel("training loss")
    axes[0].set_yscale("log")
    axes[0].legend()
    dev = [r for r in rows if "dev_wer" in r]
    axes[1].plot([r["step"] for r in dev], [100 * r["dev_wer"] for r in dev], "o-")
    axes[1].set_ylabel("dev WER (%)")
    axes[2].plot(steps, [r["lr"] for r in rows])
    axes[2].set_ylabel("learning rate")
    for key in sorted({k for r in rows for k in r if k.startswith("rotary_base_")}):
        axes[3].plot(steps, [r.get(key) for r in rows], label=key.removeprefix("rotary_base_"))
    axes[3].set_ylabel("rotary base")
    if axes[3].lines:
        axes[3].legend()
    axes[3].set_xlabel("optimiser step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    from ..store.atomic import atomic_write

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, lambda p: fig.savefig(p, format="png", dpi=100))
    except OSError as err:
        raise InputError(output, f"cannot write the plot ({err.strerror or err})") from None
    finally:
        plt.close(fig)
    return output
