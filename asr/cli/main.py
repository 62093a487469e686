"""The `asr` command: the parser of every subcommand, and the one place that turns user errors
into one line and an exit status."""
from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import threading

from .common import EXIT_FAILURE, EXIT_INTERRUPTED, error
from ..audio import AudioError
from ..store.layout import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    from .convert import add_convert_parser
    from .data import add_data_parser
    from .evaluate import add_evaluate_parsers
    from .tools import add_tool_parsers
    from .train import add_train_parsers
    from .transcribe import add_transcribe_parser

    parser = argparse.ArgumentParser(prog="asr", description="Whisper-style speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_transcribe_parser(sub)
    add_tool_parsers(sub)
    add_convert_parser(sub)
    add_data_parser(sub)
    add_train_parsers(sub)
    add_evaluate_parsers(sub)
    return parser


INTERRUPTED = "asr: error: interrupted\n"
_told = False  # the interrupted line was printed


def say_interrupted() -> None:
    global _told
    if not _told:
        _told = True
        os.write(sys.stderr.fileno(), INTERRUPTED.encode())


def leave_at_once(signum, frame) -> None:
    """A second Ctrl-C while the first unwinds: one line (if the first has not printed it yet)
    and out, with no traceback fragment from whatever cleanup was running (finished outputs are
    complete files already)."""
    say_interrupted()
    os._exit(EXIT_INTERRUPTED)


def interrupt(signum, frame) -> None:
    """The first Ctrl-C unwinds normally (KeyboardInterrupt, caught in main); from then on the
    next one ends the process at once."""
    signal.signal(signal.SIGINT, leave_at_once)
    raise KeyboardInterrupt


def main(argv=None) -> int:
    previous = signal.getsignal(signal.SIGINT)
    # only in the main thread, and not when a host program has a handler of its own
    ours = threading.current_thread() is threading.main_thread() and previous is signal.default_int_handler
    if ours:
        signal.signal(signal.SIGINT, interrupt)
    interrupted = False
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (CheckpointError, AudioError) as err:
        error(str(err))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        interrupted = True  # leave_at_once stays: the process is on its way out
        if ours:
            signal.signal(signal.SIGINT, leave_at_once)
        sys.stderr.flush()
        say_interrupted()
        return EXIT_INTERRUPTED
    finally:
        if ours and not interrupted:
            signal.signal(signal.SIGINT, previous)


def entry(run=None) -> None:
    """The console script and ``python -m asr`` (``run``: another main, such as
    ``python -m asr.cli.train``'s): main(), then out. After a Ctrl-C the process
    leaves at once (outputs are flushed; finished files are complete already): interpreter
    shutdown puts SIGINT back to its default action, so a second Ctrl-C during it would kill the
    process by signal instead of exiting 130 with its one line."""
    from .malloc import limit_heap_retention

    limit_heap_retention()
    status = (run or main)()
    if status == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    leave_without_teardown(status)
    sys.exit(status)


def leave_without_teardown(status: int) -> None:
    """Exit now, skipping the interpreter's teardown of modules and objects: after a
    transcription it took 0.24 s of a 1.7 s process (torch's modules and the model's tensors
    freed one by one; measured on a 2-core Xeon), memory the OS reclaims at once anyway. It
    also skips C++ static destructors: once, on a loaded CI machine, a finished two-process gloo
    training run aborted there (SIGABRT, 'terminate called without an active exception').
    What teardown would do that matters still runs: the atexit handlers (logging's flush,
    weakref finalizers that close files) and the flush of stdout and stderr. Only when the
    main thread is the last non-daemon thread: anything else still running is left to the
    ordinary exit, which waits for it."""
    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:  # not CPython
        return
    run_exit_handlers()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken pipe: the ordinary exit reports it
        return
    os._exit(status)


if __name__ == "__main__":
    entry()
