"""One exception family for every mistake a user can make.

The CLI turns any :class:`VtokError` into a one-line message and a non-zero exit; anything
else escaping is a bug in vtok and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "VtokError",
    "ImageError",
    "ModelLoadError",
    "ConfigError",
    "TokenError",
    "OptionalDependencyError",
    "FormatError",
    "LimitError",
]


class VtokError(Exception):
    """Base class of every error vtok raises for bad input."""


class ImageError(VtokError, ValueError):
    """An image file or array that cannot be read or used."""


class ModelLoadError(VtokError):
    """A model name or folder that does not hold a loadable model."""


class ConfigError(VtokError, ValueError):
    """A configuration key or value that does not exist or does not fit."""


class TokenError(VtokError, ValueError):
    """Token ids or token counts that the model cannot decode."""


class OptionalDependencyError(VtokError, ImportError):
    """A feature needs a package that is not installed."""

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(f"{feature} needs the '{package}' package: pip install 'vtok[{extra}]'")


class FormatError(VtokError):
    """A .vtok file that is not valid: truncated, corrupt, of another version or another model."""


class LimitError(VtokError):
    """An input whose declared size (pixels, tiles) would cost more than the limit the caller set;
    the message names the limit and how to raise it (``--max-pixels``, ``max_pixels=``)."""
