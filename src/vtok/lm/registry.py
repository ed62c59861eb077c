"""Named LM sizes and the factory that builds an untrained LM for a tokenizer."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .model import LMConfig, TokenLM

__all__ = ["create_lm", "list_lms"]

# Named sizes; the tokenizer fixes alphabets and num_positions, the data num_classes.
_VARIANTS: dict[str, dict[str, Any]] = {
    "lm-tiny": {"width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0},  # for tests
    "lm-small": {"width": 128, "depth": 4, "heads": 4},  # trains in minutes on a CPU
    "lm-base": {"width": 256, "depth": 6, "heads": 4},
    "lm-large": {"width": 512, "depth": 12, "heads": 8},  # for a GPU and many more tokens
}


def list_lms() -> list[str]:
    """Names accepted by :func:`create_lm`."""
    return sorted(_VARIANTS)


def create_lm(name: str, alphabets: list[int], num_positions: int, num_classes: int = 0, **overrides: Any) -> TokenLM:
    """An untrained LM of a named size for a tokenizer's symbols (``tok.model.quantizer.symbol_alphabets()``)
    and length (``tok.num_tokens``)."""
    if name not in _VARIANTS:
        raise ConfigError(f"unknown LM {name!r}; choose one of: {', '.join(list_lms())}")
    values = {**_VARIANTS[name], **overrides}
    known = set(LMConfig.__dataclass_fields__) - {"alphabets", "num_positions", "num_classes"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown LM config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    config = LMConfig(alphabets=list(alphabets), num_positions=num_positions, num_classes=num_classes, **values)
    model = TokenLM(config)
    model.name = name
    return model
