"""Classical codecs at equal bytes: the reference every tokenizer is measured against.

For a byte budget, a codec's file is the one at the highest quality setting whose size is
<= the budget (binary search over the setting, then verified: sizes are not always monotone
in quality, so the search never returns a file over budget). When even the lowest setting is
over budget the codec cannot reach it: that is recorded with its smallest size, never skipped.

At small byte budgets nobody runs a classical codec at full size: they shrink the image, code it
at the best quality that fits and enlarge it on display. ``Codec.downscaled(factor)`` is that
codec (Lanczos down, Lanczos back up to the original size), and ``DOWNSCALE_FACTORS`` the ladder
of sizes tried; a bench keeps, per image and budget, the best of them (``<codec>-down``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ..errors import OptionalDependencyError
from ..images import pil_to_tensor
from ..metrics.pixel import psnr, ssim

__all__ = [
    "Codec",
    "CodecFile",
    "CodecLadder",
    "ScoredLadder",
    "SizeLadders",
    "available_codecs",
    "CODEC_NAMES",
    "DOWNSCALE_FACTORS",
    "METRICS",
]

METRICS = ("psnr", "ssim", "feature_distance", "lpips")  # every per-image quality a record can carry
LOWER_IS_BETTER = frozenset({"feature_distance", "lpips"})

# Sizes tried for the downscaled codecs, as fractions of each side: 128 px -> 128, 96, 64, 48, 32,
# 24, 16, 12 px. 1 is in the ladder: at a large budget full size is the best "downscale".
DOWNSCALE_FACTORS = (1.0, 3 / 4, 1 / 2, 3 / 8, 1 / 4, 3 / 16, 1 / 8, 3 / 32)
MIN_DOWNSCALED_SIDE = 8


@dataclass
class CodecFile:
    codec: str
    quality: int
    data: bytes
    image: Image.Image

    @property
    def bytes(self) -> int:
        return len(self.data)


@dataclass
class Codec:
    name: str
    qualities: tuple[int, int]  # lowest, highest setting
    _save: Callable[[Image.Image, io.BytesIO, int], None]

    scale: float = 1.0  # < 1: code a copy shrunk by this factor, shown enlarged to the original size

    def encode(self, image: Image.Image, quality: int) -> CodecFile:
        small = image
        if self.scale != 1.0:
            size = (max(1, round(image.width * self.scale)), max(1, round(image.height * self.scale)))
            small = image.resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        self._save(small, buf, quality)
        data = buf.getvalue()
        decoded = Image.open(io.BytesIO(data))
        decoded.load()
        shown = decoded.convert("RGB")
        if shown.size != image.size:
            shown = shown.resize(image.size, Image.Resampling.LANCZOS)
        return CodecFile(self.name, quality, data, shown)

    def downscaled(self, factor: float) -> Codec:
        """This codec on a copy shrunk by `factor` (Lanczos), enlarged again on decoding."""
        return Codec(self.name, self.qualities, self._save, factor)

    def downscale_ladder(self, image: Image.Image) -> list[Codec]:
        """This codec at every size of DOWNSCALE_FACTORS that keeps both sides >= 8 px."""
        return [
            self.downscaled(f) for f in DOWNSCALE_FACTORS if min(image.width, image.height) * f >= MIN_DOWNSCALED_SIDE
        ]

    def smallest(self, image: Image.Image) -> CodecFile:
        return self.encode(image, self.qualities[0])

    def best_within(self, image: Image.Image, budget: int) -> CodecFile | None:
        """The highest-quality file of at most `budget` bytes, or None when none exists."""
        return CodecLadder(self, image).best_within(budget)

    def bytes_to_reach(
        self, image: Image.Image, quality_of: Callable[[Image.Image], float], target: float
    ) -> CodecFile | None:
        """The smallest-setting file whose quality_of(decoded) >= target, or None when none reaches it."""
        ladder = CodecLadder(self, image)
        return ladder.cheapest_reaching(lambda q: quality_of(ladder.file(q).image) >= target)


class CodecLadder:
    """One codec on one image, each quality setting encoded at most once: the searches for
    every byte budget and quality target of a bench share their work."""

    def __init__(self, codec: Codec, image: Image.Image):
        self.codec, self.image = codec, image
        self._files: dict[int, CodecFile] = {}

    def file(self, quality: int) -> CodecFile:
        if quality not in self._files:
            self._files[quality] = self.codec.encode(self.image, quality)
        return self._files[quality]

    def _highest(self, ok: Callable[[int], bool]) -> int | None:
        """Highest setting for which ok holds, assuming ok is True up to a point, then False."""
        lo, hi = self.codec.qualities
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            if ok(mid):
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return best

    def best_within(self, budget: int) -> CodecFile | None:
        q = self._highest(lambda x: self.file(x).bytes <= budget)
        return None if q is None else self.file(q)

    def cheapest_reaching(self, reaches: Callable[[int], bool]) -> CodecFile | None:
        """The lowest setting that reaches: one above the highest that does not."""
        below = self._highest(lambda x: not reaches(x))
        first = self.codec.qualities[0] if below is None else below + 1
        if first > self.codec.qualities[1] or not reaches(first):
            return None
        return self.file(first)


class ScoredLadder(CodecLadder):
    """A codec ladder whose decoded files are also scored at most once (PSNR, SSIM and each of
    `distances`, feature distances with .features / .from_features) against `reference` (1, 3, H, W)."""

    def __init__(self, codec, original, reference: torch.Tensor, distances: dict[str, Any] | None = None):
        super().__init__(codec, original)
        distances = distances or {}
        self.reference, self.distances = reference, distances
        with torch.no_grad():
            self.reference_features = {name: d.features(reference) for name, d in distances.items()}
        self._scores: dict[tuple[int, str], float] = {}

    @torch.no_grad()
    def metric(self, quality: int, name: str) -> float:
        """One score of one setting's decoded file, computed once: a search on one metric scores
        only that metric on the settings it tries (the feature network, the costliest, runs on
        the few files a feature-distance search or a reported setting needs)."""
        if (quality, name) not in self._scores:
            x = pil_to_tensor(self.file(quality).image)[None]
            if name == "psnr":
                value = float(psnr(x, self.reference).clamp(max=99))
            elif name == "ssim":
                value = float(ssim(x, self.reference))
            else:
                d = self.distances[name]
                value = float(d.from_features(d.features(x), self.reference_features[name]))
            self._scores[quality, name] = value
        return self._scores[quality, name]

    def score(self, quality: int) -> dict[str, float]:
        return {name: self.metric(quality, name) for name in ("psnr", "ssim", *self.distances)}

    def record(self, vtok_rec: dict) -> dict[str, Any]:
        budget = vtok_rec["file_bytes"]
        out: dict[str, Any] = {"smallest_bytes": self.file(self.codec.qualities[0]).bytes}
        best = self.best_within(budget)
        # A codec that cannot get this small is recorded as such, never averaged away.
        out["at_budget"] = (
            None if best is None else {"bytes": best.bytes, "quality": best.quality, **self.score(best.quality)}
        )
        out["to_match"] = {metric: self.match(vtok_rec, metric) for metric in METRICS if metric in vtok_rec}
        return out

    def match(self, vtok_rec: dict, metric: str) -> dict[str, float] | None:
        """The smallest file at least as good as vtok's on `metric`: its bytes and their ratio to
        vtok's, or None when no setting gets there."""
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        target = sign * vtok_rec[metric]
        found = self.cheapest_reaching(lambda quality: sign * self.metric(quality, metric) >= target)
        return None if found is None else {"bytes": found.bytes, "ratio": found.bytes / vtok_rec["file_bytes"]}


