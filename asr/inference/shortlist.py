"""The vocabulary projection of the float32_shortlist compute type: float32 logits where they
decide anything, int8 only to find where that is.

A decoding step at batch 1 is memory-bound on the CPU, and the tied output projection is most of
the memory it reads: Whisper tiny's table is 51864 x 384 float32, 80 MB per token, against
about 38 MB for all four decoder layers (measured on a 2-core AVX2 EPYC: 4.1 ms of a 12.5 ms
step). An int8 copy of the table is a quarter of that, but int8 logits change the transcripts
(the int8 compute type agrees with float32 on ~91 % of words). Here the int8 copy only makes a
shortlist: the SHORTLIST_SIZE text tokens with the highest int8 logits are recomputed from the
float32 table, and so are all special and timestamp tokens (1608 rows for Whisper, 2.5 MB,
since the timestamp rules compare their probability mass with the text tokens'). Whatever the
search picks (argmax, the beam's candidates, a forced timestamp) then carries its float32 logit;
only the other text tokens, which enter the softmax's normaliser and nothing else, keep int8
approximations (and a beam's choice between near-equal hypotheses can follow that normaliser).
The float32 argmax is missed only when it falls outside the int8 top SHORTLIST_SIZE, which needs
SHORTLIST_SIZE tokens within twice the int8 error of the best one (scripts/compute_agreement.py
measures the agreement with float32).

The float32 rows are read from the checkpoint's weights file with pread (FileRows), not through
a memory map: a shortlist of 128 rows per step touches most of the table's pages within a few
minutes of audio, and mapped pages count in the process's resident memory (measured: +75 MB of
peak RSS on a 5-minute file, over the 500 MB target), while pages read with pread stay in the
OS page cache, shared and reclaimable.

Sampling (temperature > 0) draws from these logits as they are: the shortlisted tokens exact,
the rest within the int8 error.

On a CPU that computes bfloat16 natively, a one-row step (greedy decoding of one file) ranks the
text tokens with a group-wise int4 copy instead (Int4Ranking: half the int8 table's bytes), and
the approximations it leaves are within the int4 error.
"""
from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from .chunked_topk import chunked_topk

# text tokens recomputed in float32 per step. Beam 5 needs 6 candidates per hypothesis, but
# its choices hang on near-ties of summed log-probabilities, which the int8 remainder of the
# softmax normaliser moves: on the offline test set (scripts/compute_agreement.py --beam-size 5,
# AVX2 EPYC) 32 and 64 agreed with float32 on 98.74 % of words, 128 and 512 on 99.25 % (the
# last two utterances differ by 0.002 in average log-probability, float rounding); greedy
# agreed on 100 % at 32. Gathering 128 rows costs ~0.3 ms when each is read from the file, ~25 us
# when FileRows has kept them (against ~1 ms for the int8 pass).
SHORTLIST_SIZE = 128
# rows of the float32 table FileRows keeps in memory (1.5 KB each for Whisper tiny: 6.3 MB)
CACHED_ROWS = 4096
# inputs sharing one scale and zero point in Int4Ranking's table. On 521 decoder states of the
# long-form benchmark file (greedy), the float32 argmax was in the int4 top 128 at every state
# with groups of 32, 64 and 128, and all of the float32 top 5 with 64 and 128 (one state missed
# one at 128 per group, with a top 64); per-channel int8 ranks as well
INT4_GROUP = 64
INT4_ROWS_MULTIPLE = 16  # torch's int4 packing takes a multiple of 16 rows


class RowSource(Protocol):
    """Float32 rows of the tied table [n_vocab, d]."""

    shape: tuple[int, int]

    def rows(self, index: Tensor) -> Tensor:
        """index [...] of token ids -> [..., d] float32."""
        ...


class TableRows:
    """Rows of a table in memory."""

    def __init__(self, table: Tensor):
        self.table = table
        self.shape = tuple(table.shape)

    def rows(self, index: Tensor) -> Tensor:
        return self.table[index].float()


