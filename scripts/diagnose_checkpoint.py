"""What a training checkpoint has learnt so far, in two numbers the dev WER hides early on.

    .venv/bin/python scripts/diagnose_checkpoint.py RUN/checkpoints/step-00003000 --data out/synth_en/dev.jsonl

1. CTC greedy CER/WER: the encoder read through the checkpoint's CTC head (saved beside the
   model in tensors.safetensors), best path with repeats and blanks removed. It says whether
   the encoder has learnt the sounds while the attention decoder still writes nonsense.
2. The decoder's dev loss with each clip's own audio and with the audio of the next clip in the
   batch: near-equal losses mean the decoder predicts the text from its own history (a language
   model) and ignores the audio; a large gap means it reads it.

Prints a table and, as its last line, one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import jiwer
import torch
from safetensors.torch import load_file

from asr.audio.load import load_audio
from asr.data.collate import collate
from asr.data.manifest import read_manifest
from asr.nn.model import encoder_lengths
from asr.errors import InputError
from asr.store.checkpoint import CheckpointError, load_checkpoint, load_tokenizer
from asr.train.objective import attention_loss

BATCH = 16


def ctc_best_path(logits: torch.Tensor, length: int, blank: int) -> list[int]:
    ids, previous = [], None
    for t in logits[:length].argmax(-1).tolist():
        if t != previous and t != blank:
            ids.append(t)
        previous = t
    return ids


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="RUN/checkpoints/step-NNNNNNNN")
    parser.add_argument("--data", required=True, help="manifest (JSONL) to score")
    parser.add_argument("--limit", type=int, default=100, help="first N utterances")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    head_file = args.checkpoint / "tensors.safetensors"
    try:
        model, config = load_checkpoint(args.checkpoint / "model")
        tokenizer = load_tokenizer(args.checkpoint / "model", config)
        tensors = load_file(str(head_file)) if head_file.is_file() else {}
        utterances = read_manifest(args.data)[: args.limit]
    except (CheckpointError, InputError, OSError, ValueError) as err:
        raise SystemExit(f"diagnose_checkpoint: {err}") from None
    if "ctc_head.weight" not in tensors:
        raise SystemExit(f"{head_file}: no CTC head (not a training checkpoint, or trained with loss.ctc_weight=0)")
    weight, bias = tensors["ctc_head.weight"], tensors["ctc_head.bias"]
    model.eval()
    references, hypotheses, own, swapped, batches = [], [], 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(0, len(utterances), BATCH):
            batch = collate(utterances[i: i + BATCH], load_audio, tokenizer, n_mels=model.dims.n_mels)
            audio, mask = model.embed_audio(batch.mels, batch.n_frames)
            logits = audio @ weight.T + bias
            for row, length in enumerate(encoder_lengths(batch.n_frames).tolist()):
                ids = ctc_best_path(logits[row], length, blank=tokenizer.n_text)
                hypotheses.append(tokenizer.decode(ids).strip())
                references.append(batch.texts[row])
            own += attention_loss(model.logits(batch.tokens, audio, mask), batch.targets).item()
            other_mask = None if mask is None else torch.roll(mask, 1, 0)
            swapped += attention_loss(model.logits(batch.tokens, torch.roll(audio, 1, 0), other_mask),
                                      batch.targets).item()
            batches += 1
    result = {"checkpoint": str(args.checkpoint), "utterances": len(references),
              "ctc_cer": jiwer.cer(references, hypotheses), "ctc_wer": jiwer.wer(references, hypotheses),
              "dev_loss_own_audio": own / batches, "dev_loss_swapped_audio": swapped / batches}
    print(f"{'utterances':<28}{result['utterances']}")
    print(f"{'CTC greedy CER / WER':<28}{100 * result['ctc_cer']:.2f} % / {100 * result['ctc_wer']:.2f} %")
    print(f"{'decoder loss, own audio':<28}{result['dev_loss_own_audio']:.3f}")
    print(f"{'decoder loss, swapped audio':<28}{result['dev_loss_swapped_audio']:.3f}")
    for reference, hypothesis in list(zip(references, hypotheses))[:3]:
        print(f"  ref: {reference}\n  ctc: {hypothesis}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
