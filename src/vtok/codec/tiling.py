"""Cutting an image of any size into model-sized tiles and blending them back.

Tiles of S x S pixels overlap by `overlap` pixels; the image is mirror-padded to cover the
grid. Decoded tiles are blended with weights that ramp linearly across each shared overlap
(1 inside a tile, falling to 0 at its edge where a neighbour takes over), which hides the seams
that independent tiles would otherwise show. The result is cropped to the exact original size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TileLayout", "split_tiles", "blend_tiles"]


@dataclass(frozen=True)
class TileLayout:
    width: int
    height: int
    tile: int
    overlap: int

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def nx(self) -> int:
        return max(1, math.ceil((self.width - self.overlap) / self.stride))

    @property
    def ny(self) -> int:
        return max(1, math.ceil((self.height - self.overlap) / self.stride))

    @property
    def count(self) -> int:
        return self.nx * self.ny

    @staticmethod
    def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
        return TileLayout(width, height, tile, overlap).count


def split_tiles(image: np.ndarray, layout: TileLayout) -> torch.Tensor:
    """(H, W, 3) uint8 -> (T, 3, S, S) float in [0, 1], row-major tiles."""
    s, st = layout.tile, layout.stride
    full_w, full_h = st * layout.nx + layout.overlap, st * layout.ny + layout.overlap
    padded = np.pad(image, ((0, full_h - image.shape[0]), (0, full_w - image.shape[1]), (0, 0)), mode="symmetric")
    x = torch.from_numpy(padded).permute(2, 0, 1).float() / 255.0  # (3, Hp, Wp)
    tiles = [x[:, r * st : r * st + s, c * st : c * st + s] for r in range(layout.ny) for c in range(layout.nx)]
    return torch.stack(tiles)


def _ramp(size: int, overlap: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    w = torch.ones(size)
    if overlap > 0:
        edge = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        if fade_start:
            w[:overlap] = edge
        if fade_end:
            w[-overlap:] = edge.flip(0)
    return w


def blend_tiles(tiles: torch.Tensor, layout: TileLayout) -> np.ndarray:
    """(T, 3, S, S) in [0, 1] -> (H, W, 3) uint8 at the original size."""
    s, st, o = layout.tile, layout.stride, layout.overlap
    full_w, full_h = st * layout.nx + o, st * layout.ny + o
    acc = torch.zeros(3, full_h, full_w)
    weight = torch.zeros(1, full_h, full_w)
    for i, tile in enumerate(tiles.float().cpu()):
        r, c = divmod(i, layout.nx)
        wy = _ramp(s, o, r > 0, r < layout.ny - 1)
        wx = _ramp(s, o, c > 0, c < layout.nx - 1)
        w = wy[:, None] * wx[None, :]
        acc[:, r * st : r * st + s, c * st : c * st + s] += tile * w
        weight[:, r * st : r * st + s, c * st : c * st + s] += w
    out = (acc / weight.clamp_min(1e-8))[:, : layout.height, : layout.width]
    return (out.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
