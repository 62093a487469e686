"""`asr plot` of several runs: the smoothing against a naive window mean, each run's dev WER and
smoothed loss on the shared axes as its metrics say, and the CLI's one-line errors."""
from __future__ import annotations

import json
import random

import matplotlib
import pytest

matplotlib.use("Agg")

from asr.cli.main import main as cli_main  # noqa: E402
from asr.train.plot import run_labels, running_mean, training_figure  # noqa: E402


def naive_window_mean(values, window):
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1):i + 1]
        out.append(sum(part) / len(part))
    return out


@pytest.mark.parametrize("window", [1, 3, 7, 50])
def test_running_mean_matches_a_naive_window_mean(window):
    rng = random.Random(window)
    values = [rng.uniform(0.5, 5.0) for _ in range(40)]
    assert running_mean(values, window) == pytest.approx(naive_window_mean(values, window), rel=1e-12)


def test_running_mean_refuses_an_empty_window():
    with pytest.raises(ValueError, match=">= 1"):
        running_mean([1.0, 2.0], 0)


def fake_run(seed: int, steps: int = 30, every: int = 10) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for step in range(1, steps + 1):
        row = {"step": step, "loss": 4.0 - step / steps + rng.uniform(-0.3, 0.3), "lr": 1e-3 * seed,
               "rotary_base_audio": 1e4 + step, "rotary_base_text": 2e4 - step}
        if step % every == 0:
            row["dev_wer"] = rng.uniform(0.2, 1.0)
        rows.append(row)
    return rows


def test_several_runs_share_the_axes_one_colour_each():
    import matplotlib.pyplot as plt

    runs = [("a", fake_run(1)), ("b", fake_run(2, every=15))]
    fig = training_figure(runs, smooth=5)
    try:
        loss_ax, wer_ax, lr_ax, base_ax = fig.axes
        for line, (label, rows) in zip(loss_ax.lines, runs):
            assert line.get_label() == f"{label}: joint loss"
            assert list(line.get_ydata()) == pytest.approx(naive_window_mean([r["loss"] for r in rows], 5))
        assert len(loss_ax.lines) == 2  # one loss per run; the attention/CTC split only for one run
        for line, (label, rows) in zip(wer_ax.lines, runs):
            assert line.get_label() == label
            assert list(line.get_xdata()) == [r["step"] for r in rows if "dev_wer" in r]
            assert list(line.get_ydata()) == pytest.approx([100 * r["dev_wer"] for r in rows if "dev_wer" in r])
        assert [list(line.get_ydata())[0] for line in lr_ax.lines] == pytest.approx([1e-3, 2e-3])
        # each run's colour is the same on every panel; its stacks differ by line style
        colours = [line.get_color() for line in wer_ax.lines]
        assert len(set(colours)) == 2
        assert [line.get_color() for line in base_ax.lines] == [colours[0]] * 2 + [colours[1]] * 2
        assert [line.get_linestyle() for line in base_ax.lines] == ["-", "--", "-", "--"]
    finally:
        plt.close(fig)


def test_run_labels_are_folder_names_unless_two_share_one(tmp_path):
    dirs = [tmp_path / "x" / "run", tmp_path / "y" / "run", tmp_path / "small"]
    assert run_labels(dirs) == [str(dirs[0]), str(dirs[1]), "small"]


def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_cli_plots_several_runs_into_one_png(tmp_path, capsys):
    a, b = write_run(tmp_path / "a", fake_run(1)), write_run(tmp_path / "b", fake_run(2))
    out = tmp_path / "cmp.png"
    assert cli_main(["plot", str(a), str(b), "-o", str(out), "--smooth", "5"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    capsys.readouterr()
    assert cli_main(["plot", str(a), str(b)]) == 1  # several runs, no -o: which file is unclear
    err = capsys.readouterr().err.strip()
    assert "-o" in err and "\n" not in err

    assert cli_main(["plot", str(a), str(tmp_path / "missing"), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "missing") in err and "\n" not in err

    assert cli_main(["plot", str(a), "--smooth", "0"]) == 1
    assert "--smooth" in capsys.readouterr().err
