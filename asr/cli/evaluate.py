"""`asr evaluate`, `asr compare` and `asr benchmark build`.

    asr evaluate --model tiny.en --data offline-en [--output-dir D]
    asr evaluate --system faster-whisper-int8 --data offline-en
    torchrun --nproc_per_node 2 -m asr evaluate --data manifest.jsonl ...   (gloo: CPU processes)
    asr compare runs/asr runs/fw-int8 runs/pocketsphinx [--output-dir D]
    asr benchmark build offline-en OUT_DIR [--synth-en DIR]

Exit status of evaluate: 0 all scored, 1 some audio could not be read (listed, excluded and
counted in the report) or the data/model could not be used, 2 bad command line.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .common import EXIT_FAILURE, EXIT_OK, ctc_weight, error, positive_int
from ..store.registry import DEFAULT_MODEL

DEFAULT_OUTPUT = "eval"


def _init_distributed():
    """torchrun sets WORLD_SIZE: join its process group (gloo, CPU) and return (rank, size)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), size


def _rank_device(device: str, size: int) -> str:
    """Under torchrun each process takes its own GPU: a bare "cuda" means cuda:LOCAL_RANK (all
    on cuda:0 otherwise)."""
    if device == "cuda" and size > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def _shared(load, rank: int, size: int):
    """``load()`` on rank 0 only, its result (or its one-line error) sent to every rank: the
    data sources are read, and a Hugging Face dataset's audio written, once."""
    if size == 1:
        return load()
    import torch.distributed as dist

    payload = [None]
    if rank == 0:
        try:
            payload = [load()]
        except (ValueError, OSError) as err:
            payload = [ValueError(str(err))]
    dist.broadcast_object_list(payload, src=0)
    if isinstance(payload[0], Exception):
        raise payload[0]
    return payload[0]


