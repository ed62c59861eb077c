"""Named model variants and the factory that builds them.

A variant is an architecture plus config values; ``create_model(name, **overrides)`` builds an
untrained model. Every architecture has a ``-tiny`` variant for tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ConfigError
from .models import Grid2DConfig, Grid2DTokenizer, Ordered1DConfig, Ordered1DTokenizer, TokenizerModel

__all__ = ["register_variant", "list_tokenizers", "create_model", "build_model", "variant_config"]

ARCHITECTURES: dict[str, tuple[type, type[TokenizerModel]]] = {
    "ordered1d": (Ordered1DConfig, Ordered1DTokenizer),
    "grid2d": (Grid2DConfig, Grid2DTokenizer),
}
_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {}


def register_variant(name: str, architecture: str, **values: Any) -> None:
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {architecture!r}")
    if name in _VARIANTS:
        raise ConfigError(f"variant {name!r} is already registered")
    _check_keys(architecture, values)
    _VARIANTS[name] = (architecture, dict(values))


def list_tokenizers() -> list[str]:
    """Names accepted by :func:`create_model` / ``vtok.create_tokenizer``."""
    return sorted(_VARIANTS)


def variant_config(name: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """(architecture, full config dict) of a named variant with overrides applied."""
    if name not in _VARIANTS:
        raise ConfigError(f"unknown tokenizer {name!r}; choose one of: {', '.join(list_tokenizers())}")
    architecture, values = _VARIANTS[name]
    merged = upgrade_legacy_config({**values, **overrides})
    config_cls, _ = ARCHITECTURES[architecture]
    _check_keys(architecture, merged)
    return architecture, dataclasses.asdict(config_cls(**merged))


def build_model(architecture: str, config: dict[str, Any]) -> TokenizerModel:
    """Rebuild a model from an architecture name and its full config dict (e.g. a config.json)."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    config_cls, model_cls = ARCHITECTURES[architecture]
    config = upgrade_legacy_config(config)
    _check_keys(architecture, config)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    settings = config_cls(**values)
    settings.validate()  # every value in range and the size sane, before anything is allocated
    try:
        return model_cls(settings)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {architecture} config: {e}") from e


def upgrade_legacy_config(config: dict[str, Any]) -> dict[str, Any]:
    """Configs written before quantizers had their own section (``quantizer: "fsq"``,
    ``fsq_levels``, ``vq_codebook_size``, ``vq_dim``) -> today's ``quantizer`` mapping."""
    legacy = {"fsq_levels", "vq_codebook_size", "vq_dim"}
    if not isinstance(config.get("quantizer"), str) and not legacy & set(config):
        return config
    config = dict(config)
    name = config.pop("quantizer", "fsq")
    levels = config.pop("fsq_levels", [8, 8, 8, 5, 5, 5])
    size, dim = config.pop("vq_codebook_size", 4096), config.pop("vq_dim", 8)
    if name == "fsq":
        if not isinstance(levels, (list, tuple)):
            raise ConfigError(f"fsq_levels must be a list of integers, got {levels!r}")
        config["quantizer"] = {"name": "fsq", "levels": list(levels)}
    elif name == "vq":
        config["quantizer"] = {"name": "vq", "codebook_size": size, "dim": dim}
    else:
        raise ConfigError(f"unknown quantizer {name!r} in a legacy config")
    return config


def create_model(name: str, **overrides: Any) -> TokenizerModel:
    architecture, config = variant_config(name, **overrides)
    return build_model(architecture, config)


def _check_keys(architecture: str, values: dict[str, Any]) -> None:
    config_cls, _ = ARCHITECTURES[architecture]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown {architecture} config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


_TINY = dict(image_size=32, patch=4, channels=(16, 32), quantizer={"name": "fsq", "levels": [8, 5, 5, 5]})
register_variant(
    "ordered1d-tiny", "ordered1d", **_TINY, width=32, encoder_depth=1, decoder_depth=1, heads=2, num_tokens=8
)
register_variant(
    "ordered1d-small", "ordered1d", channels=(32, 64, 128), width=192, encoder_depth=2, decoder_depth=2, heads=3
)
register_variant(
    "ordered1d-medium",
    "ordered1d",
    channels=(48, 96, 192),
    width=256,
    heads=4,
    encoder_depth=2,
    decoder_depth=3,
    decoder_blocks_per_stage=2,
    norm="channel",
)
register_variant("ordered1d-base", "ordered1d")
register_variant("grid2d-tiny", "grid2d", **_TINY)
register_variant("grid2d-small", "grid2d", channels=(32, 64, 128))
register_variant("grid2d-base", "grid2d")
