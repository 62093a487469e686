#!/usr/bin/env python3
"""Model speed, measured side by side in one run (this machine is shared and noisy: compare
ratios, not absolute times).

(a) forward+backward+AdamW step of the full seed configuration / the vanilla one, same dims;
(b) encoder forward time at 8x the input length / at 1x, for an encoder of local sliding-window
    heads only (without and with relative position bias), the default hybrid encoder, and plain
    global attention;
(c) achieved GFLOP/s of the vanilla training step (FLOPs counted by torch's FlopCounterMode) as a
    fraction of a 1024x1024 matmul's GFLOP/s measured in the same run, float32 and bf16 autocast.

Prints a table, then one JSON line with the figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from asr.config import ModelDimensions, ModelOptions, StackOptions
from asr.nn.model import ASRModel
from asr.nn.presets import dims_for, seed_options, vanilla_options

FRAMES_PER_SECOND = 100


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_interleaved(fns: dict, repeats: int) -> dict:
    """Fastest seconds of each fn, run in alternation (A B A B ...) so that slow phases of a
    shared machine hit all of them alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    # the minimum: on a shared machine noise only ever adds time
    return {name: min(t) for name, t in times.items()}


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 3) -> float:
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    seconds = min(timed(lambda: a @ b, 1, warmup=0) for _ in range(repeats + 2))
    return 2 * size ** 3 / seconds / 1e9


def make_batch(dims: ModelDimensions, batch: int, seconds: float, n_tokens: int):
    frames = int(seconds * FRAMES_PER_SECOND)
    mel = torch.randn(batch, dims.n_mels, frames)
    tokens = torch.randint(0, dims.n_vocab, (batch, n_tokens + 1))
    return mel, tokens[:, :-1], tokens[:, 1:]


def train_step_fn(model: ASRModel, batch, autocast: bool):
    mel, inputs, targets = batch
    # foreach: one fused update for all parameters (torch's CPU default is a loop over them)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(mel, inputs)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def step_flops(model: ASRModel, batch) -> int:
    mel, inputs, targets = batch
    with FlopCounterMode(display=False) as counter:
        logits = model(mel, inputs)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def encoder_only(dims: ModelDimensions, attention: str, window: int, local_heads: int,
                 relative_bias: bool = False) -> ASRModel:
    """An encoder with rotary positions only, so that its length is not capped by a table."""
    audio = StackOptions(positions="none", rotary=True, attention=attention, window=window,
                         local_heads=local_heads, relative_bias=relative_bias)
    long_dims = replace(dims, n_audio_ctx=1 << 16)
    return ASRModel(long_dims, ModelOptions(audio=audio)).eval()


def encoder_fn(model: ASRModel, frames: int):
    mel = torch.randn(1, model.dims.n_mels, frames)

    def run():
        with torch.inference_mode():
            model.embed_audio(mel)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "base", "cpu-small"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per utterance in (a), (c)")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--base-frames", type=int, default=1000, help="1x input length in (b), frames")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16-repeats", type=int, default=2, help="repeats of the bf16 steps")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dims = dims_for(args.size, n_vocab=4000)
    batch = make_batch(dims, args.batch, args.seconds, args.tokens)
    rows = []

    # (a) seed vs vanilla training step
    vanilla = ASRModel(dims, vanilla_options()).train()
    seed_opts = seed_options()
    seed = ASRModel(dims, seed_opts).train()
    step_s = {}
    models = (("vanilla", vanilla), ("seed", seed))
    for autocast, repeats in ((False, args.repeats), (True, args.bf16_repeats)):
        # bf16 is emulated (slow) on CPUs without avx512_bf16/AMX: fewer repeats there
        precision = "bf16" if autocast else "fp32"
        fns = {f"{name}_{precision}": train_step_fn(model, batch, autocast) for name, model in models}
        step_s.update(timed_interleaved(fns, repeats))
    for key, seconds in step_s.items():
        rows.append((f"train step {key.replace('_', ' ')}", f"{seconds:.3f} s"))
    seed_ratio = step_s["seed_fp32"] / step_s["vanilla_fp32"]
    seed_ratio_bf16 = step_s["seed_bf16"] / step_s["vanilla_bf16"]
    rows.append(("seed / vanilla step (fp32)", f"{seed_ratio:.2f}"))
    rows.append(("seed / vanilla step (bf16)", f"{seed_ratio_bf16:.2f}"))

    # (c) achieved fraction of the matmul peak
    flops = step_flops(vanilla, batch)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    fraction = {}
    for precision in ("fp32", "bf16"):
        achieved = flops / step_s[f"vanilla_{precision}"] / 1e9
        fraction[precision] = achieved / peak[precision]
        rows.append((f"matmul peak {precision} (1024^2)", f"{peak[precision]:.1f} GFLOP/s"))
        rows.append((f"vanilla step {precision}", f"{achieved:.0f} GFLOP/s = {fraction[precision]:.2f} of peak"))

    # (b) encoder length scaling
    length_ratio = {}
    n_head = dims.n_audio_head
    encoders = {
        "local": encoder_only(dims, "hybrid", args.window, local_heads=n_head),
        "local+bias": encoder_only(dims, "hybrid", args.window, local_heads=n_head, relative_bias=True),
        "hybrid": encoder_only(dims, "hybrid", args.window, local_heads=n_head // 2),
        "global": encoder_only(dims, "mha", args.window, local_heads=0),
    }
    for name, model in encoders.items():
        times = timed_interleaved({"1x": encoder_fn(model, args.base_frames),
                                   "8x": encoder_fn(model, 8 * args.base_frames)}, args.repeats)
        t1, t8 = times["1x"], times["8x"]
        length_ratio[name] = t8 / t1
        rows.append((f"encoder {name}: 1x / 8x ({args.base_frames} frames)",
                     f"{t1:.3f} s / {t8:.3f} s = {t8 / t1:.1f}x"))

    width = max(len(r[0]) for r in rows)
    print(f"model: {args.size} dims ({dims.n_audio_state} wide, {dims.n_audio_layer}+{dims.n_text_layer} layers), "
          f"batch {args.batch} x {args.seconds:g} s, {torch.get_num_threads()} threads")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(json.dumps({
        "seed_vs_vanilla_step_ratio": round(seed_ratio, 3),
        "seed_vs_vanilla_step_ratio_bf16": round(seed_ratio_bf16, 3),
        "local_len8_ratio": round(length_ratio["local"], 2),
        "local_bias_len8_ratio": round(length_ratio["local+bias"], 2),
        "hybrid_len8_ratio": round(length_ratio["hybrid"], 2),
        "global_len8_ratio": round(length_ratio["global"], 2),
        "fp32_peak_fraction": round(fraction["fp32"], 3),
        "bf16_peak_fraction": round(fraction["bf16"], 3),
        "step_seconds": {k: round(v, 4) for k, v in step_s.items()},
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items()},
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
