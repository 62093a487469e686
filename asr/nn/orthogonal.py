"""A learned orthogonal matrix: R = base @ matrix_exp(A), with A skew-symmetric.

The same map as ``torch.nn.utils.parametrizations.orthogonal(..., orthogonal_map="matrix_exp")``
on a square weight, with the same tensors (``original``, whose lower triangle gives A, and
``base``), written as a plain module. torch's parametrisation gives every parametrised module a
class of its own, and torch.compile guards on classes: each rotary layer of a compiled model
then needed a graph of its own (synth_en RESULTS.md, "torch.compile on the CPU").

matrix_exp of a skew-symmetric matrix is orthogonal to float precision whatever the optimiser
does to ``original``; with ``original`` = 0 and ``base`` = I, R is exactly the identity.
"""

import torch
from torch import Tensor, nn


class OrthogonalMatrix(nn.Module):
    """``forward()`` returns the [size, size] orthogonal matrix, in the parameters' dtype."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.original = nn.Parameter(torch.zeros(size, size))
        # The orthogonal matrix the map starts from (saved: reset_to reassigns it).
        self.register_buffer("base", torch.eye(size))

    def forward(self) -> Tensor:
        lower = self.original.tril()
        skew = lower - lower.mT  # the diagonal cancels
        return self.base @ torch.matrix_exp(skew)

    @torch.no_grad()
    def reset_to(self, matrix: Tensor) -> None:
        """Make the module compute `matrix` (orthogonal) exactly: base = matrix, A = 0."""
        if matrix.shape != (self.size, self.size):
            raise ValueError(f"expected a {self.size}x{self.size} matrix, got {tuple(matrix.shape)}")
        self.base.copy_(matrix)
        self.original.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}"


# Checkpoints written while R was torch's parametrisation name its tensors after it.
LEGACY_SUFFIXES = {
    ".basis.parametrizations.weight.original": ".basis.original",
    ".basis.parametrizations.weight.0.base": ".basis.base",
}


def current_name(name: str) -> str:
    """The name a tensor of an older checkpoint has in today's model (unchanged for the rest)."""
    for old, new in LEGACY_SUFFIXES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name
