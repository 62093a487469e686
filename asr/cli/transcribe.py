"""`asr transcribe AUDIO...`: files, directories or globs through one streaming call, results
printed (and written) as each file finishes, so one bad file costs no other its transcript."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Optional

from .common import (EXIT_FAILURE, EXIT_OK, check_output_dir, collector_paused, error, expand_inputs,
                     expand_patterns, ctc_weight, non_negative_float, optional_float, positive_int, printable,
                     temperatures, warning)
from ..inference.options import COMPUTE_TYPES, TranscribeOptions
from ..inference.subtitles import SubtitleOptions
from ..inference.writers import FORMATS
from ..store.registry import DEFAULT_MODEL


def format_time(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:06.3f}"


TEMPERATURE_INCREMENT = 0.2  # whisper's --temperature_increment_on_fallback
MAX_FALLBACK_TEMPERATURE = 1.0  # the hottest temperature the increments reach


def fallback_temperatures(given: tuple[float, ...], increment: float) -> tuple[float, ...]:
    """The temperatures to try, as whisper builds them: a sequence given with commas as it is;
    one temperature t followed by t + increment, ... up to 1.0 (none with increment 0)."""
    if len(given) > 1 or increment == 0 or given[0] >= MAX_FALLBACK_TEMPERATURE:
        return given
    steps = int((MAX_FALLBACK_TEMPERATURE - given[0]) / increment + 1e-6)
    return tuple(round(given[0] + k * increment, 6) for k in range(steps + 1))


def print_result(path: Path, result: dict, verbose: bool, many: bool) -> None:
    name = printable(path)
    if verbose:
        prefix = f"{name}: " if many else ""  # several files: every line says whose it is
        if "language_probability" in result:
            print(f"{prefix}detected language: {result['language']} ({result['language_probability']:.2f})")
        for segment in result["segments"]:
            print(f"{prefix}[{format_time(segment['start'])} --> {format_time(segment['end'])}] "
                  f"{segment['text'].strip()}")
    elif many:
        print(f"{name}: {result['text']}")
    else:
        print(result["text"])


def audio_seconds(path: Path) -> Optional[float]:
    """A file's duration from its header (soundfile formats), None where that needs a decode."""
    import soundfile as sf

    from ..audio.load import c_library_quiet, soundfile_name

    try:
        with c_library_quiet():
            info = sf.info(soundfile_name(path))
    except Exception:  # unreadable, or a container only FFmpeg knows: found when decoded
        return None
    return info.frames / info.samplerate if info.samplerate > 0 else None


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. repaired NaN samples) as one `asr: warning:` line, without the source line."""
    warning(str(message))


def cmd_transcribe(args) -> int:
    from ..audio import AudioError
    from ..audio.load import check_audio_path

    # the inputs and the output folder are checked before torch is imported and the model
    # loaded (seconds): a mistyped name is told at once
    inputs = expand_patterns(args.audio)
    paths = list(expand_inputs(inputs))
    if not paths:
        error(f"{' '.join(args.audio)}: no audio files found")
        return EXIT_FAILURE
    # a directory with nothing to transcribe is reported, and the other inputs go on
    empty = [item for item in inputs if Path(item).is_dir() and not any(expand_inputs([item]))]
    for item in empty:
        error(f"{item}: no audio files in this directory")
    unopenable = []
    for path in paths:
        try:
            check_audio_path(path)
        except AudioError as err:
            unopenable.append(err)
    if len(unopenable) == len(paths):  # nothing to go on with: no model needed to say so
        for err in unopenable:
            error(str(err))
        return EXIT_FAILURE
    try:
        subtitles = subtitle_options(args)
    except ValueError as err:
        error(str(err))
        return EXIT_FAILURE
    output_dir = args.output_dir or ("." if args.output_format else None)
    problem = output_dir and check_output_dir(output_dir)
    if problem:  # before the model loads and anything is decoded
        error(problem)
        return EXIT_FAILURE

    with collector_paused():
        import torch
        from tqdm import tqdm

        from ..api import load_model
        from ..inference.compute import ComputeTypeError
        from ..inference.writers import write_result

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            error(f"--device {args.device}: CUDA is not available on this machine")
            return EXIT_FAILURE
        warnings.showwarning = show_warning
        try:
            model = load_model(args.model, device=args.device, quiet=args.quiet, compute_type=args.compute_type)
        except ComputeTypeError as err:
            error(f"--compute-type {args.compute_type}: {err}")
            return EXIT_FAILURE
    options = dict(beam_size=args.beam_size, best_of=args.best_of, patience=args.patience,
                   length_penalty=args.length_penalty,
                   temperature=fallback_temperatures(args.temperature, args.temperature_increment_on_fallback),
                   language=args.language, task=args.task, seed=args.seed,
                   initial_prompt=args.initial_prompt, batch_size=args.batch_size,
                   condition_on_previous_text=args.condition_on_previous_text,
                   without_timestamps=args.without_timestamps, batched=args.batched, ctc_weight=args.ctc_weight,
                   word_timestamps=args.word_timestamps, prepend_punctuations=args.prepend_punctuations,
                   append_punctuations=args.append_punctuations,
                   suppress_tokens=args.suppress_tokens,
                   compression_ratio_threshold=args.compression_ratio_threshold,
                   logprob_threshold=args.logprob_threshold, no_speech_threshold=args.no_speech_threshold)
    try:
        model.check_options(**options)
    except ValueError as err:
        error(str(err))
        return EXIT_FAILURE
    failed = done = 0
    # the bar counts seconds of audio as windows are decoded, so a single long file moves it too;
    # durations come from the headers (a file only FFmpeg reads adds its length when it is done)
    known = [audio_seconds(path) for path in paths]
    bar = tqdm(total=round(sum(s or 0.0 for s in known), 1), desc="transcribing", unit="audio-s",
               disable=args.quiet, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")

    def advance(seconds: float) -> None:
        bar.total = max(bar.total, bar.n + seconds)
        bar.update(seconds)

    for index, result in model.transcribe_stream(paths, on_progress=advance, **options):
        path = paths[index]
        done += 1
        if isinstance(result, AudioError):
            error(str(result), bar)
            failed += 1
        else:
            if not args.quiet:
                bar.clear()
                print_result(path, result, args.verbose, many=len(paths) > 1)
            if output_dir:
                try:
                    write_result(result, path, output_dir, args.output_format or "all", subtitles=subtitles)
                except OSError as err:  # e.g. the disk filled up: the other files go on
                    error(f"{output_dir}: cannot write the outputs of {path} ({err.strerror or err})", bar)
                    failed += 1
        bar.set_postfix(files=f"{done}/{len(paths)}")
    bar.close()
    return EXIT_FAILURE if failed or empty else EXIT_OK


def subtitle_options(args) -> SubtitleOptions:
    """The subtitle shape asked for; ValueError (one line) for a combination that would do
    nothing: each option needs word timestamps, a line count needs a line width, and words per
    line do nothing once both a width and a count are given (cues then follow the width)."""
    options = SubtitleOptions(args.max_line_width, args.max_line_count, args.max_words_per_line,
                              args.highlight_words)
    given = [name for name, value in (("--max-line-width", args.max_line_width),
                                      ("--max-line-count", args.max_line_count),
                                      ("--max-words-per-line", args.max_words_per_line),
                                      ("--highlight-words", args.highlight_words)) if value]
    if given and not args.word_timestamps:
        raise ValueError(f"{given[0]}: subtitles are shaped from word timestamps: add --word-timestamps")
    if args.max_line_count and not args.max_line_width:
        raise ValueError("--max-line-count: lines only break at a width: add --max-line-width")
    if args.max_words_per_line and args.max_line_width and args.max_line_count:
        raise ValueError("--max-words-per-line does nothing once --max-line-width and --max-line-count "
                         "are both given: leave one of the three out")
    return options


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
    p.add_argument("--best-of", type=positive_int, default=defaults.best_of,
                   help="samples of a window decoded again at a temperature above 0, the best ranked kept "
                        "(default: %(default)s, as Whisper)")
    p.add_argument("--patience", type=float, default=defaults.patience)
    p.add_argument("--length-penalty", type=float, default=defaults.length_penalty)
    p.add_argument("--temperature", type=temperatures, default=(0.0,),
                   help="temperature, or the whole fallback sequence with commas (e.g. 0,0.4,0.8); default 0")
    p.add_argument("--temperature-increment-on-fallback", type=non_negative_float, default=TEMPERATURE_INCREMENT,
                   help="a window that fails is decoded again this much hotter, up to 1.0 "
                        f"(default: {TEMPERATURE_INCREMENT}; 0: no fallback)")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help=f"seeds the sampling of fallback windows, per window (default: {defaults.seed}): reruns agree")
    p.add_argument("--language", default=defaults.language,
                   help="language code (en, fr, de...); default: English-only models use en, "
                        "multilingual ones detect it per file")
    p.add_argument("--task", default=defaults.task, choices=("transcribe", "translate"))
    p.add_argument("--initial-prompt", default=None, help="text that conditions the first window")
    p.add_argument("--condition-on-previous-text", action="store_true",
                   help="feed each window's text to the next as a prompt")
    p.add_argument("--suppress-tokens", default=None, metavar="IDS",
                   help="comma-separated token ids never to produce; -1: the model's non-speech symbols "
                        "(default: -1, as Whisper)")
    p.add_argument("--compression-ratio-threshold", type=optional_float, default=defaults.compression_ratio_threshold,
                   help="gzip compression ratio above which a window is decoded again at the next "
                        "temperature (default: %(default)s; none: never)")
    p.add_argument("--logprob-threshold", type=optional_float, default=defaults.logprob_threshold,
                   help="mean token log-probability below which a window is decoded again "
                        "(default: %(default)s; none: never)")
    p.add_argument("--no-speech-threshold", type=optional_float, default=defaults.no_speech_threshold,
                   help="<|nospeech|> probability above which a window is taken as silence when its "
                        "log-probability is also below --logprob-threshold (default: %(default)s; none: never)")
    p.add_argument("--without-timestamps", action="store_true", help="no timestamp tokens (one segment per window)")
    p.add_argument("--word-timestamps", action="store_true",
                   help="time every word (from the decoder's cross-attention, as Whisper); the json output "
                        "gets words with start, end and probability per segment")
    p.add_argument("--prepend-punctuations", default=defaults.prepend_punctuations, metavar="CHARS",
                   help="with --word-timestamps, punctuation joined to the next word (default: %(default)s)")
    p.add_argument("--append-punctuations", default=defaults.append_punctuations, metavar="CHARS",
                   help="with --word-timestamps, punctuation joined to the previous word (default: %(default)s)")
    p.add_argument("--max-line-width", type=positive_int, metavar="CHARS",
                   help="with --word-timestamps: srt/vtt lines of at most this many characters")
    p.add_argument("--max-line-count", type=positive_int, metavar="LINES",
                   help="with --max-line-width: at most this many lines per subtitle (cues then run across "
                        "segments, and a pause over 3 s starts a new one)")
    p.add_argument("--max-words-per-line", type=positive_int, metavar="WORDS",
                   help="with --word-timestamps: at most this many words per subtitle line")
    p.add_argument("--highlight-words", action="store_true",
                   help="with --word-timestamps: srt/vtt cues word by word, the spoken word underlined")
    p.add_argument("--ctc-weight", type=ctc_weight, default=0.0,
                   help="joint CTC/attention decoding with this weight on the CTC prefix score, 0-1 (models "
                        "trained with a CTC head; needs --without-timestamps; default 0: attention only)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--compute-type", default="auto", choices=COMPUTE_TYPES,
                   help="auto (default: the fastest type agreeing with float32 on >= 99%% of words; "
                        "on CPU bfloat16_encoder_float16_decoder, float16_decoder or float32_shortlist by what "
                        "the CPU computes, float32 on CUDA), "
                        "float32, float32_shortlist (float32 with an int8 vocabulary shortlist, CPU), "
                        "float16_decoder (float32_shortlist with the decoder's step weights held in float16, "
                        "products in float32, x86 CPU with AVX2), "
                        "bfloat16_encoder (float32_shortlist with the encoder's linear layers in bfloat16, "
                        "CPU with AVX512-BF16/AMX), bfloat16_encoder_float16_decoder (both), "
                        "int8 (fastest on CPU, ~1 point more WER), "
                        "bfloat16 (CUDA or a CPU with AVX512-BF16/AMX), float16 (CUDA)")
    p.add_argument("--batched", action="store_true",
                   help="decode several 30 s windows of each file in one batch, cut at pauses "
                        "(no conditioning on previous text)")
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                   help=f"files decoded together (default: {defaults.batch_size})")
    p.add_argument("--verbose", action="store_true", help="print every segment with its times")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_transcribe)
    return p
