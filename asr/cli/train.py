"""`asr train`, `asr average` and `asr plot`.

    asr train CONFIG.yaml --run-dir DIR [--set section.key=value ...] [--max-steps N]
              [--init-from MODEL] [--skip-bad]
    asr train --resume DIR [--max-steps N]          continue a run from its own saved config
    torchrun --nproc_per_node N -m asr train ...    data-parallel (DDP; --set distributed.strategy=fsdp to shard)
    asr average CKPT... -o OUT                      average the weights of checkpoints
    asr plot RUN_DIR... [-o PNG] [--smooth N]       loss, dev WER, lr and rotary base by step;
                                                    several runs overlaid to compare them

Registered into the main parser with add_train_parsers(subparsers); also runs on its own as
``python -m asr.cli.train train ...``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import error


def cmd_train(args) -> int:
    from ..errors import InputError
    from ..train.config import load_config
    from ..train.distributed import release
    from ..train.loop import CONFIG_FILE, TrainingStopped, train

    if args.resume and args.config:
        error("give a CONFIG or --resume RUN_DIR, not both")
        return 2
    if not args.resume and not (args.config and args.run_dir):
        error("asr train needs CONFIG.yaml --run-dir DIR (or --resume RUN_DIR)")
        return 2
    run_dir = Path(args.resume or args.run_dir)
    config_path = run_dir / CONFIG_FILE if args.resume else Path(args.config)
    overrides = list(args.set or [])
    if args.max_steps is not None:
        overrides.append(f"run.max_steps={args.max_steps}")
    if args.init_from:
        overrides.append(f"model.init_from={args.init_from}")
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    try:
        config = load_config(config_path, overrides)
        if args.resume and overrides:
            from ..store.atomic import write_text_atomic
            from ..train.config import dump_config

            write_text_atomic(run_dir / CONFIG_FILE, dump_config(config))  # what the run now follows
        summary = train(config, run_dir, resume=bool(args.resume), config_path=str(config_path))
    except (InputError, TrainingStopped) as err:
        error(str(err))
        return 1
    except ValueError as err:  # e.g. precision float16 without CUDA, a sampler that cannot re-shard
        error(f"{config_path}: {err}")
        return 1
    finally:
        release()
    if summary.get("last_validation"):
        v = summary["last_validation"]
        print(f"step {summary['step']}: dev WER {100 * v['dev_wer']:.2f}%, CER {100 * v['dev_cer']:.2f}%; "
              f"best {100 * summary['best_wer']:.2f}%; {summary['wall_seconds']:.0f} s")
    else:
        print(f"step {summary['step']}; {summary['wall_seconds']:.0f} s")
    return 0


def cmd_average(args) -> int:
    from ..store.checkpoint import CheckpointError
    from ..train.average import average_checkpoints

    try:
        out = average_checkpoints([Path(p) for p in args.checkpoints], Path(args.output))
    except (CheckpointError, ValueError) as err:
        error(str(err))
        return 1
    print(f"{out}: average of {len(args.checkpoints)} checkpoints")
    return 0


def cmd_plot(args) -> int:
    from ..errors import InputError
    from ..train.plot import plot_runs

    try:
        out = plot_runs([Path(d) for d in args.run_dirs], Path(args.output) if args.output else None,
                        smooth=args.smooth)
    except InputError as err:
        error(str(err))
        return 1
    print(out)
    return 0


def add_train_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML recipe (or resume a run)")
    p.add_argument("config", nargs="?", help="YAML recipe (recipes/*/conf/*.yaml)")
    p.add_argument("--run-dir", help="where checkpoints, metrics and the resolved config go")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest good checkpoint")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set data.train=out/x/train.jsonl")
    p.add_argument("--max-steps", type=int, help="same as --set run.max_steps=N")
    p.add_argument("--init-from", metavar="MODEL", help="start from pretrained weights (tiny.en or a checkpoint)")
    p.add_argument("--skip-bad", action="store_true", help="drop utterances with missing/unreadable audio")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("average", help="average the weights of checkpoints into one model")
    p.add_argument("checkpoints", nargs="+", help="model directories or training checkpoints")
    p.add_argument("-o", "--output", required=True, help="model directory to write")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("plot", help="plot the loss, dev WER, learning rate and rotary base of one "
                                    "run, or of several on the same axes")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--output", help="PNG to write (default RUN_DIR/training.png; required "
                                          "for several runs)")
    p.add_argument("--smooth", type=int, default=1, metavar="N",
                   help="plot the training loss as the mean of the last N steps (default 1: as logged)")
    p.set_defaults(func=cmd_plot)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="asr")
    add_train_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":
    from .main import entry

    entry(main)  # the exit of the asr command, without interpreter teardown
