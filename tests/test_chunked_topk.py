"""chunked_topk against torch.topk (the reference): the same values and indices on rows without
ties, whether the k largest sit in one chunk, in k chunks, or in the partial last chunk, on
contiguous rows and on column slices of a wider matrix."""
from __future__ import annotations

import pytest
import torch

from asr.inference.chunked_topk import chunked_topk


def check(x: torch.Tensor, k: int, chunk: int = 64) -> None:
    values, indices = chunked_topk(x, k, chunk)
    expected = x.topk(k, dim=-1)
    torch.testing.assert_close(values, expected.values, rtol=0, atol=0)
    assert torch.equal(indices, expected.indices)
    assert torch.equal(x.gather(1, indices), values)


@pytest.mark.parametrize("rows,n,k", [(1, 51864, 128), (5, 50257, 128), (5, 51864, 6), (3, 5000, 10),
                                      (2, 300, 6), (4, 1000, 200)])
def test_random_rows(rows, n, k):
    torch.manual_seed(n + k)
    check(torch.randn(rows, n), k)


def test_top_entries_in_one_chunk_in_many_and_in_the_tail():
    torch.manual_seed(0)
    n, k = 10_000, 16
    x = torch.randn(3, n)
    x[0, 128:128 + k] = 10 + torch.rand(k)  # all in one chunk
    x[1, torch.arange(k) * 600 + 7] = 10 + torch.rand(k)  # one per chunk
    x[2, n - 5:] = 10 + torch.rand(5)  # the partial last chunk (10000 = 156 * 64 + 16)
    check(x, k)


def test_column_slice_of_a_wider_matrix():
    torch.manual_seed(1)
    wide = torch.randn(5, 51864)
    check(wide[:, :50257], 128)
    check(wide[:, :50257].t().contiguous().t(), 128)  # column-major: the copying path
