"""What an encode should aim for, validated once for the CLI, the Python API and the service.

At most one target: a number of tokens per tile, a quality per tile (PSNR, SSIM or the
EfficientNet feature distance), or a byte budget for the whole file. Everything is checked here,
before any image is read, so a bad option costs nothing and reads the same everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .search import check_effort

__all__ = ["EncodeOptions", "TARGET_KINDS"]

# kind -> (lowest allowed, highest allowed, what it means); bounds are inclusive
TARGET_KINDS: dict[str, tuple[float, float, str]] = {
    "tokens": (1, 255, "tokens per tile"),
    "psnr": (1.0, 99.0, "PSNR in dB per tile"),
    "ssim": (0.0, 1.0, "SSIM per tile"),
    "perceptual": (0.0, math.inf, "largest EfficientNet-Lite0 feature distance per tile"),
    "max_bytes": (1, 1 << 30, "bytes for the whole file"),
}
ALLOCATIONS = ("per-tile", "mean")
CODINGS = ("ans", "bitpack", "lm")  # coders.BY_NAME's names, in the order messages list them


@dataclass(frozen=True)
class EncodeOptions:
    """target: one of TARGET_KINDS or None (every tile keeps all K tokens); value: its number.
    allocation: how a quality target is met, "per-tile" (every tile) or "mean" (the mean over
    tiles, fewest bits). coding: "ans", "bitpack", "lm" (range coding under a token LM, which
    encode_image takes as `lm`) or None (LM when one is given, else ANS when the model has a prior).
    overlap: pixels shared by neighbouring tiles, None for the model's default. effort: 0 (the
    encoder's own tokens) to 3 (tokens searched through the decoder for quality per byte, slower:
    vtok.codec.search). scale: code the image at this multiple of its size (0.5: half as wide and
    high) and show it at its own size (the file keeps both sizes), or "auto" to choose the size
    that looks best within a byte budget; None: "auto" for max_bytes, else 1."""

    target: str | None = None
    value: float | None = None
    allocation: str = "per-tile"
    coding: str | None = None
    overlap: int | None = None
    effort: int = 0
    scale: float | str | None = None

    def __post_init__(self) -> None:
        check_effort(self.effort)
        if self.scale is not None:
            if self.scale == "auto":
                if self.target != "max_bytes":
                    raise ConfigError("scale='auto' chooses the coded size for a byte budget: give max_bytes")
            elif (
                isinstance(self.scale, bool)
                or not isinstance(self.scale, (int, float))
                or not 1 / 16 <= self.scale <= 4
            ):
                raise ConfigError(
                    f"scale must be 'auto' or a number in 0.0625..4 (the coded size over the image's), got {self.scale!r}"
                )
        if (self.target is None) != (self.value is None):
            raise ConfigError("a target needs a value and a value needs a target")
        if self.target is not None:
            if self.target not in TARGET_KINDS:
                raise ConfigError(f"unknown target {self.target!r}; use one of: {', '.join(TARGET_KINDS)}")
            low, high, meaning = TARGET_KINDS[self.target]
            value = self.value
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{self.target} must be a finite number, got {value!r}")
            if self.target in ("tokens", "max_bytes") and not float(value).is_integer():
                raise ConfigError(f"{self.target} must be a whole number, got {value!r}")
            if not low <= value <= high:
                bounds = f"{low:,.0f}..{high:,.0f}" if self.target in ("tokens", "max_bytes") else f"{low:g}..{high:g}"
                raise ConfigError(f"{self.target} ({meaning}) must lie in {bounds}, got {value:g}")
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if self.allocation == "mean" and self.target not in ("psnr", "ssim", "perceptual"):
            raise ConfigError("allocation='mean' needs a quality target: psnr, ssim or perceptual")
        if self.coding is not None and self.coding not in CODINGS:
            raise ConfigError(f"unknown coding {self.coding!r}; use one of: {', '.join(CODINGS)}")
        if self.overlap is not None and (isinstance(self.overlap, bool) or int(self.overlap) != self.overlap):
            raise ConfigError(f"overlap must be a whole number of pixels, got {self.overlap!r}")
        if self.overlap is not None and self.overlap < 0:  # the upper bound (half a tile) needs the model
            raise ConfigError(f"overlap must be >= 0 pixels, got {self.overlap}")

    @property
    def is_quality(self) -> bool:
        return self.target in ("psnr", "ssim", "perceptual")

    @classmethod
    def from_kwargs(
        cls,
        tokens: int | None = None,
        psnr: float | None = None,
        ssim: float | None = None,
        perceptual: float | None = None,
        max_bytes: int | None = None,
        **rest: Any,
    ) -> EncodeOptions:
        """The keyword form (``tokens=``, ``psnr=``, ...): at most one target may be given."""
        given = {
            k: v
            for k, v in (
                ("tokens", tokens),
                ("psnr", psnr),
                ("ssim", ssim),
                ("perceptual", perceptual),
                ("max_bytes", max_bytes),
            )
            if v is not None
        }
        if len(given) > 1:
            raise ConfigError(f"give at most one of {', '.join(TARGET_KINDS)} (got {', '.join(given)})")
        unknown = set(rest) - {"allocation", "coding", "overlap", "effort", "scale"}
        if unknown:
            raise ConfigError(f"unknown encode option(s): {', '.join(sorted(unknown))}")
        target, value = next(iter(given.items())) if given else (None, None)
        return cls(target=target, value=value, **{k: v for k, v in rest.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "value": self.value,
            "allocation": self.allocation,
            "coding": self.coding,
            "overlap": self.overlap,
            "effort": self.effort,
            "scale": self.scale,
        }