class FileRows:
    """Rows of a safetensors tensor read with pread, one row per call, the last `cache_rows`
    rows read kept in memory (a ring: the oldest read leaves first).

    Decoding asks for nearly the same rows step after step (the shortlists of one passage share
    most of their tokens): greedy decoding of the 302.6 s long-form benchmark file asked for
    124,743 rows, 13,781 distinct, one pread each (~0.4 ms of a ~6 ms step with the Python
    around it). The ring served 67 % of them with 4096 rows kept (6.3 MB), 77 % with 8192 (a
    least-recently-used cache would have served 71 % and 82 %)."""

    def __init__(self, path: Path, name: str, shape: tuple[int, int], cache_rows: int = CACHED_ROWS):
        from ..store.checkpoint import tensor_location

        with open(path, "rb") as f:
            self.offset, self.dtype = tensor_location(f, name, shape)
        self.shape = tuple(shape)
        self.row_bytes = shape[1] * np.dtype(self.dtype).itemsize
        self.fd = os.open(path, os.O_RDONLY)
        # closed when the object goes, or at exit before modules are torn down (a __del__ run
        # during interpreter shutdown found os.close already gone and printed a traceback)
        weakref.finalize(self, os.close, self.fd)
        self.slot_of = np.full(shape[0], -1, dtype=np.int64)  # token -> its slot in `kept`, -1: not kept
        self.token_in = np.full(cache_rows, -1, dtype=np.int64)  # slot -> token, -1: empty
        self.kept = np.empty((cache_rows, shape[1]), dtype=self.dtype)
        self.next_slot = 0  # the ring's oldest slot
        self.lock = threading.Lock()  # one model may decode in several threads

    def rows(self, index: Tensor) -> Tensor:
        ids = index.reshape(-1).numpy()
        with self.lock:
            slots = self.slot_of[ids]
            kept = slots >= 0
            out = np.empty((len(ids), self.shape[1]), dtype=self.dtype)
            out[kept] = self.kept[slots[kept]]
            if not kept.all():
                missing, where = np.unique(ids[~kept], return_inverse=True)
                fresh = self.read(missing.tolist())
                out[~kept] = fresh[where]
                self.keep(missing, fresh)
        return torch.from_numpy(out).float().view(*index.shape, -1)

    def read(self, tokens: list[int]) -> np.ndarray:
        buffer = np.empty((len(tokens), self.shape[1]), dtype=self.dtype)
        view = memoryview(buffer).cast("B")
        for i, token in enumerate(tokens):
            start = i * self.row_bytes
            if os.preadv(self.fd, [view[start:start + self.row_bytes]], self.offset + token * self.row_bytes) \
                    != self.row_bytes:
                raise OSError(f"short read of row {token} of the token table")
        return buffer

    def keep(self, tokens: np.ndarray, values: np.ndarray) -> None:
        """Put rows in the ring's oldest slots (the last len(self.kept) of them if more)."""
        n = min(len(tokens), len(self.kept))
        if n == 0:
            return
        tokens, values = tokens[len(tokens) - n:], values[len(values) - n:]
        slots = (self.next_slot + np.arange(n)) % len(self.kept)
        evicted = self.token_in[slots]
        self.slot_of[evicted[evicted >= 0]] = -1
        self.token_in[slots] = tokens
        self.slot_of[tokens] = slots
        self.kept[slots] = values
        self.next_slot = (self.next_slot + n) % len(self.kept)


class RowEmbedding(nn.Module):
    """The decoder's token embedding looked up through a RowSource instead of the mapped table.

    The tied table is still memory-mapped when FileRows reads the shortlist's rows with pread,
    and those reads leave its pages in the page cache; a lookup of the decoder's input token in
    the mapped table then faults one page in, and the kernel maps the cached pages around it as
    well (fault-around, 64 KB). Over a 302 s file the table's mapped pages grew to 46 MB of the
    process's resident memory that way (measured from /proc/self/pagemap, 2-core AVX-512 EPYC);
    read with pread the lookups map nothing."""

    def __init__(self, table: RowSource):
        super().__init__()
        self.table = table

    def forward(self, tokens: Tensor) -> Tensor:
        return self.table.rows(tokens)


