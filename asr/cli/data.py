"""`asr data prepare` and `asr data validate`.

prepare reads a source, checks every utterance up front and writes a manifest only
when all is well (or, with --skip-bad, without the bad ones). Exit status: 0 written,
1 problems found or the source unreadable, 2 bad command line (argparse).

Registered into the main `asr` parser with add_data_parser(subparsers); also runs on
its own: `python -m asr data prepare SOURCE OUT.jsonl`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from .common import error
from ..data.manifest import ManifestError, read_manifest_lines, write_manifest
from ..data.sources import SOURCE_TYPES, SourceError, detect_source_type, load_source
from ..data.validate import DEFAULT_MAX_DURATION, Report, validate

SECONDS_PER_MINUTE = 60.0
SECONDS_PER_HOUR = 3600.0


def _max_duration(value: float) -> Optional[float]:
    return value if value > 0 else None  # 0 (or less) switches the limit off


def cmd_prepare(args) -> int:
    out = Path(args.output)
    if out.suffix.lower() != ".jsonl":
        error(f"{out}: the output manifest must be a .jsonl file")
        return 1
    line_problems: list[str] = []
    try:
        source_type = detect_source_type(args.source) if args.source_type == "auto" else args.source_type
        if source_type == "manifest":  # line by line, so every bad line is reported (and skippable)
            utterances, line_problems = read_manifest_lines(args.source, duplicates=True)
            utterances = utterances[:args.max_items] if args.max_items else utterances
        else:
            utterances = load_source(
                args.source,
                source_type=args.source_type,
                out_path=out,
                split=args.split,
                hf_config=args.hf_config,
                hf_audio_column=args.hf_audio_column,
                hf_text_column=args.hf_text_column,
                streaming=args.streaming,
                max_items=args.max_items,
                progress=not args.quiet,
            )
    except (SourceError, ManifestError) as err:
        error(str(err))
        return 1
    print_line_problems(line_problems)
    if not utterances:
        error(f"{args.source}: no utterances found")
        return 1

    report = validate(utterances, max_duration=_max_duration(args.max_duration), progress=not args.quiet)
    n_bad = len(report.bad) + len(line_problems)
    if n_bad:
        if not report.ok:
            print(report)
        if not args.skip_bad:
            error(f"{n_bad} bad utterances; nothing written (fix them, or pass --skip-bad to drop them)")
            return 1
        print(f"skipped {n_bad} bad utterances")

    kept = []
    for index, u in enumerate(utterances):
        if index in report.bad_indices:
            continue
        u.duration = report.durations[index]  # measured, not trusted from the source
        kept.append(u)
    if not kept:
        error("every utterance was bad; nothing written")
        return 1
    write_manifest(out, kept)
    print(f"wrote {len(kept)} utterances ({_total(kept)}) to {out}")
    return 0


def print_line_problems(problems: list[str]) -> None:
    """Manifest lines that cannot be used (invalid JSON, a missing key, not UTF-8, a repeated
    id): one error line each, "file:line: problem"."""
    for line in problems:
        error(line)


def cmd_validate(args) -> int:
    try:
        utterances, line_problems = read_manifest_lines(args.manifest, duplicates=True)
    except ManifestError as err:
        error(str(err))
        return 1
    print_line_problems(line_problems)
    report: Report = validate(
        utterances,
        max_duration=_max_duration(args.max_duration),
        check_audio=not args.no_audio,
        progress=not args.quiet,
    )
    if report.ok and not line_problems:
        print(f"{args.manifest}: {report} ({_total(utterances)})")
        return 0
    if not report.ok:
        print(report)
    return 1


def _total(utterances) -> str:
    """Total audio, readable at any size: "26.9 s", "12.5 min", "100.59 h"."""
    seconds = sum(u.duration or 0.0 for u in utterances)
    if seconds < SECONDS_PER_MINUTE:
        return f"{seconds:.1f} s"
    if seconds < SECONDS_PER_HOUR:
        return f"{seconds / SECONDS_PER_MINUTE:.1f} min"
    return f"{seconds / SECONDS_PER_HOUR:.2f} h"


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Register `data` (with `prepare` and `validate`) on the `asr` parser's subparsers."""
    data = subparsers.add_parser("data", help="prepare and check training data manifests")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser(
        "prepare",
        help="convert a data set into a JSONL manifest, checking every utterance first",
        description="Convert SOURCE into the manifest OUT (.jsonl). Every utterance is checked "
        "before anything is written; problems are listed one per line and nothing is written "
        "unless --skip-bad is given.",
    )
    p.add_argument("source", help="manifest file, LibriSpeech directory, audio folder with metadata, "
                   "or Hugging Face dataset (Hub name or local directory)")
    p.add_argument("output", help="manifest to write (.jsonl); audio paths in it are relative to its directory")
    p.add_argument("--source-type", default="auto", choices=("auto", *SOURCE_TYPES),
                   help="what SOURCE is (default: guessed from what is there)")
    p.add_argument("--split", help="LibriSpeech split directory under SOURCE, or the Hugging Face split")
    p.add_argument("--hf-config", help="Hugging Face: the dataset's configuration name (e.g. clean)")
    p.add_argument("--hf-audio-column", default="audio", help="Hugging Face: the audio column (default: audio)")
    p.add_argument("--hf-text-column", default="text", help="Hugging Face: the transcript column (default: text)")
    p.add_argument("--streaming", action="store_true",
                   help="Hugging Face: stream rows instead of downloading the whole split first")
    p.add_argument("--max-items", type=_positive_int, help="keep only the first N utterances")
    p.add_argument("--skip-bad", action="store_true", help="drop bad utterances instead of stopping")
    p.add_argument("--max-duration", type=float, default=DEFAULT_MAX_DURATION,
                   help="longest allowed utterance in seconds (default: %(default)s; 0: no limit)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("validate", help="check a manifest and its audio; list every problem")
    p.add_argument("manifest", help="JSONL manifest")
    p.add_argument("--max-duration", type=float, default=DEFAULT_MAX_DURATION,
                   help="longest allowed utterance in seconds (default: %(default)s; 0: no limit)")
    p.add_argument("--no-audio", action="store_true",
                   help="check only the manifest's fields, without opening the audio files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_validate)
    return data


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv=None) -> int:
    """Run `asr data ARGV...`, e.g. main(["prepare", "src", "out.jsonl"])."""
    parser = argparse.ArgumentParser(prog="asr")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
