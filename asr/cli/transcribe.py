"""`asr transcribe AUDIO...`: files, directories or globs through one streaming call, results
printed (and written) as each file finishes, so one bad file costs no other its transcript."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_FAILURE, EXIT_OK, error, expand_inputs, expand_patterns, positive_int
from ..inference.transcribe import TEMPERATURES, TranscribeOptions
from ..inference.writers import FORMATS
from ..store.registry import DEFAULT_MODEL


def format_time(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:06.3f}"


def print_result(path: Path, result: dict, verbose: bool, many: bool) -> None:
    if verbose:
        if "language_probability" in result:
            print(f"detected language: {result['language']} ({result['language_probability']:.2f})")
        for segment in result["segments"]:
            print(f"[{format_time(segment['start'])} --> {format_time(segment['end'])}] {segment['text'].strip()}")
    elif many:
        print(f"{path}: {result['text']}")
    else:
        print(result["text"])


def cmd_transcribe(args) -> int:
    import torch
    from tqdm import tqdm

    from ..api import load_model
    from ..audio import AudioError
    from ..inference.writers import write_result

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        error(f"--device {args.device}: CUDA is not available on this machine")
        return EXIT_FAILURE
    paths = list(expand_inputs(expand_patterns(args.audio)))
    if not paths:
        error(f"{' '.join(args.audio)}: no audio files found")
        return EXIT_FAILURE
    model = load_model(args.model, device=args.device, quiet=args.quiet)
    options = dict(beam_size=args.beam_size, patience=args.patience, length_penalty=args.length_penalty,
                   temperature=tuple(args.temperature), language=args.language, task=args.task,
                   initial_prompt=args.initial_prompt, batch_size=args.batch_size,
                   condition_on_previous_text=args.condition_on_previous_text,
                   without_timestamps=args.without_timestamps)
    try:
        model.check_options(**options)
    except ValueError as err:
        error(str(err))
        return EXIT_FAILURE
    output_dir = args.output_dir or ("." if args.output_format else None)
    failed = 0
    audio_seconds = 0.0
    bar = tqdm(total=len(paths), desc="transcribing", unit="file", disable=args.quiet)
    for index, result in model.transcribe_stream(paths, **options):
        path = paths[index]
        if isinstance(result, AudioError):
            error(str(result), bar)
            failed += 1
        else:
            audio_seconds += result["duration"]
            if not args.quiet:
                bar.clear()
                print_result(path, result, args.verbose, many=len(paths) > 1)
            if output_dir:
                write_result(result, path, output_dir, args.output_format or "all")
        bar.update(1)
        bar.set_postfix(audio=f"{audio_seconds:.0f}s")
    bar.close()
    return EXIT_FAILURE if failed else EXIT_OK


def add_transcribe_parser(subparsers) -> argparse.ArgumentParser:
    defaults = TranscribeOptions()
    p = subparsers.add_parser("transcribe", help=f"transcribe audio files (default model: {DEFAULT_MODEL})")
    p.add_argument("audio", nargs="+", help="audio files, directories or glob patterns")
    p.add_argument("--model", default=DEFAULT_MODEL, help="built-in model name or checkpoint directory")
    p.add_argument("--output-dir", "-o", help="write <stem>.<format> files here")
    p.add_argument("--output-format", "-f", choices=FORMATS,
                   help="txt, vtt, srt, tsv, json or all (default with --output-dir: all)")
    p.add_argument("--beam-size", type=positive_int, default=defaults.beam_size,
                   help="beam search width (default: greedy)")
    p.add_argument("--patience", type=float, default=defaults.patience)
    p.add_argument("--length-penalty", type=float, default=defaults.length_penalty)
    p.add_argument("--temperature", type=float, nargs="+", default=list(TEMPERATURES),
                   help="temperature, or the fallback sequence (default: 0 0.2 ... 1.0)")
    p.add_argument("--language", default=defaults.language,
                   help="language code (en, fr, de...); default: English-only models use en, "
                        "multilingual ones detect it per file")
    p.add_argument("--task", default=defaults.task, choices=("transcribe", "translate"))
    p.add_argument("--initial-prompt", default=None, help="text that conditions the first window")
    p.add_argument("--condition-on-previous-text", action="store_true",
                   help="feed each window's text to the next as a prompt")
    p.add_argument("--without-timestamps", action="store_true", help="no timestamp tokens (one segment per window)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                   help=f"files decoded together (default: {defaults.batch_size})")
    p.add_argument("--verbose", action="store_true", help="print every segment with its times")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_transcribe)
    return p
