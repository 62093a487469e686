"""The CTC head of a model trained with the joint CTC/attention loss, kept for decoding.

Training (asr.train.objective) puts a linear layer on the encoder output over the text tokens
plus a blank, the last class. A model directory written by training keeps it beside the model
as ctc_head.safetensors ({"weight": [classes, n_audio_state], "bias": [classes]}), and
load_checkpoint attaches it as ``model.ctc_head``, which joint CTC/attention decoding
(asr.inference.ctc_prefix) reads. It is plain tensors, not a module: it takes no part in the
model's state dict, so model.safetensors stays what it always was.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

CTC_HEAD_FILE = "ctc_head.safetensors"
# log-probability given to every non-blank class at padding frames (blank gets 0 = certain):
# finite, so that sums along time never meet inf - inf
IMPOSSIBLE = -1.0e4


class CTCHead:
    def __init__(self, weight: Tensor, bias: Tensor):
        if weight.ndim != 2 or bias.shape != weight.shape[:1]:
            raise ValueError(f"CTC head: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} do not match")
        self.weight = weight.float()
        self.bias = bias.float()

    @classmethod
    def of(cls, layer) -> "CTCHead":
        """A copy of a training model's nn.Linear CTC head, detached and on the CPU."""
        return cls(layer.weight.detach().cpu(), layer.bias.detach().cpu())

    @property
    def blank(self) -> int:
        """The blank is the last class; classes 0..blank-1 are the tokenizer's text tokens."""
        return self.weight.shape[0] - 1

    def log_probs(self, audio: Tensor, audio_mask: Optional[Tensor] = None) -> Tensor:
        """[batch, positions, classes] float64 log-probabilities of encoder output `audio`
        [batch, positions, d]. Past each utterance's end (audio_mask False) the blank is
        certain, so scores along the padded time axis equal the unpadded ones."""
        logits = audio.float() @ self.weight.to(audio.device).T + self.bias.to(audio.device)
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        if audio_mask is not None:
            padding = ~audio_mask
            log_probs[padding] = IMPOSSIBLE
            log_probs[..., self.blank][padding] = 0.0
        return log_probs

    def save(self, directory: Union[str, Path]) -> None:
        from safetensors.torch import save_file

        from ..store.atomic import atomic_write

        tensors = {"weight": self.weight.contiguous().cpu(), "bias": self.bias.contiguous().cpu()}
        atomic_write(Path(directory) / CTC_HEAD_FILE, lambda p: save_file(tensors, p))

    @classmethod
    def load(cls, path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> "CTCHead":
        from safetensors.torch import load_file

        tensors = load_file(str(path), device=str(device))
        if set(tensors) != {"weight", "bias"}:
            raise ValueError(f"{path}: expected the tensors weight and bias, found {sorted(tensors)}")
        return cls(tensors["weight"], tensors["bias"])
