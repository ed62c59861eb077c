"""Quantizers behind one contract: ``forward(z) -> QuantizerOutput`` and ``indices_to_codes``."""

from .base import Quantizer, QuantizerOutput
from .fsq import FSQ
from .vq import VQ

__all__ = ["FSQ", "VQ", "Quantizer", "QuantizerOutput"]
