"""The `asr` command. Each subcommand is a small function; user errors print one line naming
the input and the problem, and a batch goes on past a bad file, exiting 1 at the end."""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, AudioError, load_audio, log_mel_spectrogram
from ..store.checkpoint import CheckpointError


def error(message: str) -> None:
    print(f"asr: error: {message}", file=sys.stderr)


def expand_inputs(inputs: list[str], suffixes=(".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".webm", ".opus")):
    """Files as given; directories expanded to the audio files inside them (sorted)."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
        else:
            yield path


def cmd_features(args) -> int:
    from tqdm import tqdm

    failed = 0
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for path in tqdm(list(expand_inputs(args.audio)), desc="featurising", unit="file", disable=args.quiet):
        try:
            audio = load_audio(path)
        except AudioError as err:
            error(str(err))
            failed += 1
            continue
        mel = log_mel_spectrogram(audio, n_mels=args.n_mels)
        print(f"{path}: {len(audio) / SAMPLE_RATE:.2f} s -> log-mel {tuple(mel.shape)} "
              f"(min {mel.min():.3f}, mean {mel.mean():.3f}, max {mel.max():.3f})")
        if out_dir:
            np.save(out_dir / f"{path.stem}.npy", mel.numpy())
    return 1 if failed else 0


def cmd_encode(args) -> int:
    import torch
    from tqdm import tqdm

    from ..store.checkpoint import load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.model, device=args.device)
    failed = 0
    for path in tqdm(list(expand_inputs(args.audio)), desc="encoding", unit="file", disable=args.quiet):
        try:
            audio = load_audio(path)
        except AudioError as err:
            error(str(err))
            failed += 1
            continue
        mel = log_mel_spectrogram(audio, n_mels=model.dims.n_mels, device=args.device)[None]
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                features, _ = model.embed_audio(mel)
        except ValueError as err:  # e.g. longer than the encoder's context
            error(f"{path}: {err}")
            failed += 1
            continue
        seconds = time.perf_counter() - start
        duration = len(audio) / SAMPLE_RATE
        print(f"{path}: {duration:.2f} s -> encoder output {tuple(features.shape[1:])} "
              f"in {seconds:.3f} s (real-time factor {seconds / duration:.3f})")
    return 1 if failed else 0


def expand_patterns(inputs: list[str]) -> list[str]:
    """Quoted globs ("talks/*.wav") are expanded here; a pattern that matches nothing stays, so
    it is reported as missing."""
    expanded = []
    for item in inputs:
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else []
        expanded.extend(matches or [item])
    return expanded


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
    from ..audio.stream import open_audio
    from ..inference.writers import write_result

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        error(f"--device {args.device}: CUDA is not available on this machine")
        return 1
    paths = list(expand_inputs(expand_patterns(args.audio)))
    if not paths:
        error(f"{' '.join(args.audio)}: no audio files found")
        return 1
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
        return 1
    output_dir = args.output_dir or ("." if args.output_format else None)
    failed = 0
    audio_seconds = 0.0
    bar = tqdm(total=len(paths), desc="transcribing", unit="file", disable=args.quiet)
    for start in range(0, len(paths), args.batch_size):
        chunk, arrays = [], []
        for path in paths[start:start + args.batch_size]:
            try:
                arrays.append(open_audio(path))  # decoded window by window while transcribing
                chunk.append(path)
            except AudioError as err:
                bar.write(f"asr: error: {err}", file=sys.stderr)
                failed += 1
                bar.update(1)
        if not chunk:
            continue
        try:
            results = model.transcribe_many(arrays, **options)
        except AudioError as err:  # a file that fails to decode half-way
            bar.write(f"asr: error: {err}", file=sys.stderr)
            failed += len(chunk)
            continue
        except ValueError as err:  # options the model cannot honour
            error(str(err))
            return 1
        for path, result in zip(chunk, results):
            audio_seconds += result["duration"]
            if not args.quiet:
                bar.clear()
                print_result(path, result, args.verbose, many=len(paths) > 1)
            if output_dir:
                write_result(result, path, output_dir, args.output_format or "all")
            bar.update(1)
            bar.set_postfix(audio=f"{audio_seconds:.0f}s")
    bar.close()
    return 1 if failed else 0


def cmd_models(args) -> int:
    from ..store.registry import CACHE_ENV, available, cache_dir

    rows = available()
    width = max(len(r[0]) for r in rows)
    print(f"cache: {cache_dir()}  (set {CACHE_ENV} to move it)")
    for name, status, where in rows:
        print(f"{name:<{width}}  {status:<34}  {where}")
    return 0


def cmd_init(args) -> int:
    from ..store.checkpoint import save_checkpoint
    from ..nn.model import ASRModel
    from ..nn.presets import preset

    import torch

    torch.manual_seed(args.seed)
    dims, options = preset(args.preset, n_vocab=args.n_vocab, n_mels=args.n_mels)
    model = ASRModel(dims, options)
    save_checkpoint(model, args.output, extra={"preset": args.preset})
    print(f"{args.output}: {args.preset}, {model.num_parameters() / 1e6:.2f} M parameters (random init)")
    return 0


def cmd_info(args) -> int:
    import json

    from ..store.checkpoint import load_checkpoint

    model, config = load_checkpoint(args.model)
    print(json.dumps({"dims": config["dims"], "options": config["options"]}, indent=2))
    print(f"parameters: {model.num_parameters() / 1e6:.2f} M")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..nn.presets import PRESETS
    from ..inference.transcribe import TEMPERATURES
    from ..inference.writers import FORMATS

    parser = argparse.ArgumentParser(prog="asr", description="Whisper-style speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="transcribe audio files (default model: Whisper tiny.en)")
    p.add_argument("audio", nargs="+", help="audio files, directories or glob patterns")
    p.add_argument("--model", default="tiny.en", help="built-in model name or checkpoint directory")
    p.add_argument("--output-dir", "-o", help="write <stem>.<format> files here")
    p.add_argument("--output-format", "-f", choices=FORMATS,
                   help="txt, vtt, srt, tsv, json or all (default with --output-dir: all)")
    p.add_argument("--beam-size", type=int, default=None, help="beam search width (default: greedy)")
    p.add_argument("--patience", type=float, default=1.0)
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--temperature", type=float, nargs="+", default=list(TEMPERATURES),
                   help="temperature, or the fallback sequence (default: 0 0.2 ... 1.0)")
    p.add_argument("--language", default=None,
                   help="language code (en, fr, de...); default: English-only models use en, "
                        "multilingual ones detect it per file")
    p.add_argument("--task", default="transcribe", choices=("transcribe", "translate"))
    p.add_argument("--initial-prompt", default=None, help="text that conditions the first window")
    p.add_argument("--condition-on-previous-text", action="store_true",
                   help="feed each window's text to the next as a prompt")
    p.add_argument("--without-timestamps", action="store_true", help="no timestamp tokens (one segment per window)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--batch-size", type=int, default=8, help="files decoded together")
    p.add_argument("--verbose", action="store_true", help="print every segment with its times")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("models", help="list built-in and cached models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("features", help="compute Whisper log-mel features of audio files")
    p.add_argument("audio", nargs="+", help="audio files or directories")
    p.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    p.add_argument("--output-dir", help="also save each log-mel as <stem>.npy here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("encode", help="run a checkpoint's audio encoder on audio files")
    p.add_argument("audio", nargs="+", help="audio files or directories")
    p.add_argument("--model", required=True, help="checkpoint directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("init", help="write a randomly initialised checkpoint of a named preset")
    p.add_argument("preset", choices=sorted(PRESETS))
    p.add_argument("-o", "--output", required=True, help="checkpoint directory to write")
    p.add_argument("--n-vocab", type=int, default=51864)
    p.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("info", help="print a checkpoint's dimensions and options")
    p.add_argument("model", help="checkpoint directory")
    p.set_defaults(func=cmd_info)

    from .convert import add_convert_parser
    from .data import add_data_parser

    add_convert_parser(sub)
    add_data_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, AudioError) as err:
        error(str(err))
        return 1
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
