"""The one contract every quantizer honours.

Axis letters used in this package: B batch, N tokens (sequence positions), D code dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .digits import Digits

__all__ = ["Quantizer", "QuantizerOutput"]


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    codes: quantized vectors (B, N, D), differentiable towards the input (straight-through).
    indices: code ids (B, N), int64 in [0, codebook_size).
    aux_loss: scalar loss the trainer adds (commitment etc.); zero when there is none.
    stats: detached scalars worth logging (e.g. codebook usage in the batch).
    """

    codes: torch.Tensor
    indices: torch.Tensor
    aux_loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Quantizer(nn.Module):
    """Base class: maps (B, N, D) vectors to codes and ids, and ids back to codes.

    Quantization always runs in float32, whatever autocast says: in bf16 FSQ's rounding
    lands on far fewer levels than it should (vector-quantize-pytorch issue #114).
    """

    dim: int
    codebook_size: int

    def symbol_alphabets(self) -> list[int]:
        """How a code id splits into independent symbols for entropy coding: one symbol of
        codebook_size values by default; FSQ codes split into one symbol per dimension."""
        return [int(self.codebook_size)]

    @property
    def digits(self) -> Digits:
        """Token ids <-> the symbols of symbol_alphabets (the prior, the coders and the token LM use it)."""
        return Digits(self.symbol_alphabets())

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """(B, N) int64 -> (B, N, D) float32 codes."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z: (B, N, D) -> QuantizerOutput with codes (B, N, D) and indices (B, N)."""
        device_type = z.device.type if z.device.type in ("cuda", "cpu") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            out = self.quantize(z.float())
        out.stats.setdefault("usage", _batch_usage(out.indices, self.codebook_size))
        return out


def _batch_usage(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Fraction of the codebook used in this batch (detached)."""
    return torch.unique(indices.detach()).numel() / torch.tensor(float(codebook_size))