class SizeLadders:
    """A codec at a ladder of sizes (``Codec.downscale_ladder``), each size scored as ScoredLadder: per
    budget the size with the best PSNR within it, per quality target the fewest bytes over sizes."""

    def __init__(
        self, codec, original, reference: torch.Tensor, distances: dict[str, Any] | None = None, downscaled: bool = True
    ):
        codecs = codec.downscale_ladder(original) if downscaled else [codec]  # not downscaled: full size alone
        self.sizes = [ScoredLadder(c, original, reference, distances) for c in codecs]

    def best_within(self, budget: int) -> tuple[ScoredLadder, CodecFile] | None:
        found = [(s, f) for s in self.sizes if (f := s.best_within(budget)) is not None]
        return max(found, key=lambda sf: sf[0].metric(sf[1].quality, "psnr"), default=None)

    def record(self, vtok_rec: dict) -> dict[str, Any]:
        out: dict[str, Any] = {"smallest_bytes": min(s.file(s.codec.qualities[0]).bytes for s in self.sizes)}
        best = self.best_within(vtok_rec["file_bytes"])
        out["at_budget"] = None
        if best is not None:
            ladder, f = best
            out["at_budget"] = {
                "bytes": f.bytes,
                "quality": f.quality,
                "scale": ladder.codec.scale,
                **ladder.score(f.quality),
            }
        out["to_match"] = {}
        for metric in (m for m in METRICS if m in vtok_rec):  # the fewest bytes over sizes
            matches = [m for size in self.sizes if (m := size.match(vtok_rec, metric)) is not None]
            out["to_match"][metric] = min(matches, key=lambda m: m["bytes"]) if matches else None
        return out


def _jpeg(im, buf, q):
    im.save(buf, "JPEG", quality=q, optimize=True)


def _webp(im, buf, q):
    im.save(buf, "WEBP", quality=q, method=4)  # method 6 costs 3x the time for ~1% smaller files


def _avif(im, buf, q):
    im.save(buf, "AVIF", quality=q, speed=8)  # libavif's fast presets (6-8); 8 keeps a 100-image bench in minutes


def _jxl(im, buf, q):
    im.save(buf, "JXL", quality=q, effort=7)


CODEC_NAMES = ("jpeg", "webp", "avif", "jxl")


def available_codecs(names: tuple[str, ...] = CODEC_NAMES) -> tuple[list[Codec], dict[str, str]]:
    """(codecs usable here, {name: why missing}) for the requested names."""
    from PIL import features

    found, missing = [], {}
    for name in names:
        if name == "jpeg" and features.check("jpg"):
            found.append(Codec("jpeg", (1, 95), _jpeg))
        elif name == "webp" and features.check("webp"):
            found.append(Codec("webp", (0, 100), _webp))
        elif name == "avif" and features.check("avif"):
            found.append(Codec("avif", (0, 100), _avif))
        elif name == "jxl":
            try:
                import pillow_jxl  # noqa: F401 - registers the JXL plugin with Pillow
            except ImportError:
                missing[name] = str(OptionalDependencyError("pillow-jxl-plugin", "bench", "JPEG XL"))
                continue
            found.append(
                Codec("jxl", (1, 99), _jxl)
            )  # quality 100 means lossless, which the plugin refuses with these options
        elif name not in CODEC_NAMES:
            missing[name] = f"unknown codec {name!r}; known: {', '.join(CODEC_NAMES)}"
        else:
            missing[name] = f"this Pillow build cannot write {name}"
    return found, missing
