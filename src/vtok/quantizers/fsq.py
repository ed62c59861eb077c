"""Finite Scalar Quantization.

Mentzer, Minnen, Agustsson, Tschannen. "Finite Scalar Quantization: VQ-VAE Made Simple",
ICLR 2024, https://arxiv.org/abs/2309.15505

Each of the D dimensions is bounded and rounded to one of L_d levels; the code id is the
mixed-radix number of the per-dimension levels, so the codebook (prod L_d codes) is implicit
and cannot collapse. Written here rather than taken from vector-quantize-pytorch so that it
returns the same type as every other vtok quantizer and pins float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Quantizer, QuantizerOutput

__all__ = ["FSQ"]

MAX_DIMS, MAX_LEVELS, MAX_CODEBOOK = 16, 1 << 16, 1 << 30


class FSQ(Quantizer):
    _levels: torch.Tensor
    _basis: torch.Tensor

    def __init__(self, levels: Sequence[int] = (8, 8, 8, 5, 5, 5)):
        super().__init__()
        levels = [int(v) for v in levels]
        if not 1 <= len(levels) <= MAX_DIMS or any(not 2 <= v <= MAX_LEVELS for v in levels):
            raise ValueError(f"FSQ levels must be 1 to {MAX_DIMS} integers in 2..{MAX_LEVELS}, got {levels}")
        if math.prod(levels) > MAX_CODEBOOK:  # ids are int64 sums of digit * radix: keep them far from overflow
            raise ValueError(f"FSQ levels {levels} make {math.prod(levels)} codes, over {MAX_CODEBOOK}")
        self.levels = levels
        self.dim = len(levels)
        self.codebook_size = 1
        for v in levels:
            self.codebook_size *= v
        basis = [1]
        for v in levels[:-1]:
            basis.append(basis[-1] * v)
        # Derived from `levels`, which the config stores: not part of the state_dict.
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.int64), persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each dimension into (-L/2, L/2) so that rounding gives exactly L values."""
        eps = 1e-3
        half_l = (self._levels - 1) * (1 + eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    @property
    def half_width(self) -> torch.Tensor:
        """(D,) floor(L / 2): a digit is round(bound(z)) + half_width, a code (digit - half) / half."""
        return torch.div(self._levels, 2, rounding_mode="floor")

    def symbol_alphabets(self) -> list[int]:
        return list(self.levels)

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """z: (B, N, D) float32."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ expects last dim {self.dim}, got {tuple(z.shape)}")
        bounded = self.bound(z)
        rounded = bounded + (torch.round(bounded) - bounded).detach()  # straight-through
        half_width = self.half_width
        codes = rounded / half_width
        digits = (torch.round(bounded).detach() + half_width).long()  # (B, N, D) in [0, L)
        indices = (digits * self._basis).sum(dim=-1)
        return QuantizerOutput(codes=codes, indices=indices, aux_loss=z.new_zeros(()))

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        levels = self._levels.long()
        digits = torch.div(indices.unsqueeze(-1), self._basis, rounding_mode="floor") % levels
        half_width = self.half_width
        return (digits.float() - half_width) / half_width
