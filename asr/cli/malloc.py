"""Keep glibc from holding on to freed memory, for the `asr` command's peak RSS.

glibc's malloc raises its mmap threshold each time a large mmapped block is freed (up to 32 MB),
so after the first encoder pass the next windows' multi-megabyte activations come from the
heap, and freed heap memory stays in the process. Fixing the threshold (which also turns the
dynamic adjustment off) returns such blocks to the system when they are freed. Measured with
`/usr/bin/time -v asr transcribe` on a 5-minute file (tiny.en, greedy, 1 thread, 2026-12-01):
peak RSS 498-510 MB without it, 477 MB with a 256 KB threshold (three runs), 495-498 MB with
the 4 MB used here. Rerun with nothing else of ours running (2 threads, 2026-12-01 21:40 UTC, alternating pairs)
256 KB kept peak RSS at 478 MB against 494-502 MB but was slower in every pair, by 4-13 %
(24.9 / 25.6 / 24.6 s against 23.2 / 22.6 / 23.5 s), so the threshold was set at 4 MB.
Remeasured after the decoder's memory came down (2026-12-06, 2-core AVX-512 EPYC, auto, two
alternating runs each, the threshold set through MALLOC_MMAP_THRESHOLD_): 20 short clips in one
call took 8.9-9.6 s at 4 MB (peak 636 MB), 8.1-8.4 s at 16 MB (657-663 MB), 7.4-7.7 s at 32 MB
(679-688 MB) and 7.4-7.5 s with glibc's dynamic threshold (681-714 MB); the 302 s file at beam
5 took 19.1 s at 4 MB (465-467 MB), 16.6-17.8 s at 32 MB (460-470 MB) and 17.1-17.7 s dynamic
(469-478 MB). Every multi-megabyte activation mapped afresh and paged in again costs more time
than it saves memory, so the threshold is now 32 MB (glibc's own ceiling for the dynamic one):
an encoder slice's activations (2 windows x 1500 x 1536 floats, 18 MB) come from the heap,
and only larger blocks are mapped and returned.
Training, measured the same way: 150 steps of recipes/synth_en/conf/small.yaml (`asr train ...
--set run.max_steps=150`, bf16, 2-core AVX512-BF16 EPYC, 2026-12-07, two alternating rounds)
took a median 0.291 / 0.333 s a step with this threshold and 0.304 / 0.334 s with a 1 GB one
(everything from the heap); 120 steps with glibc's dynamic threshold (MALLOC_ARENA_MAX=2 set, the
code before this paragraph, which then left malloc alone) 0.349 s, against 0.326 s with this
threshold in the same hour. A small fixed threshold is what hurts: with MALLOC_TOP_PAD_ set,
which freezes glibc's threshold at its starting 128 KB, steps took 0.579 / 0.562 s, every
activation of every new batch shape mapped and paged in afresh.
Set where it applies only: glibc, and no setting of the user's own for these thresholds in the
environment (MALLOC_MMAP_THRESHOLD_ and its kin, or the same through GLIBC_TUNABLES). Other
malloc settings, such as the MALLOC_ARENA_MAX many container images set, leave glibc's dynamic
threshold on, so they do not stop this one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # blocks above this are mapped and unmapped on their own


# the environment's ways of setting glibc's mmap and trim thresholds (mallopt(3), tunables(7))
THRESHOLD_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
THRESHOLD_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad",
                      "glibc.malloc.mmap_max")


def user_sets_thresholds(environ) -> bool:
    tunables = environ.get("GLIBC_TUNABLES", "")
    return any(k in environ for k in THRESHOLD_VARIABLES) or any(t in tunables for t in THRESHOLD_TUNABLES)


def limit_heap_retention() -> bool:
    """Fix glibc's mmap threshold; True if it was set."""
    if not sys.platform.startswith("linux") or user_sets_thresholds(os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
