"""Token ids <-> digits: the one place a token's mixed-radix split is written.

A quantizer says how its code ids split into independent symbols (``Quantizer.symbol_alphabets``:
one symbol per FSQ dimension, or one symbol over a VQ codebook); ``Quantizer.digits`` is that split
as arithmetic. The token prior, the ANS and LM coders, the token LM and its sampler all go through
it, on numpy arrays or torch tensors alike. Least significant digit first:
token = sum_j digit_j * prod(alphabets[:j]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Digits"]


class Digits:
    """The mixed-radix split of token ids over `alphabets` (each >= 2)."""

    def __init__(self, alphabets: Sequence[int]):
        self.alphabets = tuple(int(a) for a in alphabets)
        self.radix = tuple(math.prod(self.alphabets[:j]) for j in range(len(self.alphabets)))
        self._np = (np.asarray(self.radix, dtype=np.int64), np.asarray(self.alphabets, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.alphabets)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.alphabets)

    def split(self, tokens: Any) -> Any:
        """(...,) token ids -> (..., D) digits; numpy in, numpy out; torch in, torch out (same device)."""
        if isinstance(tokens, torch.Tensor):
            t_radix, t_alphabets = (torch.tensor(v, dtype=torch.int64, device=tokens.device) for v in self._np)
            return (tokens.long().unsqueeze(-1) // t_radix) % t_alphabets
        radix, alphabets = self._np
        return (np.asarray(tokens, dtype=np.int64)[..., None] // radix) % alphabets

    def join(self, digits: Any) -> Any:
        """(..., D) digits -> (...,) token ids (int64)."""
        if isinstance(digits, torch.Tensor):
            return (digits.long() * torch.tensor(self._np[0], device=digits.device)).sum(-1)
        return (np.asarray(digits, dtype=np.int64) * self._np[0]).sum(-1)
