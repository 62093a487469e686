"""Read an openai-whisper checkpoint: a torch.save'd {"dims": {...}, "model_state_dict": {...}}.

Loaded with weights_only=True: the unpickler then builds only tensors and plain containers, so
a file whose pickle would call anything else (os.system, eval, ...) is refused, not run.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from ..config import dims_from_dict
from ..errors import first_line
from .whisper_names import ConversionError, WhisperWeights

SUFFIXES = (".pt", ".pth")
# torch's refusal names the offending callable ("... unsupported GLOBAL posix.system ...") or,
# for bytes that are no pickle it accepts, the reason after "WeightsUnpickler error:"
REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


def load_pt(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found, reason = REFUSED_GLOBAL.search(str(err)), UNPICKLER_REASON.search(str(err))
        if found:
            raise ConversionError(f"{path}: refused: its pickle calls {found.group(1)}, which could run "
                                  "code; only plain tensor checkpoints are loaded") from None
        detail = reason.group(1).strip() if reason else first_line(err)
        raise ConversionError(f"{path}: refused: not a plain tensor checkpoint ({detail}); loading it "
                              "fully could run code") from None
    except (RuntimeError, OSError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({first_line(err)})") from None
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        raise ConversionError(f"{path}: not an openai-whisper checkpoint (expected a dict with "
                              "'dims' and 'model_state_dict')")
    return checkpoint


def read_openai(path: Path) -> WhisperWeights:
    """An openai-whisper .pt -> OpenAI-named weights (the names need no mapping here)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    checkpoint = load_pt(path)
    try:
        dims = dims_from_dict(dict(checkpoint["dims"]))
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{path}: invalid dims ({err})") from None
    state = checkpoint["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: model_state_dict is not a dict of tensors")
    return WhisperWeights(dims, dict(state), {"source_format": "openai"})
