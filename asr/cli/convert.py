"""`asr convert SOURCE -o OUT_DIR [--format ...] [--tokenizer PATH]`.

Register with `add_convert_parser(subparsers)`; bad input prints one line and exits 1.
"""
from __future__ import annotations

import argparse
import sys

from .common import EXIT_FAILURE, error
from ..convert import FORMATS


def cmd_convert(args) -> int:
    from ..convert import ConversionError, convert
    from ..store.checkpoint import CheckpointError

    try:
        out_dir, model, tokenizer = convert(args.source, args.output, args.format, args.tokenizer)
    except (ConversionError, CheckpointError) as err:
        error(str(err))
        return EXIT_FAILURE
    except OSError as err:  # e.g. the output directory is not writable
        error(f"{err.filename or args.output}: {err.strerror or err}")
        return EXIT_FAILURE
    dims = model.dims
    vocabulary = f"tokenizer {tokenizer.n_vocab} tokens" if tokenizer else "no tokenizer (use --tokenizer)"
    print(f"{out_dir}: Whisper {dims.n_audio_layer}+{dims.n_text_layer} layers, width {dims.n_audio_state}, "
          f"{model.num_parameters() / 1e6:.2f} M parameters, {vocabulary}")
    return 0


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("convert", help="import pretrained Whisper weights as an asr checkpoint")
    p.add_argument("source", help="CTranslate2 directory, Hugging Face directory, or openai-whisper .pt")
    p.add_argument("-o", "--output", required=True, help="checkpoint directory to write")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS)
    p.add_argument("--tokenizer", help="tokenizer.json / vocabulary.txt (or a directory with one) to "
                                       "use instead of the source's own; needed for .pt files")
    p.set_defaults(func=cmd_convert)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="asr")
    add_convert_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
