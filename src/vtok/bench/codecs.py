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

from PIL import Image

from ..errors import OptionalDependencyError

__all__ = ["Codec", "CodecFile", "CodecLadder", "available_codecs", "CODEC_NAMES", "DOWNSCALE_FACTORS"]

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