class Int4Ranking:
    """Approximate logits of the text tokens for one decoder state, from a group-wise int4 copy
    of the table's text rows: 4-bit codes with a scale and a zero point per INT4_GROUP inputs,
    multiplied by torch's int4 weight-only kernel (aten._weight_int4pack_mm_for_cpu) with the
    state in bfloat16. At one row it reads half the int8 table's bytes: 0.64-0.75 ms against
    1.34 ms for the int8 pass over Whisper's vocabulary (2 threads, caches evicted, 2-core
    AVX512-BF16 EPYC, 2026-12-07, ad-hoc loop); at five rows it is the slower (2.0 against 1.0
    ms), so beam search and batches of files keep the int8 pass. Only where the CPU computes
    bfloat16 natively: the kernel's float32 form took 17 ms."""

    def __init__(self, packed: Tensor, scales_zeros: Tensor, n_text: int):
        self.packed = packed  # [rows padded to INT4_ROWS_MULTIPLE, d / 2] uint8 (torch's layout)
        self.scales_zeros = scales_zeros  # [d / INT4_GROUP, rows padded, 2] bfloat16
        self.n_text = n_text

    @staticmethod
    def available() -> bool:
        """Whether this torch has the int4 packing and product for the CPU (torch >= 2.5)."""
        return all(hasattr(torch.ops.aten, op) for op in ("_convert_weight_to_int4pack_for_cpu",
                                                           "_weight_int4pack_mm_for_cpu"))

    @staticmethod
    def quantize(text_rows: Tensor) -> tuple[Tensor, Tensor]:
        """(packed codes, scales and zero points) of text_rows [n_text, d] float: each group of
        INT4_GROUP inputs of a row maps [min, max] onto the codes 0..15, and the kernel reads a
        code q back as (q - 8) * scale + zero, so zero = min + 8 * scale."""
        n_text, width = text_rows.shape
        padded = -(-n_text // INT4_ROWS_MULTIPLE) * INT4_ROWS_MULTIPLE
        groups = torch.zeros(padded, width, dtype=torch.float32)
        groups[:n_text] = text_rows
        groups = groups.view(padded, width // INT4_GROUP, INT4_GROUP)
        low, high = torch.aminmax(groups, dim=-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        codes = ((groups - low) / scale).round_().clamp_(0, 15).to(torch.int32).view(padded, width)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        scales_zeros = torch.stack([scale.squeeze(-1), (low + 8 * scale).squeeze(-1)], dim=-1)
        return packed, scales_zeros.transpose(0, 1).contiguous().to(torch.bfloat16)

    def logits(self, flat: Tensor) -> Tensor:
        """flat [1, d] float32 -> [1, n_text] float32."""
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), self.packed, INT4_GROUP,
                                                        self.scales_zeros)
        return y[:, :self.n_text].float()


class BackgroundPrepack:
    """torch.ops.quantized.linear_prepack of the int8 table (fbgemm's blocked layout), started
    in a thread when the model loads and waited for at the first decoding step.

    Packing Whisper's 51864 x 384 table takes 0.16 s on one core (measured on a 2-core Xeon),
    every start-up; the op releases the GIL, so the audio is read, featurised and encoded
    meanwhile. The packed form cannot be stored: torch serialises it unpacked. The thread is not
    a daemon: the interpreter waits for it at exit, since a daemon thread stopped inside the C++
    op at shutdown aborts the process ("terminate called without an active exception")."""

    def __init__(self, quantized: Tensor):
        self.packed = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = threading.Thread(
            target=self.pack, args=(quantized,), name="asr-shortlist-prepack")
        self.thread.start()

    def pack(self, quantized: Tensor) -> None:
        try:
            self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        except BaseException as err:  # raised again in the thread that asks for the result
            self.error = err

    def get(self):
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise self.error
        return self.packed


class ShortlistProjection(nn.Module):
    """logits = x @ table.T, with the top text tokens (by an int8 pass) and every special token
    computed in float32 and the other text tokens in int8.

    table: where the float32 rows [n_vocab, d] come from (FileRows or TableRows); quantized: the
    table's per-row int8 copy (a torch.qint8 per-channel tensor); n_text: the first special
    token (tokens below it are text)."""

    def __init__(self, table: RowSource, quantized: Tensor, n_text: int, size: int = SHORTLIST_SIZE,
                 int4: Optional[Int4Ranking] = None):
        super().__init__()
        if tuple(table.shape) != tuple(quantized.shape) or not 0 < n_text <= table.shape[0]:
            raise ValueError(f"shortlist: table {tuple(table.shape)}, int8 copy {tuple(quantized.shape)}, "
                             f"first special token {n_text}")
        self.n_text = n_text
        self.size = min(size, n_text)
        self.table = table
        # the special rows transposed, for one small matrix product per step
        special = torch.arange(n_text, table.shape[0])
        self.register_buffer("special", table.rows(special).t().contiguous(), persistent=False)
        # where set (the float16 compute types), the special tokens' logits come from this layer
        # instead, a Float16WeightLinear of the same rows: 51 against 184 us at five rows (beam
        # search), 28 against 44 us at one (2 threads, 2-core AVX512-BF16 EPYC, 2026-12-07)
        self.special_linear: Optional[nn.Module] = None
        self.packed = BackgroundPrepack(quantized)
        self.int4 = int4  # ranks one row at a time where given (Int4Ranking)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d] -> logits [..., n_vocab], float32."""
        flat = x.reshape(-1, x.shape[-1]).float()
        if flat.shape[0] == 1 and self.int4 is not None:
            logits = torch.empty(1, self.table.shape[0])
            logits[:, :self.n_text] = self.int4.logits(flat)
        else:
            # reduce_range: 7-bit activations, as torch.ao's dynamic Linear asks of fbgemm (its
            # int8 products sum pairs in 16 bits)
            logits = torch.ops.quantized.linear_dynamic(flat, self.packed.get(), reduce_range=True)  # [rows, n_vocab]
        text = logits[:, :self.n_text]
        shortlist = chunked_topk(text, self.size, sorted=False)[1]  # [rows, size]
        text.scatter_(1, shortlist, self.exact_logits(shortlist, flat))
        logits[:, self.n_text:] = flat @ self.special if self.special_linear is None else self.special_linear(flat)
        return logits.view(*x.shape[:-1], logits.shape[-1])

    def exact_logits(self, shortlist: Tensor, flat: Tensor) -> Tensor:
        """The float32 logits [rows, size] of each row's shortlist [rows, size] for the states
        flat [rows, d]. Several rows (beam hypotheses, which share most candidates) read and
        multiply each distinct token's row once: at beam 5, 41 % of the 640 shortlisted tokens
        were distinct (a 30-s window of the long-form benchmark file)."""
        if shortlist.shape[0] == 1:  # topk's indices are distinct already
            return (self.table.rows(shortlist[0]) @ flat[0]).unsqueeze(0)
        unique, inverse = torch.unique(shortlist, return_inverse=True)
        products = flat @ self.table.rows(unique).t()  # [rows, distinct tokens]
        return products.gather(1, inverse)
