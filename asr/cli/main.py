"""The `asr` command: the parser of every subcommand, and the one place that turns user errors
into one line and an exit status."""
from __future__ import annotations

import argparse
import sys

from .common import EXIT_FAILURE, EXIT_INTERRUPTED, error
from ..audio import AudioError
from ..store.checkpoint import CheckpointError


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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, AudioError) as err:
        error(str(err))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
