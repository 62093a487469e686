"""Rotary position embeddings with a learned orthogonal basis change.

Two modules:

* ``RotaryFrequencies`` holds a stack's rotary base and the inverse frequencies derived from it.
  Its buffers are where the stack's live base is (saved with the weights); every rotary layer of
  the stack reads them. The training loop changes a base through ``ASRModel.set_rotary_base``,
  which keeps the stack's options (and so config.json) in step.
* ``RotaryEmbeddingWithRotation`` is owned by each self-attention layer. It applies a learned
  orthogonal basis change Q = (product of Givens rotations) @ R to queries/keys and then the
  usual rotary position rotation. Inside a model, where its scale starts is decided by
  asr/nn/extras_init.py (0 with function-preserving init, 1 otherwise).

Conventions (row vectors, as in ``x @ W``):

* Position rotation uses the "rotate half" layout: coordinate i is paired with i + h/2 and that
  plane turns by angle ``scale * p * inv_freq[i]``.
* The Givens rotations use the interleaved pairing (2k, 2k + 1). It must differ from the rotary
  pairing: rotations in the same 2-D plane commute, so if Q only turned the rotary planes,
  Q^T Rot Q = Rot and Q would cancel out of every attention score. With h >= 4 no Givens pair
  (2k, 2k + 1) lies in a rotary plane (i, i + h/2).
* Q is applied before the position rotation. Then q_m . k_n = q^T Q^T Rot_(n-m) Q k still depends
  only on n - m. Applied after it, an orthogonal Q would cancel out exactly.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from ..config import DEFAULT_ROTARY_BASE
from .orthogonal import OrthogonalMatrix


def _inverse_frequencies(base: float, head_dim: int, device=None) -> Tensor:
    """base^(-2i/h) for i = 0 .. h/2 - 1, computed in float64 and rounded once to float32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim
    return (float(base) ** -exponents).to(torch.float32)


def _check_head_dim(head_dim: int) -> None:
    if head_dim <= 0 or head_dim % 2 != 0:
        raise ValueError(f"rotary embeddings need a positive, even head_dim; got {head_dim}")


class RotaryFrequencies(nn.Module):
    """The rotary base of one stack and the inverse frequencies every rotary layer reads."""

    def __init__(self, head_dim: int, base: float = DEFAULT_ROTARY_BASE):
        super().__init__()
        _check_head_dim(head_dim)
        if not base > 1.0:
            raise ValueError(f"the rotary base must be > 1; got {base}")
        self.head_dim = head_dim
        # Both persistent: a checkpoint restores the (possibly adapted) base with the weights.
        self.register_buffer("inv_freq", _inverse_frequencies(base, head_dim))
        self.register_buffer("base", torch.tensor(float(base), dtype=torch.float64))

    @torch.no_grad()
    def set_base(self, value: float) -> None:
        """Change the base in place.

        The buffers are updated with copy_ (same tensor objects, same storage), so optimisers,
        torch.compile guards and DDP buffer broadcasting keep referring to the live values.
        """
        value = float(value)
        if not value > 1.0 or value == float("inf"):
            raise ValueError(f"the rotary base must be finite and > 1; got {value}")
        self.base.fill_(value)
        self.inv_freq.copy_(_inverse_frequencies(value, self.head_dim, self.inv_freq.device))

    def angles(self, offset: int, length: int) -> Tensor:
        """Angles p * inv_freq[i] for positions p = offset .. offset + length - 1: [length, h/2].

        Computed in float32 with autocast off: in bfloat16 a position like 1490 rounds to 1488,
        which would scramble the phases of long sequences. float32 is exact for p < 2^24.
        """
        device = self.inv_freq.device
        with torch.autocast(device_type=device.type, enabled=False):
            positions = torch.arange(offset, offset + length, device=device, dtype=torch.float32)
            return torch.outer(positions, self.inv_freq.float())

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={float(self.base):g}"


def _givens_pairing(head_dim: int) -> tuple[Tensor, Tensor]:
    """Interleaved pairs (0, 1), (2, 3), ...: disjoint, and never a rotary plane (i, i + h/2)."""
    first = torch.arange(0, head_dim, 2)
    return first, first + 1


