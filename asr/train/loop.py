"""The training loop, top to bottom: set up, (resume,) then step until run.max_steps.

    config -> run directory (checked writable) -> data (checked up front) -> tokenizer -> model
    -> optimiser -> resume from the newest good checkpoint -> loop:
         lr for this step; accumulate micro-batches (joint CTC/attention loss, autocast);
         clip; skip the step if the gradient is not finite; optimiser step;
         dynamic base (after the step, never between forward and backward); running average;
         metrics row; validation and checkpoint every N steps and at the end (once, with
         run.fit_to_max_minutes, the schedule shortened to end inside run.max_minutes).

Under torchrun every rank runs this same function on its shard of the batches; rank 0 alone
logs, validates and writes checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.autograd.graph import increment_version

from ..errors import InputError
from ..store.atomic import write_text_atomic
from . import distributed as dist
from .average import RunningAverage
from .build import (build_model, load_pretrained, load_run_tokenizer, pretrained_config, save_run_tokenizer,
                    train_tokenizer)
from .checkpoints import MODEL_DIR, CheckpointWriteError, Checkpoints, read_state
from .config import ConfigError, TrainConfig, dump_config
from .data import filter_for_model, make_augmenter, make_loader, make_sampler, read_checked, restyled
from .dynamic_base import DynamicBaseController, rotary_bases, set_rotary_base
from .objective import TrainingModel
from .precision import choose_precision
from .schedule import fitted_max_steps, lr_factor, steady_step_seconds
from .tensorboard_log import TensorBoardLog
from .validate import run_validation, tokens_per_second

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
TOKENIZER_DIR = "tokenizer"


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (too many bad steps, a checkpoint that could not be written)."""


@dataclass
class Progress:
    """Everything about where the run is that a checkpoint must restore."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    batches_in_epoch: int = 0  # this rank's batches of the epoch consumed so far
    bad_in_row: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0  # training audio seen, all ranks
    best_wer: Optional[float] = None
    last_validation: dict = field(default_factory=dict)
    schedule_fitted: bool = False  # run.fit_to_max_minutes has set run.max_steps (fit_schedule)


# ---------------------------------------------------------------------------------------------
# setting up


def prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    """Create the run directory and write the resolved config; fail now if it is not writable."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_text_atomic(run_dir / CONFIG_FILE, dump_config(config))
        else:
            probe = run_dir / f".write-test-{os.getpid()}"
            write_text_atomic(probe, "")
            probe.unlink()
    except OSError as err:
        raise InputError(run_dir, f"run directory is not writable ({err.strerror or err})") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {
        "python": _python_rng(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_rng() -> dict:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def freeze(training_model: torch.nn.Module, prefixes: list[str], where: str) -> int:
    """Keep the parameters under these name prefixes fixed; returns how many were frozen. A
    prefix that names nothing is a config error (a typo would silently train everything)."""
    frozen = 0
    for prefix in prefixes:
        matched = [p for name, p in training_model.named_parameters() if name == prefix or name.startswith(prefix + ".")]
        if not matched:
            raise ConfigError(where, f"optim.freeze: {prefix!r} names no parameter "
                                     f"(names look like model.encoder.conv1.weight)")
        for parameter in matched:
            if parameter.requires_grad:
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


def compile_blocks(model: TrainingModel, device: torch.device, backend: str = "inductor") -> int:
    """`run.compile`: torch.compile each residual block of both stacks in place (regional
    compilation); returns how many. The stem, the losses and the CTC head stay eager.

    Compiling the whole training forward instead specialised its graph on every new batch
    shape: Inductor's lowering of the convolution backward fixes the frame count, so with
    duration-bucketed batches every step compiled afresh (80-140 s a step on 2 CPU cores,
    synth_en RESULTS.md). A block sees only [batch, time, state] activations, traced with
    symbolic sizes, so its graph holds for every later batch; the vanilla blocks of a stack
    share one. Validation decodes with a KV cache in eager mode (see `eager`).

    On CUDA, Inductor's coalescing analysis for tiling failed an internal assertion on dynamic
    shapes (torch 2.11, H200: `get_pw_red_splits`, scripts/cuda_smoke.sh);
    it only picks tile shapes, so it is switched off there."""
    if device.type == "cuda":
        import torch._inductor.config as inductor_config

        inductor_config.triton.coalesce_tiling_analysis = False
    blocks = [*model.model.encoder.blocks, *model.model.decoder.blocks]
    # All blocks run one code object, and Dynamo keeps at most recompile_limit graphs per code
    # object before it falls back to eager for good. Blocks of one kind share their graphs; the
    # encoder's and the decoder's differ, and a few length ranges each take a graph of their own
    # (hybrid attention's dense and blocked paths, Inductor's own size tests: 6-7 graphs for
    # the seed model, synth_en RESULTS.md). The limit leaves room for kinds mixed in a stack.
    dynamo_config = torch._dynamo.config
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 4 * len(blocks))
    # No "duck sizing": a first batch of as many utterances as there are heads would otherwise
    # tie the batch size to the relative bias's head count, and the next batch compile again.
    from torch.fx.experimental import _config as fx_config

    fx_config.use_duck_shape = False
    for block in blocks:
        block.compile(dynamic=True, backend=backend)  # batch and time change every step: symbolic from the start
    return len(blocks)


def eager():
    """Run compiled modules eagerly inside this context: validation's cached one-token decoding
    steps would otherwise compile (and recompile) the blocks for shapes training never sees."""
    return torch.compiler.set_stance("force_eager")


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases, gains, angles)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=config.optim.lr, betas=tuple(config.optim.betas), eps=config.optim.eps)
    if config.optim.fused:
        try:
            optimizer = torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass  # no fused kernel for this device or dtype
        else:
            optimizer.register_step_post_hook(mark_parameters_changed)
            return optimizer
    return torch.optim.AdamW(groups, **kwargs)


