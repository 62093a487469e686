"""The command line answers --help, option mistakes and missing inputs without importing torch
(about 2 s of every start-up on the CPUs measured): a mistyped file name is told at once, not
after the model has loaded. Checked by what a run leaves in sys.modules."""
from __future__ import annotations

import subprocess
import sys

import pytest

from test_train_resume import REPO

PROBE = """
import sys
from asr.cli.main import build_parser, main
if sys.argv[1:] == ["ALL-HELP"]:  # every subcommand's --help, in one process
    parser = build_parser()
    names = next(a for a in parser._actions if a.dest == "command").choices
    for name in names:
        try:
            main([name, "--help"])
        except SystemExit as exit:
            assert exit.code == 0, (name, exit.code)
    code = 0
else:
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print("torch loaded:", "torch" in sys.modules, "exit:", code)
"""


def probe(*argv: str) -> tuple[str, str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1], result.stderr


@pytest.mark.parametrize("argv, code", [
    (["ALL-HELP"], 0),
    (["--help"], 0),
    (["transcribe", "--beam-size", "zero", "x.wav"], 2),  # an option argparse refuses
    (["transcribe", "no-such-file.wav", "no-such-dir/b.flac"], 1),
])
def test_help_and_input_errors_do_not_import_torch(argv, code):
    last, stderr = probe(*argv)
    assert last == f"torch loaded: False exit: {code}", (last, stderr[-1500:])
    if argv[1:2] == ["no-such-file.wav"]:
        assert stderr.splitlines() == ["asr: error: no-such-file.wav: file not found",
                                       "asr: error: no-such-dir/b.flac: file not found"]


def test_the_probe_sees_torch_when_a_command_needs_it(tmp_path):
    """The control: the same probe on a command that computes log-mel features reports torch
    loaded, so the test above can fail."""
    last, stderr = probe("features", str(REPO / "data/audio/goforward.flac"), "--quiet")
    assert last == "torch loaded: True exit: 0", (last, stderr[-1500:])


LEAVE = """
import atexit, sys, threading
from pathlib import Path
from asr.cli.main import leave_without_teardown
atexit.register(lambda: Path(sys.argv[1]).write_text("atexit ran"))
sys.stdout.write("buffered, no newline")  # a pipe: block-buffered, so only a flush delivers it
if sys.argv[2] == "busy":  # a non-daemon thread still running: the ordinary exit waits for it
    release = threading.Event()
    threading.Thread(target=release.wait, args=(30,)).start()
    leave_without_teardown(3)
    sys.stdout.write(" | returned")
    release.set()
    sys.exit(4)
leave_without_teardown(3)
sys.stdout.write(" | not left")
"""


@pytest.mark.parametrize("state, code, out", [
    ("idle", 3, "buffered, no newline"),
    ("busy", 4, "buffered, no newline | returned"),
])
def test_leaving_without_teardown_keeps_exit_handlers_output_and_running_threads(tmp_path, state, code, out):
    """The console script ends with os._exit after a command (the interpreter's teardown cost
    0.24 s of a short transcription): the exit status, buffered output and atexit handlers
    (logging's flush, finalizers closing files) must survive that, and a running non-daemon
    thread must make it fall back to the ordinary exit instead of being killed."""
    marker = tmp_path / "marker"
    result = subprocess.run([sys.executable, "-c", LEAVE, str(marker), state], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert (result.returncode, result.stdout) == (code, out), result.stderr[-1500:]
    assert marker.read_text() == "atexit ran"


def test_collector_is_paused_for_start_up_then_frozen_and_back_on():
    """asr transcribe imports torch and loads the model with the garbage collector off (its
    passes over torch's objects cost start-up time); afterwards collection must be on again,
    with those objects frozen out of it, and an error inside must not leave it off."""
    import gc

    from asr.cli.common import collector_paused

    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    try:
        with collector_paused():
            assert not gc.isenabled()
            kept = [[i] for i in range(1000)]  # tracked containers made while paused
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(kept)
        with pytest.raises(RuntimeError):
            with collector_paused():
                raise RuntimeError("load failed")
        assert gc.isenabled()
    finally:
        gc.unfreeze()
