"""The k largest entries of each row of a wide matrix, found through the maxima of its chunks.

A decoding step takes the top k of every hypothesis's logits over Whisper's 51864 tokens twice:
the shortlist's 128 best int8 logits (asr.inference.shortlist) and the beam's beam+1 best
log-probabilities (asr.inference.decoding.BeamSearch). torch.topk over such rows took 0.44 ms at
five rows for k = 128 and 0.31 ms for k = 6, more than the vocabulary's log-softmax (2 threads,
2-core AVX2 EPYC, 2026-12-08). Every one of a row's k largest entries lies in a chunk whose
maximum is among the row's k largest chunk maxima (a chunk outside them has k chunks with larger
maxima, so k entries larger than any of its own), so the top k of those k chunks is the top k
of the row: a vectorised max over the row, then topk over n / CHUNK maxima and over k * CHUNK
candidates. Equal entries may be picked in another order than torch.topk's, which documents no
order for ties either.
"""
from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 64  # entries per chunk


def chunked_topk(x: Tensor, k: int, chunk: int = CHUNK, sorted: bool = True) -> tuple[Tensor, Tensor]:
    """(values, indices) of the k largest entries of each row of x [rows, n], largest first, as
    x.topk(k, dim=-1, sorted=sorted) (module docstring; unsorted: in no particular order). Rows
    too short to gain go to torch.topk."""
    rows, n = x.shape
    n_chunks = n // chunk
    if n_chunks < 4 * k:
        return x.topk(k, dim=-1, sorted=sorted)
    whole = n_chunks * chunk
    if x.stride(1) == 1:  # rows of a wider matrix (the text columns of the logits): no copy
        chunks = x.as_strided((rows, n_chunks, chunk), (x.stride(0), chunk, 1))
    else:
        chunks = x[:, :whole].reshape(rows, n_chunks, chunk)
    maxima = chunks.amax(dim=-1)  # [rows, n_chunks]
    best = maxima.topk(k, dim=-1, sorted=False).indices  # [rows, k]
    candidates = (best.unsqueeze(-1) * chunk + torch.arange(chunk, device=x.device)).view(rows, k * chunk)
    if whole < n:  # the last, partial chunk is always a candidate
        tail = torch.arange(whole, n, device=x.device).expand(rows, n - whole)
        candidates = torch.cat([candidates, tail], dim=1)
    values, where = x.gather(1, candidates).topk(k, dim=-1, sorted=sorted)
    return values, candidates.gather(1, where)
