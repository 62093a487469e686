"""What a training checkpoint has learnt so far, in two numbers the dev WER hides early on.

    .venv/bin/python scripts/diagnose_checkpoint.py RUN/checkpoints/step-00003000 --data out/synth_en/dev.jsonl

1. CTC greedy CER/WER: the encoder read through the checkpoint's CTC head (saved beside the
   model in tensors.safetensors), best path with repeats and blanks removed. It says whether
   the encoder has learnt the sounds while the attention decoder still writes nonsense.
2. The decoder's dev loss with each clip's own audio and with the audio of the next clip in the
   batch: near-equal losses mean the decoder predicts the text from its own history (a language
   model) and ignores the audio; a large gap means it reads it.
3. With --train (the training manifest), that dev loss by kind of target token: the first token
   of a word and the word's later tokens, for words the training transcripts hold and words
   they do not, word boundaries (tokens that decode to white space) and <|endoftext|>. It says
   which tokens a rising dev loss comes from.

Prints a table and, as its last line, one JSON object.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import jiwer
import torch
from safetensors.torch import load_file

from asr.audio.load import load_audio
from asr.data.collate import IGNORE_INDEX, collate
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


def word_key(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word.lower())


def token_kinds(ids: list[int], tokenizer, seen: set[str]) -> list[str]:
    """The kind (module docstring, item 3) of each text token of one transcript."""
    full = tokenizer.decode(ids)
    spans = [m.span() for m in re.finditer(r"\S+", full)]
    kinds, start = [], 0
    for i in range(len(ids)):
        prefix = tokenizer.decode(ids[: i + 1])
        new = prefix[start:] if full.startswith(prefix) else None
        if new is None:  # a piece of a multi-byte character: no clean boundary
            kinds.append("other")
            continue
        if not new.strip():
            kinds.append("word boundary")
        else:
            at = start + len(new) - len(new.lstrip())
            word_start, word_end = next(span for span in spans if span[0] <= at < span[1])
            where = "first token" if at == word_start else "later token"
            known = "seen" if word_key(full[word_start:word_end]) in seen else "unseen"
            kinds.append(f"{known} word, {where}")
        start = len(prefix)
    return kinds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="RUN/checkpoints/step-NNNNNNNN")
    parser.add_argument("--data", required=True, help="manifest (JSONL) to score")
    parser.add_argument("--limit", type=int, default=100, help="first N utterances")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", help="training manifest: split the dev loss by token kind (item 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    head_file = args.checkpoint / "tensors.safetensors"
    try:
        model, config = load_checkpoint(args.checkpoint / "model")
        tokenizer = load_tokenizer(args.checkpoint / "model", config)
        tensors = load_file(str(head_file)) if head_file.is_file() else {}
        utterances = read_manifest(args.data)[: args.limit]
        seen = {word_key(w) for u in read_manifest(args.train) for w in u.text.split()} if args.train else None
    except (CheckpointError, InputError, OSError, ValueError) as err:
        raise SystemExit(f"diagnose_checkpoint: {err}") from None
    if "ctc_head.weight" not in tensors:
        raise SystemExit(f"{head_file}: no CTC head (not a training checkpoint, or trained with loss.ctc_weight=0)")
    weight, bias = tensors["ctc_head.weight"], tensors["ctc_head.bias"]
    model.eval()
    references, hypotheses, own, swapped, batches = [], [], 0.0, 0.0, 0
    by_kind = defaultdict(list)  # kind -> per-token losses
    with torch.no_grad():
        for i in range(0, len(utterances), BATCH):
            batch = collate(utterances[i: i + BATCH], load_audio, tokenizer, n_mels=model.dims.n_mels)
            audio, mask = model.embed_audio(batch.mels, batch.n_frames)
            logits = audio @ weight.T + bias
            for row, length in enumerate(encoder_lengths(batch.n_frames).tolist()):
                ids = ctc_best_path(logits[row], length, blank=tokenizer.n_text)
                hypotheses.append(tokenizer.decode(ids).strip())
                references.append(batch.texts[row])
            logits = model.logits(batch.tokens, audio, mask)
            own += attention_loss(logits, batch.targets).item()
            if seen is not None:
                losses = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), batch.targets,
                                                           ignore_index=IGNORE_INDEX, reduction="none")
                for row in range(len(batch.texts)):
                    targets = batch.targets[row].tolist()
                    text = [k for k, t in enumerate(targets) if 0 <= t < tokenizer.n_text]
                    kinds = token_kinds([targets[k] for k in text], tokenizer, seen)
                    for k, kind in zip(text, kinds):
                        by_kind[kind].append(float(losses[row, k]))
                    for k, t in enumerate(targets):
                        if t == tokenizer.eot:
                            by_kind["<|endoftext|>"].append(float(losses[row, k]))
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
    if seen is not None:
        result["dev_loss_by_kind"] = {kind: {"tokens": len(v), "loss": sum(v) / len(v)}
                                      for kind, v in sorted(by_kind.items())}
        print(f"{'token kind':<28}{'tokens':>8}{'loss':>8}")
        for kind, row in result["dev_loss_by_kind"].items():
            print(f"{kind:<28}{row['tokens']:>8}{row['loss']:>8.3f}")
    for reference, hypothesis in list(zip(references, hypotheses))[:3]:
        print(f"  ref: {reference}\n  ctc: {hypothesis}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