def mark_parameters_changed(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Bump the version counter of every parameter after a fused step, as any in-place write
    does. The fused AdamW kernel writes the parameters without bumping it (torch 2.13: still 0
    after any number of steps), and a copy keyed on it (TextDecoder.output_weight, made in the
    first validation's no-grad forward) was reused by every later validation: until
    2026-12-08 the dev loss and dev WER after a run's first validation were computed with the
    tied output projection as it was at that validation (recipes/synth_en/RESULTS.md)."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            increment_version(group["params"])


def row_step(line: str) -> float:
    """The step of one metrics.jsonl line; infinite for a blank or torn one (a kill in the middle
    of an append), so that truncation drops it."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return math.inf


class MetricsLog:
    """metrics.jsonl: one JSON object per optimiser step (validation steps add dev_*). A resumed
    run first cuts the rows after its checkpoint, which it is about to recompute."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.tensorboard = None  # a TensorBoardLog that gets every row too (run.tensorboard)

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if row_step(line) <= step]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:  # a log: appended, flushed per row
                f.write(json.dumps(row) + "\n")
            if self.tensorboard:
                self.tensorboard.write(row)

    def flush(self) -> None:
        if self.tensorboard:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    """The objects a checkpoint saves and a resume restores (besides the config)."""

    config: TrainConfig
    run_dir: Path
    ctx: dist.Context
    training_model: TrainingModel  # under FSDP: this rank's shards
    rank0_copy: Optional[TrainingModel]  # under FSDP: rank 0's unsharded copy; else None
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    controller: Optional[DynamicBaseController]
    average: Optional[RunningAverage]
    sampler: object
    checkpoints: Checkpoints
    progress: Progress
    model_config: dict  # config.json sections of every saved model (train_config, Whisper's settings)

    def full_model(self) -> Optional[TrainingModel]:
        """The whole training model (a collective under FSDP; None on ranks other than 0)."""
        return dist.full_model(self.training_model, self.rank0_copy, self.ctx, self.config)


@dataclass
class Setup:
    """What a run trains: its checked data, tokenizer and model."""

    train_utts: list
    dev_utts: list
    tokenizer: object
    model: object  # ASRModel
    training_model: TrainingModel  # the model, with the CTC head and the losses
    model_config: dict  # config.json sections of every saved model


def build_setup(config: TrainConfig, run_dir: Path, resume: bool, ctx, say, config_path: str) -> Setup:
    """Data checked up front (bad audio is an error or dropped with --skip-bad), the tokenizer
    (the run's own on resume, trained from the training text or the pretrained model's), the
    model (fresh from its preset, or pretrained weights), and the utterances it cannot take
    dropped with a count."""
    train_utts, bad = read_checked(config.data.train, check_audio=config.data.check_audio,
                                   skip_bad=config.data.skip_bad, what="training")
    if bad:
        say(f"{config.data.train}: dropped {bad} utterances with missing or unreadable audio (--skip-bad)")
    dev_utts = []
    if config.data.dev:
        dev_utts, dev_bad = read_checked(config.data.dev, check_audio=config.data.check_audio,
                                         skip_bad=config.data.skip_bad, what="dev")
        if dev_bad:
            say(f"{config.data.dev}: dropped {dev_bad} utterances with missing or unreadable audio (--skip-bad)")
        if config.validation.max_utterances:
            dev_utts = dev_utts[: config.validation.max_utterances]

    train_utts = restyled(train_utts, config.data.target_style)
    dev_utts = restyled(dev_utts, config.data.target_style)

    tokenizer = load_run_tokenizer(run_dir / TOKENIZER_DIR) if resume else None
    model_config = {"train_config": config.to_dict()}  # written into every saved model's config.json
    if config.model.init_from:
        model, tokenizer = load_pretrained(config.model.init_from, config, config_path)
        model_config.update(pretrained_config(config.model.init_from))
    else:
        if tokenizer is None:
            tokenizer = train_tokenizer([u.text for u in train_utts], config)
        model = build_model(config, tokenizer, config_path)
    if ctx.is_main and not resume:
        save_run_tokenizer(tokenizer, run_dir / TOKENIZER_DIR)

    need_ctc = config.loss.ctc_weight > 0
    train_utts, dropped = filter_for_model(train_utts, tokenizer, model, need_ctc,
                                           timestamps=config.data.timestamp_prob > 0)
    say(f"{config.data.train}: {len(train_utts)} training utterances, "
        f"{sum(u.duration for u in train_utts) / 3600:.2f} h; dropped: {dropped}")
    if not train_utts:
        raise InputError(config.data.train, "no training utterance fits the model")
    dev_utts, _ = filter_for_model(dev_utts, tokenizer, model, need_ctc=False)

    training_model = TrainingModel(model, tokenizer.n_text, config.loss.ctc_weight, config.loss.label_smoothing,
                                   dropout=config.model.dropout, token_corruption=config.loss.token_corruption,
                                   attention_window_sigma_s=config.loss.attention_window_sigma_s).to(ctx.device)
    return Setup(train_utts, dev_utts, tokenizer, model, training_model, model_config)


# oneDNN keeps 1024 compiled primitives (bf16 matrix-product kernels and the like) by default. A
# run whose batches are rounded to repeating shapes (data.pad_frames_multiple / pad_tokens_multiple)
# needs more, forward and backward of every layer per shape, and an evicted one is compiled again:
# 200 steps of small.yaml rounded to 32 frames / 8 tokens took 69.3 s with the default (median
# 0.290 s a step, mean 0.408) and 46.6 s with 16384 (0.273 / 0.274), 2-core AVX512-BF16 EPYC,
# 2026-12-07. Read when oneDNN makes its first primitive, so set before any work; a value in the
# environment wins.
ONEDNN_PRIMITIVE_CACHE_CAPACITY = "16384"


def train(config: TrainConfig, run_dir, *, resume: bool = False, config_path: str = "config",
          write_checkpoint_files=None) -> dict:
    """Train (or continue) a run; returns the final metrics. Raises InputError for bad input and
    TrainingStopped when the run had to stop."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_PRIMITIVE_CACHE_CAPACITY)
    run_dir = Path(run_dir)
    ctx = dist.setup(config)  # rank, world size, device
    say = dist.printer(ctx)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    if config.run.deterministic:
        torch.use_deterministic_algorithms(True)
    if ctx.is_main:
        prepare_run_dir(run_dir, config, resume)
    dist.barrier(ctx)
    seed_everything(config.run.seed)

    autocast_dtype, why = choose_precision(config.precision, ctx.device)
    say(f"precision: {why}")

    # ---- data, tokenizer, model ----
    setup = build_setup(config, run_dir, resume, ctx, say, config_path)
    train_utts, dev_utts, tokenizer, model = setup.train_utts, setup.dev_utts, setup.tokenizer, setup.model
    model_config, training_model = setup.model_config, setup.training_model
    frozen = freeze(training_model, config.optim.freeze, config_path)
    if frozen:
        say(f"frozen: {frozen / 1e6:.2f} M parameters under {', '.join(config.optim.freeze)}")
    if config.checkpoint.save_initial and ctx.is_main and not resume:
        from ..store.checkpoint import save_checkpoint

        save_checkpoint(model, run_dir / "initial", tokenizer=tokenizer, extra=model_config)
    origin = f"from {config.model.init_from}" if config.model.init_from else f"{config.model.preset} from scratch"
    say(f"model: {model.num_parameters() / 1e6:.2f} M parameters, n_vocab {model.dims.n_vocab}, {origin}, "
        f"rotary bases {rotary_bases(model) or 'none'}")
    controller = None
    if config.dynamic_base.enabled and rotary_bases(model):
        controller = DynamicBaseController(config.dynamic_base, config.model.rotary_base)
    fixed_frames = model.window_frames if model.options.fixed_audio_window else None
    augmenter = make_augmenter(config.augment, config.run.seed)

    # ---- resume the weights, distribute, then the optimiser (under FSDP it needs the shards) ----
    checkpoints = Checkpoints(run_dir, config.checkpoint.keep_last)
    latest = None
    if resume:
        if ctx.is_main:
            checkpoints.remove_partial()
        latest = checkpoints.latest_valid()
        if latest is not None:
            restore_weights(latest, training_model)
    average = RunningAverage(model, training_model.ctc_head) if config.checkpoint.average and ctx.is_main else None
    wrapped, rank0_copy = dist.wrap(training_model, ctx, config)
    if dist.sharded(ctx, config):
        say(f"fsdp: parameters, gradients and optimiser state sharded over {ctx.world_size} ranks")
    optimizer = make_optimizer(training_model, config, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type) if autocast_dtype == torch.float16 else None
    run = Run(config, run_dir, ctx, training_model, rank0_copy, tokenizer, optimizer, scaler, controller, average,
              make_sampler(train_utts, config, ctx.rank, ctx.world_size), checkpoints, Progress(), model_config)
    metrics = MetricsLog(run_dir / METRICS_FILE, ctx.is_main)
    if resume and latest is None:
        say(f"{run_dir}: no usable checkpoint; starting from step 0")
    if latest is not None:
        run.progress = restore_state(latest, run)
        say(f"resumed from {latest} (step {run.progress.step}, epoch {run.progress.epoch}, "
            f"batch {run.progress.batches_in_epoch})")
    metrics.truncate_after(run.progress.step)
    if config.run.tensorboard and ctx.is_main:
        metrics.tensorboard = TensorBoardLog(run_dir, first_step=run.progress.step + 1)

    if config.run.compile:
        say(f"compile: {compile_blocks(training_model, ctx.device)} residual blocks compiled (torch.compile, "
            f"regional); the first steps include their compilation")
    stream = epoch_batches(run, lambda sampler, generator: make_loader(
        train_utts, sampler, tokenizer, model.dims.n_mels, config.data.num_workers, augmenter, fixed_frames,
        generator=generator, timestamp_prob=config.data.timestamp_prob, timestamp_seed=config.run.seed,
        timestamp_max_lead_s=config.data.timestamp_max_lead_s,
        pad_multiples=(config.data.pad_frames_multiple, config.data.pad_tokens_multiple),
        pad_limits=(model.window_frames, model.dims.n_text_ctx)), augmenter)
    rate = config.validation.tokens_per_second or tokens_per_second(train_utts, tokenizer)
    dev_loader = None
    if dev_utts and ctx.is_main:
        dev_sampler = make_sampler(dev_utts, config, 0, 1, shuffle=False,
                                   max_batch_seconds=config.validation.batch_seconds)
        dev_loader = make_loader(dev_utts, dev_sampler, tokenizer, model.dims.n_mels, 0, None, fixed_frames)

    # ---- the loop ----
    from tqdm import tqdm

    progress = run.progress
    bar = tqdm(total=config.run.max_steps, initial=progress.step, disable=not (ctx.is_main and config.run.progress),
               unit="step", dynamic_ncols=True, file=sys.stderr)
    training_model.train()
    started = time.perf_counter()
    # this process's, for fit_schedule: the time of each step (its data, its checkpoint; no
    # validation) and of the validations
    first_step, step_seconds, validation_seconds = progress.step, [], 0.0
    step_mark, validation_mark = started, 0.0
    while progress.step < config.run.max_steps:
        step_start = time.perf_counter()
        lr = config.optim.lr * lr_factor(progress.step, config.schedule, config.run.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        training_model.attention_window = window_strength(progress.step, config.loss)
        result = optimizer_step(run, wrapped, stream, autocast_dtype)
        progress.audio_seconds += result.audio_seconds

        if not result.finite:
            progress.bad_in_row += 1
            progress.skipped += 1
            say(f"step {progress.step + 1}: loss {result.loss}, gradient norm {result.grad_norm}: skipped "
                f"({progress.bad_in_row} in a row)")
            metrics.write({"step": progress.step + 1, "skipped": True, "loss": None, "lr": lr})
            if progress.bad_in_row >= config.optim.max_bad_steps:
                kept = checkpoints.steps()
                raise TrainingStopped(f"{run_dir}: {progress.bad_in_row} steps in a row had a NaN/inf loss or "
                                      f"gradient; stopped (last good checkpoint: "
                                      f"{'step ' + str(kept[-1]) if kept else 'none'})")
            continue
        progress.bad_in_row = 0
        progress.step += 1
        step = progress.step

        # dynamic base: after the optimiser step, driven by the smoothed training loss
        action = None
        if controller:
            action = controller.update(step, result.loss).action
            controller.apply(model)
        if config.checkpoint.average and step >= config.checkpoint.average_start \
                and step % config.checkpoint.average_every == 0:
            full = run.full_model()
            if average:
                average.update(full.model, full.ctc_head)

        now = time.perf_counter()
        elapsed = now - step_start
        step_seconds.append(now - step_mark - (validation_seconds - validation_mark))
        step_mark, validation_mark = now, validation_seconds
        bases = rotary_bases(model)
        row = {"step": step, "loss": result.loss, "attention_loss": result.attention_loss,
               "ctc_loss": result.ctc_loss, "lr": lr, "rotary_base": next(iter(bases.values()), None),
               **{f"rotary_base_{k}": v for k, v in bases.items()}, "base_action": action,
               "grad_norm": result.grad_norm, "epoch": progress.epoch, "audio_seconds": result.audio_seconds,
               **({"attention_window": training_model.attention_window}
                  if config.loss.attention_window_steps else {}),
               "audio_s_per_s": result.audio_seconds / elapsed if elapsed > 0 else None, "time": time.time()}

        out_of_time = (config.run.max_minutes is not None
                       and dist.any_flag(time.perf_counter() - started > 60.0 * config.run.max_minutes, ctx))
        final = step == config.run.max_steps or out_of_time
        validate_now = dev_utts and (step % config.validation.every_steps == 0 or final)
        full = run.full_model() if validate_now else None
        validation = None
        if validate_now and dev_loader is not None:
            validation_started = time.perf_counter()
            with eager():
                outcome = run_validation(full, dev_loader, tokenizer, ctx.device, autocast_dtype, rate,
                                         config.validation.extra_tokens, config.validation.normalizer,
                                         config.validation.ctc_weight)
            validation = {"dev_wer": outcome.wer, "dev_cer": outcome.cer, "dev_loss": outcome.loss}
            row.update(validation)
            ref, hyp = outcome.examples[0] if outcome.examples else ("", "")
            say(f"step {step}: dev WER {100 * outcome.wer:.2f}%, CER {100 * outcome.cer:.2f}%, "
                f"loss {outcome.loss:.3f} ({outcome.utterances} utt) | ref: {ref!r} | hyp: {hyp!r}")
            progress.last_validation = {"step": step, **validation}
            validation_seconds += time.perf_counter() - validation_started
        if (config.run.fit_to_max_minutes and not progress.schedule_fitted and not final
                and step % config.validation.every_steps == 0 and step - first_step >= FIT_AFTER_STEPS):
            fit_schedule(run, step, time.perf_counter() - started, validation_seconds, step_seconds, say)
            bar.total = row["max_steps"] = config.run.max_steps
        new_best = validation is not None and (progress.best_wer is None or validation["dev_wer"] < progress.best_wer)
        if new_best:
            progress.best_wer = validation["dev_wer"]
        # the row goes first: a kill between the two then resumes from the previous checkpoint,
        # which cuts the row; the other way round, a resume from this checkpoint lacked it
        metrics.write(row)
        # the best by dev WER always gets a checkpoint (rank 0 alone validates: tell the others)
        if dist.any_flag(new_best, ctx) or step % config.checkpoint.every_steps == 0 or final:
            metrics.flush()  # TensorBoard's events up to this checkpoint on disk before it exists
            save(run, validation, new_best, write_checkpoint_files)
        bar.update(1)
        bar.set_postfix(loss=f"{result.loss:.3f}", lr=f"{lr:.2e}", base=f"{row['rotary_base'] or 0:.0f}",
                        audio_s_per_s=f"{row['audio_s_per_s'] or 0:.0f}")
        if out_of_time:
            say(f"step {step}: run.max_minutes={config.run.max_minutes:g} reached; stopping "
                f"(asr train --resume {run_dir} continues)")
            break
    bar.close()
    metrics.close()

    if ctx.distributed and not dist.sharded(ctx, config):
        say(f"replicas: largest weight difference from rank 0: {dist.replica_difference(model, ctx):g}")
    full = run.full_model()
    if ctx.is_main:
        finish(run_dir, full.model, tokenizer, average, model_config, full.ctc_head)
    dist.cleanup(ctx)
    wall = time.perf_counter() - started
    return {"step": progress.step, "best_wer": progress.best_wer, "last_validation": progress.last_validation,
            "wall_seconds": wall, "skipped": progress.skipped}


FIT_AFTER_STEPS = 100  # steps of this process before its pace is taken to fit the schedule


def fit_schedule(run: Run, step: int, elapsed: float, validation_seconds: float, step_seconds: list,
                 say) -> None:
    """run.fit_to_max_minutes, at a validation once the process has run FIT_AFTER_STEPS steps:
    shorten run.max_steps so that the rest of the schedule ends inside run.max_minutes (``elapsed``
    seconds of it spent) at this process's steady pace (its ``step_seconds``, those slowed by
    another job capped: schedule.steady_step_seconds) and validation time so far, move the
    running average's start with it, and write the config the run now follows (checkpoints and
    a resume keep it)."""
    config, ctx = run.config, run.ctx
    configured, every = config.run.max_steps, config.validation.every_steps
    validations = max(1, step // every - (step - len(step_seconds)) // every)
    pace, per_validation = steady_step_seconds(step_seconds), validation_seconds / validations
    fitted = fitted_max_steps(step, configured, 60.0 * config.run.max_minutes - elapsed, pace, per_validation, every)
    fitted = dist.min_int(fitted, ctx)  # rank 0's counts the validations the other ranks wait for
    run.progress.schedule_fitted = True
    measured = f"{pace:.3f} s a step, {per_validation:.1f} s a validation"
    if fitted == configured:
        say(f"step {step}: run.max_steps={configured} ends inside run.max_minutes={config.run.max_minutes:g} "
            f"({measured})")
        return
    config.checkpoint.average_start = round(config.checkpoint.average_start * fitted / configured)
    config.run.max_steps = fitted
    run.model_config["train_config"] = config.to_dict()
    if ctx.is_main:
        write_text_atomic(run.run_dir / CONFIG_FILE, dump_config(config))
    say(f"step {step}: run.max_steps {configured} -> {fitted} to end inside run.max_minutes="
        f"{config.run.max_minutes:g} ({measured}; checkpoint.average_start now "
        f"{config.checkpoint.average_start})")


def window_strength(step: int, loss) -> float:
    """Strength of the cross-attention window for the optimiser step after `step` steps."""
    if step >= loss.attention_window_steps:
        return 0.0
    return 1.0 - step / loss.attention_window_steps if loss.attention_window_fade else 1.0


def epoch_batches(run: Run, make_train_loader, augmenter):
    """This rank's batches, epoch after epoch, from where the run stands (counted in its
    progress, which a checkpoint saves)."""
    progress = run.progress
    while True:
        run.sampler.set_epoch(progress.epoch)
        augmenter.set_epoch(progress.epoch)
        # the loader's own generator: creating an iterator must not draw from the global RNG
        # (dropout's), or a resumed run would see different masks
        generator = torch.Generator().manual_seed(run.config.run.seed * 1000003 + progress.epoch)
        for batch in make_train_loader(run.sampler, generator):
            progress.batches_in_epoch += 1
            yield batch
        progress.epoch += 1
        progress.batches_in_epoch = 0


@dataclass
class StepResult:
    loss: float  # joint loss, mean over micro-batches and ranks
    attention_loss: float
    ctc_loss: float
    audio_seconds: float  # all ranks
    grad_norm: float
    finite: bool  # False: the step was skipped


def optimizer_step(run: Run, wrapped, stream, autocast_dtype) -> StepResult:
    """Accumulate optim.accumulate micro-batches, clip, and step (unless the loss or the
    gradient is not finite)."""
    config, ctx, optimizer, scaler = run.config, run.ctx, run.optimizer, run.scaler
    accumulate = config.optim.accumulate
    sums = torch.zeros(4, dtype=torch.float64)  # loss, attention, ctc, audio seconds
    for micro in range(accumulate):
        batch = next(stream).to(ctx.device)
        with dist.gradient_sync(wrapped, enabled=micro == accumulate - 1):
            with torch.autocast(device_type=ctx.device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                loss, attention, ctc = wrapped(batch.mels, batch.n_frames, batch.tokens, batch.targets)
            scaled = loss / accumulate
            (scaler.scale(scaled) if scaler else scaled).backward()
        sums += torch.tensor([loss.item(), attention.item(), ctc.item(),
                              float(batch.n_frames.sum()) / 100.0], dtype=torch.float64)
    sums[:3] /= accumulate
    loss, attention, ctc, audio = dist.all_reduce_mean(sums, ctx, sum_last=True).tolist()

    if scaler:
        scaler.unscale_(optimizer)
    clip = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
    grad_norm = dist.clip_grad_norm(run.training_model.parameters(), clip)
    finite = math.isfinite(loss) and math.isfinite(grad_norm)
    if finite:
        (scaler.step(optimizer) if scaler else optimizer.step())
    if scaler:
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, attention, ctc, audio, grad_norm, finite)


def save(run: Run, validation: Optional[dict], new_best: bool, write_checkpoint_files=None) -> None:
    """Checkpoint the run at its current step (every rank calls this: under FSDP gathering the
    weights and optimiser state is a collective; rank 0 writes). Stops the run if the write
    fails (the previous checkpoint is intact)."""
    ctx, progress = run.ctx, run.progress
    step = progress.step
    full = run.full_model()
    optimizer_state = dist.optimizer_state(run.training_model, run.optimizer, ctx, run.config)
    failure = None
    if ctx.is_main:
        state = {
            "step": step, "progress": progress.__dict__.copy(), "optimizer": optimizer_state,
            "scaler": run.scaler.state_dict() if run.scaler else None, "rng": rng_state(),
            "sampler": run.sampler.state_dict(batches_consumed=progress.batches_in_epoch),
            "controller": run.controller.state_dict() if run.controller else None,
            "average_count": run.average.count if run.average else 0,
        }
        tensors = {f"ctc_head.{k}": v for k, v in (full.ctc_head.state_dict().items() if full.ctc_head else [])}
        if run.average:
            tensors.update(run.average.state_tensors())
        extra = {**run.model_config, "step": step, "validation": validation}
        try:
            run.checkpoints.save(step, full.model, run.tokenizer, extra, state, tensors,
                                 {"step": step, "validation": validation}, write_files=write_checkpoint_files)
            if new_best:
                run.checkpoints.set_best(step, validation["dev_wer"])
                run.checkpoints.prune()
        except CheckpointWriteError as err:
            failure = str(err)
    if dist.any_flag(failure is not None, ctx):
        raise TrainingStopped(failure or "rank 0 could not write a checkpoint")


def restore_weights(path: Path, training_model: TrainingModel) -> None:
    """The model's and the CTC head's weights from a checkpoint (before any wrapping)."""
    from safetensors.torch import load_file

    from ..store.checkpoint import upgrade_state

    _, tensors, _ = read_state(path)
    model = training_model.model
    weights = upgrade_state(load_file(path / MODEL_DIR / "model.safetensors", device="cpu"), model.state_dict())
    model.load_state_dict(weights, strict=True)
    for stack, base in rotary_bases(model).items():  # keep the options in step with the buffers
        set_rotary_base(model, base, stack)
    if training_model.ctc_head is not None:
        training_model.ctc_head.load_state_dict({k.removeprefix("ctc_head."): v for k, v in tensors.items()
                                                 if k.startswith("ctc_head.")})


def restore_state(path: Path, run: Run) -> Progress:
    """Everything else a checkpoint holds: optimiser, scaler, controller, average, sampler
    position and, last, every RNG state."""
    state, tensors, _ = read_state(path)
    dist.load_optimizer_state(run.training_model, run.optimizer, state["optimizer"], run.ctx, run.config)
    if run.scaler and state["scaler"]:
        run.scaler.load_state_dict(state["scaler"])
    if run.controller and state["controller"]:
        run.controller.load_state_dict(state["controller"])
    if run.average:
        run.average.load_state_tensors(tensors, state["average_count"])
    run.sampler.load_state_dict(dist.reshard_sampler_state(state["sampler"], run.sampler))
    set_rng_state(state["rng"])
    progress = Progress(**state["progress"])
    progress.batches_in_epoch = run.sampler.state_dict()["batches_consumed"]
    return progress


def finish(run_dir: Path, model, tokenizer, average, model_config: dict, ctc_head=None) -> None:
    """The final weights as a model directory and the running average beside them, each with
    its CTC head (the last step's, and the average of the head over the same steps) for joint
    decoding."""
    from ..nn.ctc_head import CTCHead
    from ..store.checkpoint import save_checkpoint

    extra = model_config
    head = None if ctc_head is None else CTCHead.of(ctc_head)
    save_checkpoint(model, run_dir / "final", tokenizer=tokenizer, extra=extra, ctc_head=head)
    if average and average.count:
        import copy

        averaged = copy.deepcopy(model)
        average.copy_into(averaged)
        averaged.ctc_head = average.ctc_head()  # None (no head file) when training had no head
        save_checkpoint(averaged, run_dir / "averaged", tokenizer=tokenizer,
                        extra={**extra, "averaged_steps": average.count})
