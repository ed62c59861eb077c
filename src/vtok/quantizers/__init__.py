"""Quantizers behind one contract: ``forward(z) -> QuantizerOutput`` and ``indices_to_codes``.

A model config names its quantizer as a mapping, ``{"name": "fsq", "levels": [8, 8, 8, 5, 5, 5]}``:
the name picks a class from QUANTIZERS and the other keys are its constructor's arguments. A new
quantizer is a new file and one line below.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Quantizer, QuantizerOutput
from .fsq import FSQ
from .vq import VQ

__all__ = ["FSQ", "QUANTIZERS", "VQ", "Quantizer", "QuantizerOutput", "build_quantizer"]

QUANTIZERS: dict[str, type[Quantizer]] = {
    "fsq": FSQ,
    "vq": VQ,
}


def build_quantizer(spec: dict[str, Any]) -> Quantizer:
    """{"name": ..., **arguments} -> a quantizer; ConfigError for an unknown name or argument."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"a quantizer is a mapping with a 'name' (one of {', '.join(QUANTIZERS)}), got {spec!r}")
    arguments = {k: v for k, v in spec.items() if k != "name"}
    cls = QUANTIZERS.get(spec["name"]) if isinstance(spec["name"], str) else None  # a list is unhashable
    if cls is None:
        raise ConfigError(f"unknown quantizer {spec['name']!r}; choose one of: {', '.join(QUANTIZERS)}")
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"quantizer {spec['name']}: {e}") from e
