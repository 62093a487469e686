#!/usr/bin/env python3
"""Ship a model fine-tuned from a built-in one as the tensors it changed (asr.store.delta).

    python scripts/make_delta.py out/runs/ft/final --base tiny.en --name NAME \\
        --description "what it is; figures in recipes/.../RESULTS.md"

writes asr/models/NAME/{config.json,delta.safetensors}; `asr transcribe --model NAME` then
rebuilds the full model into the cache on first use. Prints what was written and, as its last
line, one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from asr.store.delta import build_from_delta, write_delta
from asr.store.registry import SHIPPED_DIR, resolve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the fine-tuned checkpoint directory")
    parser.add_argument("--base", default="tiny.en", help="the built-in model it was fine-tuned from")
    parser.add_argument("--name", required=True, help="the name users give to --model")
    parser.add_argument("--description", required=True, help="one line for `asr models`")
    parser.add_argument("--out", type=Path, help=f"default: {SHIPPED_DIR}/NAME")
    args = parser.parse_args(argv)
    out = args.out or SHIPPED_DIR / args.name
    base_dir = resolve(args.base)
    summary = write_delta(args.model, base_dir, args.base, out, description=args.description)
    # a trial rebuild, so a delta that cannot be rebuilt is never shipped
    shutil.rmtree(build_from_delta(out, base_dir, out.parent / f".{args.name}-rebuild-check"))
    print(f"{out}: {summary['changed']} tensors changed ({summary['bytes'] / 1e6:.1f} MB), "
          f"{summary['kept']} taken from {args.base}")
    print(json.dumps({"name": args.name, "base": args.base, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
