"""TensorBoard event files beside metrics.jsonl, for those who follow runs in TensorBoard
(``run.tensorboard: true``; needs ``pip install 'asr[tensorboard]'``).

metrics.jsonl stays the record (``asr plot`` reads it, and a resume cuts it exactly); the event
files in ``RUN_DIR/tensorboard/`` get the same numbers: every numeric field of each row as a
scalar at its step. A resumed run opens its writer with ``purge_step`` at its first new step, so
TensorBoard hides what the killed process had logged past the checkpoint and then relogged.
"""
from __future__ import annotations

from pathlib import Path

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLog:
    def __init__(self, run_dir: Path, first_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at or after it from an earlier process (killed past its last
        # checkpoint) are hidden, as metrics.jsonl's rows after the checkpoint are cut
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR),
                                    purge_step=first_step if first_step > 1 else None)

    def write(self, row: dict) -> None:
        step = row["step"]
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        if any(key.startswith("dev_") for key in row):  # validations are rare: show them at once
            self.flush()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