def _make_system(args, size: int):
    import torch

    from ..inference.options import TEMPERATURES

    threads = args.threads or max(1, (os.cpu_count() or 1) // size)
    torch.set_num_threads(threads)
    temperatures = TEMPERATURES if args.fallback else (args.temperature,)
    if args.system == "asr":
        from ..api import load_model
        from ..evaluate.systems import AsrSystem

        model = load_model(args.model, device=_rank_device(args.device, size), quiet=True,
                           compute_type=args.compute_type)
        model.check_options(without_timestamps=args.without_timestamps, ctc_weight=args.ctc_weight)
        return AsrSystem(model, args.model, beam_size=args.beam_size, batch_size=args.batch_size,
                         temperatures=temperatures, without_timestamps=args.without_timestamps, seed=args.seed,
                         ctc_weight=args.ctc_weight)
    from ..evaluate.systems import make_peer

    if args.model != DEFAULT_MODEL or args.compute_type != "float32":  # peers' own weights and types
        raise ValueError(f"--model/--compute-type: only for --system asr; {args.system} runs its own bundled "
                         "model in the type its name says")
    return make_peer(args.system, threads, args.beam_size, temperatures)


def cmd_evaluate(args) -> int:
    from ..data.manifest import ManifestError
    from ..evaluate.datasets import DatasetError, load_datasets
    from ..evaluate.report import printed_summary
    from ..evaluate.runner import EvaluationError, evaluate
    from ..store.checkpoint import CheckpointError
    from ..text.normalize import get_normalizer

    out_dir = Path(args.output_dir)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            error(f"--device {args.device}: CUDA is not available on this machine")
            return EXIT_FAILURE
    rank, size = _init_distributed()
    try:
        normalizer = get_normalizer(args.normalizer)
        datasets = _shared(lambda: load_datasets(args.data, out_dir / "data", split=args.split), rank, size)
        system = _make_system(args, size)
        started = time.perf_counter()
        data = {d.name: {"source": d.source, "utterances": len(d.utterances)} for d in datasets}
        report = evaluate(system, datasets, normalizer, out_dir, limit=args.limit, resume=args.resume,
                          extra_settings={"data": data}, progress=not args.quiet and rank == 0)
    except (DatasetError, ManifestError, EvaluationError, CheckpointError, ValueError) as err:
        if rank == 0:
            error(str(err))
        return EXIT_FAILURE
    finally:
        _close_distributed()
    if report is None:  # a rank other than 0: rank 0 prints and writes
        return EXIT_OK
    print(printed_summary(report))
    print(f"report: {out_dir} (summary.md, utterances.jsonl, errs-*.txt, *.png); "
          f"wall time {time.perf_counter() - started:.1f} s")
    if report.bad:
        error(f"{len(report.bad)} utterance(s) could not be read and were excluded (listed above)")
        return EXIT_FAILURE
    return EXIT_OK


def _close_distributed() -> None:
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cmd_compare(args) -> int:
    from ..evaluate.compare import CompareError, compare, printed, write

    try:
        comparison = compare([Path(p) for p in args.reports])
    except (CompareError, ValueError, OSError) as err:
        error(str(err))
        return EXIT_FAILURE
    print(printed(comparison))
    if args.output_dir:
        write(comparison, Path(args.output_dir))
        print(f"written: {Path(args.output_dir) / 'compare.md'}, {Path(args.output_dir) / 'compare.png'}")
    return EXIT_OK


def cmd_benchmark_build(args) -> int:
    from ..evaluate.benchmark import build_offline_en, find_synth_en

    synth_en = Path(args.synth_en) if args.synth_en else find_synth_en()
    if args.synth_en and not (synth_en / "dev.jsonl").exists():
        error(f"{synth_en}: not a recipes/synth_en build (no dev.jsonl)")
        return EXIT_FAILURE
    try:
        build_offline_en(Path(args.out_dir), synth_en=synth_en)
    except (ValueError, OSError) as err:
        error(str(err))
        return EXIT_FAILURE
    return EXIT_OK


def add_evaluate_parsers(subparsers) -> None:
    from ..evaluate.datasets import PRESETS
    from ..evaluate.systems import SYSTEMS
    from ..inference.options import COMPUTE_TYPES
    from ..text.normalize import NORMALIZERS

    p = subparsers.add_parser(
        "evaluate", help="WER/CER of a model (or a peer) on datasets, with a report directory",
        description="Corpus WER and CER per dataset and their unweighted mean, bootstrap 95% CI, RTFx, and a "
                    "report directory (per-utterance JSONL, errs files, Markdown, plots). SOURCE: a manifest "
                    f"(.jsonl), a LibriSpeech directory, a local Hugging Face dataset, or a preset ({', '.join(PRESETS)}).")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or checkpoint directory (default {DEFAULT_MODEL})")
    p.add_argument("--system", default="asr", choices=SYSTEMS,
                   help="asr (the --model), or a peer on the same data: " + ", ".join(SYSTEMS[1:]))
    p.add_argument("--data", nargs="+", required=True, metavar="SOURCE", help="one or more data sources")
    p.add_argument("--split", help="split of a LibriSpeech directory or a Hugging Face dataset")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT, help=f"report directory (default ./{DEFAULT_OUTPUT})")
    p.add_argument("--beam-size", type=positive_int, help="beam search width (default: greedy)")
    p.add_argument("--temperature", type=float, default=0.0, help="decoding temperature (default 0: deterministic)")
    p.add_argument("--fallback", action="store_true",
                   help="Whisper's temperature fallback 0.0..1.0 for repetitive or unsure windows (sampled, seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampled decoding, per window (default 0)")
    p.add_argument("--compute-type", default="float32", choices=COMPUTE_TYPES,
                   help="weights' type for --system asr (default float32; auto picks by the hardware)")
    p.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")
    p.add_argument("--ctc-weight", type=ctc_weight, default=0.0,
                   help="joint CTC/attention decoding with this weight on the CTC prefix score, 0-1 (models "
                        "trained with a CTC head; needs --without-timestamps; default 0: attention only)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="utterances decoded together (default 8)")
    p.add_argument("--normalizer", default="whisper-english", choices=NORMALIZERS,
                   help="text normaliser on both sides (default whisper-english)")
    p.add_argument("--limit", type=positive_int, help="the first N utterances of each dataset only")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --output-dir, decode the rest")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per process (0: cores / processes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("compare", help="side-by-side WER of report directories, with paired bootstrap",
                              description="Runs of asr evaluate over the same utterances, side by side, with the "
                                          "paired bootstrap probability that one system is better than another.")
    p.add_argument("reports", nargs="+", metavar="REPORT_DIR")
    p.add_argument("--output-dir", help="also write compare.md and compare.png here")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("benchmark", help="build benchmark test sets")
    benchmark = p.add_subparsers(dest="benchmark_command", required=True)
    b = benchmark.add_parser("build", help="write a benchmark's manifest",
                             description="offline-en: pocketsphinx-testdata recordings, alsa-utils channel names "
                                         "and recipes/synth_en's dev/test splits, each its own group.")
    b.add_argument("name", choices=["offline-en"])
    b.add_argument("out_dir", metavar="OUT_DIR")
    b.add_argument("--synth-en", help="a recipes/synth_en build (default: the newest out/synth_en* found)")
    b.set_defaults(func=cmd_benchmark_build)


__all__ = ["add_evaluate_parsers"]