class RotaryEmbeddingWithRotation(nn.Module):
    """x -> Rot_p(x @ G @ R): learned orthogonal basis change, then rotary position rotation.

    ``forward(x, angles)`` takes x of shape [..., T, h] (usually [B, H, T, h]) and angles of shape
    [T, h/2] from ``RotaryFrequencies.angles``; the same module is applied to queries and keys.
    """

    def __init__(
        self,
        head_dim: int,
        *,
        givens: bool = True,
        rotation: bool = True,
    ):
        super().__init__()
        _check_head_dim(head_dim)
        self.head_dim = head_dim
        self.givens = givens
        self.rotation = rotation

        if givens:
            first, second = _givens_pairing(head_dim)
            # Integer buffers, derived from head_dim alone, so not saved in checkpoints.
            self.register_buffer("givens_i", first, persistent=False)
            self.register_buffer("givens_j", second, persistent=False)
            # Inverse of the permutation cat(givens_i, givens_j): one gather puts the rotated
            # columns back in place.
            order = torch.cat([first, second])
            self.register_buffer("givens_unpermute", torch.argsort(order), persistent=False)
            self.thetas = nn.Parameter(torch.zeros(head_dim // 2))

        if rotation:
            # R starts at exactly the identity; applied as x @ R
            self.basis = OrthogonalMatrix(head_dim)

        # multiplies every position angle; 1 = plain rotary (see extras_init for the model's policy);
        # a 1-element vector, not a 0-d scalar: FSDP cannot shard 0-d parameters
        self.scale = nn.Parameter(torch.ones(1))

    def basis_change(self, dtype: torch.dtype = torch.float32) -> Optional[Tensor]:
        """Q = (product of Givens rotations) @ R as one [h, h] matrix of ``dtype``, or None.

        Built in O(h^2) once per call: the disjoint Givens rotations turn pairs of R's rows
        (G is block diagonal, so (G R)[i] = cos R[i] + sin R[j], (G R)[j] = -sin R[i] + cos R[j]),
        never a dense product of Givens matrices. Queries and keys then need one matmul each
        instead of gathers, a concatenation and a matmul.
        """
        if not (self.givens or self.rotation):
            return None
        if self.rotation:
            r = self.basis().to(dtype)  # R, computed once here
        else:
            r = torch.eye(self.head_dim, dtype=dtype, device=self.thetas.device)
        if not self.givens:
            return r
        theta = self.thetas.to(dtype)[:, None]
        cos, sin = torch.cos(theta), torch.sin(theta)
        r_i = r.index_select(0, self.givens_i)
        r_j = r.index_select(0, self.givens_j)
        rotated = torch.cat([cos * r_i + sin * r_j, cos * r_j - sin * r_i], dim=0)
        return rotated.index_select(0, self.givens_unpermute)

    @staticmethod
    def _rotate_positions(x: Tensor, angles: Tensor) -> Tensor:
        """Rotate plane (i, i + h/2) by angles[..., i] ("rotate half" layout)."""
        cos, sin = torch.cos(angles), torch.sin(angles)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def forward(self, x: Tensor, angles: Tensor) -> Tensor:
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"expected last dimension {self.head_dim}, got {tuple(x.shape)}")
        if angles.shape != (x.shape[-2], self.head_dim // 2):
            raise ValueError(
                f"angles must be [T, h/2] = [{x.shape[-2]}, {self.head_dim // 2}], "
                f"got {tuple(angles.shape)}"
            )
        # Everything in float32 (float64 for a float64 model) outside autocast: bf16 cos/sin of
        # large angles are wrong, and the basis change should stay orthogonal to float32
        # precision. A float64 model stays float64 throughout, so a cached one-token step equals
        # the full forward to float64 precision whatever cos/sin kernel each length takes.
        compute = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = x.to(compute)
            basis = self.basis_change(compute)
            if basis is not None:
                y = y @ basis
            y = self._rotate_positions(y, angles.to(compute) * self.scale.to(compute))
        return y.to(x.dtype)

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Function-preserving init: thetas = 0, R = I, scale = 0, so forward(x, .) == x."""
        if self.givens:
            self.thetas.zero_()
        if self.rotation:
            base = self.basis.base
            self.basis.reset_to(torch.eye(self.head_dim, dtype=base.dtype, device=base.device))
        self.scale.zero_()

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, givens={self.givens}, rotation={self.rotation}"


__all__ = ["DEFAULT_ROTARY_BASE", "RotaryEmbeddingWithRotation", "RotaryFrequencies"]
