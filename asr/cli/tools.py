"""Small commands around models and features: `asr models`, `asr features`, `asr encode`,
`asr init`, `asr info`."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .common import EXIT_FAILURE, EXIT_OK, error, expand_inputs
from ..audio import SAMPLE_RATE, AudioError, load_audio
from ..config import WHISPER_EN_VOCAB


def cmd_features(args) -> int:
    from tqdm import tqdm

    from ..audio import log_mel_spectrogram

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
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_encode(args) -> int:
    import torch
    from tqdm import tqdm

    from ..audio import log_mel_spectrogram
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
    return EXIT_FAILURE if failed else EXIT_OK


def cmd_models(args) -> int:
    from ..store.delta import delta_section
    from ..store.registry import CACHE_ENV, DEFAULT_MODEL, available, cache_dir, shipped

    rows = available()
    width = max(len(r[0]) for r in rows)
    deltas = shipped()
    print(f"cache: {cache_dir()}  (set {CACHE_ENV} to move it); default model: {DEFAULT_MODEL}")
    for name, status, where in rows:
        print(f"{name:<{width}}  {status:<34}  {where}")
        if name in deltas:  # what a fine-tuned model is and where its figures come from
            print(f"{'':<{width}}  {delta_section(deltas[name])['description']}")
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


def add_tool_parsers(sub) -> None:
    from ..nn.presets import PRESETS

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
    p.add_argument("--n-vocab", type=int, default=WHISPER_EN_VOCAB)
    p.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("info", help="print a checkpoint's dimensions and options")
    p.add_argument("model", help="checkpoint directory")
    p.set_defaults(func=cmd_info)
