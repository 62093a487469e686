"""Weight averaging: a running average kept during training (as icefall's averaged model) and
the average of saved checkpoints (``asr average CKPT... -o OUT``).

Only floating-point tensors are averaged. The rotary inverse frequencies are a function of the
base (base^(-2i/h)), so averaging them would give frequencies of no base at all: the base is
taken from the newest weights and the frequencies recomputed from it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from ..nn.ctc_head import CTCHead
from ..nn.orthogonal import current_name
from ..store.checkpoint import load_checkpoint, load_tokenizer, read_config, save_checkpoint
from .dynamic_base import rotary_bases, set_rotary_base

AVERAGE_PREFIX = "average."
HEAD_PREFIX = "ctc_head."  # the CTC head's tensors among the averaged ones


def _is_rotary_buffer(name: str) -> bool:
    return ".rotary_frequencies." in name


class RunningAverage:
    """Cumulative mean of the model's weights over the steps it is updated at, and of the CTC
    head's when training has one (so that the averaged model decodes jointly with a head that
    matches its encoder, not with the last step's)."""

    def __init__(self, model, ctc_head=None):
        self.count = 0
        self.tensors = {name: t.detach().float().clone() for name, t in self._named(model, ctc_head).items()}

    @staticmethod
    def _named(model, ctc_head=None) -> dict[str, torch.Tensor]:
        """The averaged tensors by name: the model's floating-point weights (not the rotary
        frequencies) and the head's, prefixed with HEAD_PREFIX."""
        named = {name: t for name, t in model.state_dict().items()
                 if t.is_floating_point() and not _is_rotary_buffer(name)}
        if ctc_head is not None:
            named.update({HEAD_PREFIX + name: t for name, t in ctc_head.state_dict().items()})
        return named

    @torch.no_grad()
    def update(self, model, ctc_head=None) -> None:
        self.count += 1
        current = self._named(model, ctc_head)
        for name, average in self.tensors.items():
            average += (current[name].detach().float() - average) / self.count

    def copy_into(self, model) -> None:
        """Load the average into ``model`` (same architecture); its rotary base is kept."""
        state = model.state_dict()
        for name, average in self.tensors.items():
            if not name.startswith(HEAD_PREFIX):
                state[name].copy_(average.to(state[name].dtype))

    def ctc_head(self) -> Optional[CTCHead]:
        """The averaged CTC head, or None when training has no head."""
        if HEAD_PREFIX + "weight" not in self.tensors:
            return None
        return CTCHead(self.tensors[HEAD_PREFIX + "weight"].clone(), self.tensors[HEAD_PREFIX + "bias"].clone())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {AVERAGE_PREFIX + name: t for name, t in self.tensors.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], count: int) -> None:
        # a checkpoint written before the head was averaged has no head average: the average
        # then goes on without a head (averaged/ is written without one), rather than mixing a
        # head averaged over fewer steps with weights averaged over more
        tensors = {current_name(name): t for name, t in tensors.items()}  # older checkpoints' names
        if count and HEAD_PREFIX + "weight" in self.tensors and AVERAGE_PREFIX + HEAD_PREFIX + "weight" not in tensors:
            self.tensors = {name: t for name, t in self.tensors.items() if not name.startswith(HEAD_PREFIX)}
        for name in self.tensors:
            self.tensors[name].copy_(tensors[AVERAGE_PREFIX + name])
        self.count = count


def model_directory(path: Path) -> Path:
    """A model directory, or a training checkpoint (its model/ inside)."""
    path = Path(path)
    return path / "model" if (path / "model" / "config.json").is_file() else path


def average_checkpoints(paths: Sequence[Path], output: Path) -> Path:
    """Average the weights of model directories of one architecture into ``output`` (and their
    CTC heads, when every one has a head)."""
    if not paths:
        raise ValueError("no checkpoints to average")
    directories = [model_directory(p) for p in paths]
    model, config = load_checkpoint(directories[-1])
    sums = {name: torch.zeros_like(t, dtype=torch.float64) for name, t in model.state_dict().items()
            if t.is_floating_point() and not _is_rotary_buffer(name)}
    heads = []  # CTC heads (joint decoding): averaged too when every input has one
    for directory in directories:
        other, _ = load_checkpoint(directory)
        heads.append(other.ctc_head)
        state = other.state_dict()
        if state.keys() != model.state_dict().keys():
            raise ValueError(f"{directory}: not the same architecture as {directories[-1]}")
        for name in sums:
            if state[name].shape != sums[name].shape:
                raise ValueError(f"{directory}: {name} has shape {tuple(state[name].shape)}, "
                                 f"not {tuple(sums[name].shape)}")
            sums[name] += state[name].double()
    target = model.state_dict()
    with torch.no_grad():
        for name, total in sums.items():
            target[name].copy_((total / len(directories)).to(target[name].dtype))
    model.ctc_head = None
    if all(head is not None and head.weight.shape == heads[0].weight.shape for head in heads):
        model.ctc_head = CTCHead(sum(h.weight.double() for h in heads) / len(heads),
                                 sum(h.bias.double() for h in heads) / len(heads))
    for stack, base in rotary_bases(model).items():  # the newest base, frequencies recomputed
        set_rotary_base(model, base, stack)
    extra = {k: v for k, v in read_config(directories[-1]).items()
             if k not in ("format", "format_version", "dims", "options", "tokenizer")}
    extra["averaged_from"] = [str(d) for d in directories]
    return save_checkpoint(model, output, tokenizer=load_tokenizer(directories[-1], config), extra=extra)
