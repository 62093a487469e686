"""Training throughput in audio seconds per wall second: our vanilla and seed configurations,
float32 and (where the CPU computes it natively) bf16 autocast, and Hugging Face transformers'
WhisperForConditionalGeneration with the same dimensions in the same run.

One training step = forward + backward + AdamW (fused where available) on a batch of B
utterances of S seconds and L target tokens; attention cross-entropy only (no CTC), the same
objective for all three. Variants run interleaved, round after round, and each keeps its
fastest step, so load from other processes hurts all alike and ratios are what to read.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python scripts/bench_train.py [--state 256 --heads 4 --layers 4 --batch 16 --seconds 4]
    .venv/bin/python scripts/bench_train.py --compile --no-hf   # adds torch.compile'd rows of ours
    python scripts/bench_train.py --device cuda --state 512 --heads 8 --layers 6 --batch 32 --seconds 30

Prints the hardware (CPU flags, or the GPU), a table, and as its last line one JSON object.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from asr.config import ModelDimensions
from asr.nn.model import ASRModel
from asr.nn.presets import seed_options, vanilla_options
from asr.train.objective import TrainingModel
from asr.hardware import cpu_model, native_bf16, shown_flags

FRAMES_PER_SECOND = 100
N_VOCAB = 2510  # a 1000-piece sentencepiece vocabulary + Whisper's specials and timestamps


def our_model(kind: str, args) -> torch.nn.Module:
    dims = ModelDimensions(n_mels=80, n_audio_ctx=args.seconds * FRAMES_PER_SECOND // 2, n_audio_state=args.state,
                           n_audio_head=args.heads, n_audio_layer=args.layers, n_vocab=N_VOCAB,
                           n_text_ctx=max(64, args.tokens), n_text_state=args.state, n_text_head=args.heads,
                           n_text_layer=args.layers)
    options = vanilla_options() if kind == "vanilla" else seed_options()
    return TrainingModel(ASRModel(dims, options), n_text=1000, ctc_weight=0.0, label_smoothing=0.0)


def hf_model(args) -> torch.nn.Module:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(vocab_size=N_VOCAB, num_mel_bins=80, d_model=args.state, encoder_layers=args.layers,
                           decoder_layers=args.layers, encoder_attention_heads=args.heads,
                           decoder_attention_heads=args.heads, encoder_ffn_dim=4 * args.state,
                           decoder_ffn_dim=4 * args.state, max_source_positions=args.seconds * FRAMES_PER_SECOND // 2,
                           max_target_positions=max(64, args.tokens), pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1, dropout=0.0)
    return WhisperForConditionalGeneration(config)


def make_step(name: str, model: torch.nn.Module, args, dtype, device: torch.device):
    frames = args.seconds * FRAMES_PER_SECOND
    mels = torch.randn(args.batch, 80, frames, device=device)
    n_frames = torch.full((args.batch,), frames, device=device)
    tokens = torch.randint(3, 1000, (args.batch, args.tokens), device=device)
    targets = torch.randint(3, 1000, (args.batch, args.tokens), device=device)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        synchronize(device)  # CUDA runs asynchronously: time from an idle device to an idle device
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if name == "hf":
                loss = model(input_features=mels, decoder_input_ids=tokens, labels=targets).loss
            else:
                loss = model(mels, n_frames, tokens, targets)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        return time.perf_counter() - start

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device, threads: int) -> tuple[str, bool]:
    """(a line naming the hardware and the bf16 verdict, whether bf16 runs natively)."""
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        return (f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
                f"bf16: {'native' if native else 'not supported'}"), native
    native, why = native_bf16()
    flags = shown_flags()
    return (f"CPU: {cpu_model()}, flags {' '.join(flags) or 'none of note'}; "
            f"torch {torch.__version__}, {threads} threads; bf16: {why}"), native


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; the fastest step counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-hf", action="store_true", help="leave out the transformers peer")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (CUDA: bf16 autocast where the GPU has it)")
    parser.add_argument("--compile", action="store_true",
                        help="also our two models under torch.compile (its residual blocks, as run.compile: "
                             "the compilation is the warm-up step, reported apart)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    line, native = describe_device(device, args.threads)
    print(line)
    precisions = [("float32", None)] + ([("bf16", torch.bfloat16)] if native else [])
    models = {"vanilla": our_model("vanilla", args), "seed": our_model("seed", args)}
    if args.compile:  # the same weights, compiled as `run.compile: true` does (asr.train.loop.compile_blocks)
        from asr.train.loop import compile_blocks

        for name in ("vanilla", "seed"):
            models[f"{name}_compiled"] = copy.deepcopy(models[name])
            compile_blocks(models[f"{name}_compiled"], device)
    if not args.no_hf:
        models["hf"] = hf_model(args)
    models = {name: model.to(device) for name, model in models.items()}
    steps = {(name, p): make_step(name, model, args, dtype, device) for name, model in models.items()
             for p, dtype in precisions}
    warmup = {key: step() for key, step in steps.items()}  # first-call allocations, kernels, compilation
    best = {key: float("inf") for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            best[key] = min(best[key], step())

    audio = args.batch * args.seconds
    rows = {f"{name}_{p}": {"step_s": round(best[(name, p)], 4), "audio_s_per_s": round(audio / best[(name, p)], 1)}
            for name, p in steps}
    labels = {"vanilla": "asr vanilla (Whisper-like)", "seed": "asr seed (all extras)",
              "vanilla_compiled": "asr vanilla, torch.compile", "seed_compiled": "asr seed, torch.compile",
              "hf": "HF WhisperForConditionalGeneration"}
    print(f"\n{args.batch} x {args.seconds} s utterances, {args.tokens} tokens, d={args.state}, "
          f"{args.layers}+{args.layers} layers, {args.heads} heads")
    print(f"{'model':38s} {'precision':9s} {'step (s)':>9s} {'audio-s/s':>10s} {'params (M)':>11s}")
    for (name, p) in steps:
        r = rows[f"{name}_{p}"]
        params = sum(t.numel() for t in models[name].parameters()) / 1e6
        print(f"{labels[name]:38s} {p:9s} {r['step_s']:9.3f} {r['audio_s_per_s']:10.1f} {params:11.2f}")
    summary = {"audio_s_per_s": {k: v["audio_s_per_s"] for k, v in rows.items()},
               "step_seconds": {k: v["step_s"] for k, v in rows.items()},
               "seed_vs_vanilla_fp32": round(best[("seed", "float32")] / best[("vanilla", "float32")], 3),
               "device": line.split(";")[0], "cpu_flags": shown_flags(), "bf16_native": native,
               "threads": args.threads,
               "batch": args.batch, "seconds": args.seconds, "state": args.state, "layers": args.layers}
    if args.compile:
        summary["compiled_vs_eager"] = {f"{name}_{p}": round(best[(f"{name}_compiled", p)] / best[(name, p)], 3)
                                        for name in ("vanilla", "seed") for p, _ in precisions}
        summary["compile_warmup_s"] = {f"{name}_{p}": round(warmup[(f"{name}_compiled", p)], 1)
                                       for name in ("vanilla", "seed") for p, _ in precisions}
        print("torch.compile: step time / eager step time "
              + ", ".join(f"{k} {v}" for k, v in summary["compiled_vs_eager"].items())
              + "; first (compiling) step " + ", ".join(f"{k} {v} s" for k, v in summary["compile_warmup_s"].items()))
    if "hf" in models:
        summary["vanilla_vs_hf_fp32"] = round(best[("vanilla", "float32")] / best[("hf", "float32")], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
