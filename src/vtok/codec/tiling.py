"""Cutting an image of any size into model-sized tiles and blending them back.

Tiles of S x S pixels overlap by `overlap` pixels; the image is mirror-padded to cover the
grid. Decoded tiles are blended with weights that ramp linearly across each shared overlap
(1 inside a tile, falling to 0 at its edge where a neighbour takes over), which hides the seams
that independent tiles would otherwise show; before that, the level step at each seam is spread
over half a tile on both sides (:func:`level_seams`; overlaps of LEVEL_MIN_OVERLAP pixels or more),
which hides what a narrow blend cannot: tiles decoded from different numbers of tokens differ in
level and colour. The result is cropped to the
exact original size.

Blending goes one row of tiles at a time (:func:`blend_bands`), and a wide image is blended in
vertical strips of at most STRIP_WIDTH pixels (:func:`strips`), each from the tiles that overlap
it and the tiles whose seams levelling reaches into it: a few rows of one strip's tiles (the row
being blended, the one held for levelling and their corrections) are held in floating point at
once, so the memory a decode needs is bounded whatever the image's width and height. Pixels are bit-identical to a whole-image blend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LimitError

__all__ = [
    "TileLayout",
    "Strip",
    "split_tiles",
    "blend_tiles",
    "blend_bands",
    "check_budget",
    "level_seams",
    "strips",
]

STRIP_WIDTH = 4096  # pixels of output columns blended at once: 16 * S * 4096 bytes of floats (8 MB at S = 128)
LEVEL_MIN_OVERLAP = 2  # narrower overlaps are not levelled (too few pixels to measure a seam's step)


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

    @property
    def work(self) -> int:
        """Pixels the model encodes or decodes: every tile in full, padding included (T * S^2)."""
        return self.count * self.tile * self.tile

    @staticmethod
    def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
        return TileLayout(width, height, tile, overlap).count


def check_budget(layout: TileLayout, max_pixels: int) -> None:
    """Refuse, before any work, an image whose own pixels or whose tiles' pixels (T * S^2, what
    the model has to produce; a thin or small-stride layout pads far beyond the image) exceed
    `max_pixels`. Time grows with the tiles' pixels, memory with the width (see blend_bands)."""
    w, h = layout.width, layout.height
    if w * h > max_pixels or layout.work > max_pixels:
        raise LimitError(
            f"a {w}x{h} image in {layout.count:,} tiles of {layout.tile}x{layout.tile} "
            f"({max(w * h, layout.work):,} pixels to code) is over the limit of {max_pixels:,} pixels: "
            "raise it with --max-pixels N (max_pixels=N in Python) if you trust this input"
        )


def split_tiles(image: np.ndarray, layout: TileLayout) -> torch.Tensor:
    """(H, W, 3) uint8 -> (T, 3, S, S) float in [0, 1], row-major tiles."""
    s, st = layout.tile, layout.stride
    full_w, full_h = st * layout.nx + layout.overlap, st * layout.ny + layout.overlap
    padded = np.pad(image, ((0, full_h - image.shape[0]), (0, full_w - image.shape[1]), (0, 0)), mode="symmetric")
    x = torch.from_numpy(padded).permute(2, 0, 1)  # (3, Hp, Wp) uint8: tiles turn float one by one
    out = torch.empty(layout.count, 3, s, s)
    for i in range(layout.count):
        r, c = divmod(i, layout.nx)
        out[i] = x[:, r * st : r * st + s, c * st : c * st + s].float() / 255.0
    return out


def _ramp(size: int, overlap: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    w = torch.ones(size)
    if overlap > 0:
        edge = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        if fade_start:
            w[:overlap] = edge
        if fade_end:
            w[-overlap:] = edge.flip(0)
    return w


def _falloff(tile: int, overlap: int) -> torch.Tensor:
    """(S,) weight of a seam's correction across a tile, for the seam at its far end: 1 from the
    middle of the overlap outwards, falling linearly to 0 half a tile further inside."""
    centre = tile - overlap / 2
    x = torch.arange(tile, dtype=torch.float32) + 0.5
    return (1 - (centre - x) / max(1, tile // 2)).clamp(0, 1)


def _seam_offsets(a: torch.Tensor, b: torch.Tensor, tile: int) -> torch.Tensor:
    """a, b: (n, 3, L, o) the same overlap as the tiles on either side decoded it -> (n, 3, L), the
    difference b - a averaged across the overlap and smoothed along the seam (two box filters of
    tile / 4): a level or colour offset between the tiles, not their texture."""
    d = (b - a).mean(-1)
    k = max(1, tile // 4)
    for _ in range(2):
        d = F.avg_pool1d(F.pad(d, (k // 2, k - 1 - k // 2), mode="replicate"), k, stride=1)
    return d


def level_row(row: torch.Tensor, overlap: int) -> torch.Tensor:
    """(n, 3, S, S) tiles of one row, left to right -> the same with the level step at each
    vertical seam spread over the tiles on both sides (half each, _falloff wide)."""
    s = row.shape[-1]
    if overlap < LEVEL_MIN_OVERLAP or row.shape[0] < 2:
        return row
    d = _seam_offsets(row[:-1, :, :, s - overlap :], row[1:, :, :, :overlap], s) / 2  # (n - 1, 3, S)
    w = _falloff(s, overlap)
    out = row.clone()
    out[:-1] += d[..., None] * w  # the left tile rises to meet the right one at the seam...
    out[1:] -= d[..., None] * w.flip(0)  # ...and the right tile comes down to meet it
    return out


def level_rows(upper: torch.Tensor, lower: torch.Tensor, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of tiles (n, 3, S, S), the same columns -> both with the level step at their
    horizontal seams spread over them. `upper` has had its own upper seams levelled already; with
    overlaps up to a third of a tile that correction (half a tile from the seam, S/2 + o/2 in all)
    does not reach its lower overlap, so the step is measured as if it had not."""
    s = upper.shape[-1]
    if overlap < LEVEL_MIN_OVERLAP:
        return upper, lower
    if upper.shape[0] != lower.shape[0]:
        raise ValueError(f"tile rows of {upper.shape[0]} and {lower.shape[0]} tiles cannot be levelled together")
    a = upper[:, :, s - overlap :, :].transpose(2, 3)  # (n, 3, S, o): the overlap's columns along the seam
    b = lower[:, :, :overlap, :].transpose(2, 3)
    d = _seam_offsets(a, b, s) / 2  # (n, 3, S) along the seam
    w = _falloff(s, overlap)
    return upper + d[:, :, None, :] * w[:, None], lower - d[:, :, None, :] * w.flip(0)[:, None]


def level_seams(rows: Iterable[torch.Tensor], overlap: int) -> Iterator[torch.Tensor]:
    """Rows of tiles (n, 3, S, S), top to bottom -> the same rows, levelled: within each row
    (level_row), then between each row and the next (level_rows). Holds two rows at once
    (and their corrections while levelling them).

    Tiles decoded from different numbers of tokens (adaptive lengths) differ in level and colour
    more than their texture does, and a linear blend over the overlap alone shows that as a
    step ("rectangles of different blue"). Like a video codec's deblocking filter, but with a
    long reach: each tile moves half way to its neighbour's level at the seam, the correction
    fading over half a tile, so the step becomes a ramp too gentle to see; within an overlap,
    what the two tiles agree on (their texture) is kept."""
    held = None
    for row in rows:
        row = level_row(row.float(), overlap)
        if held is not None:
            held, row = level_rows(held, row, overlap)
            yield held
        held = row
    if held is not None:
        yield held


@dataclass(frozen=True)
class Strip:
    """Output columns x0..x1 of the image and the tile columns that make them: those that
    overlap them and, when seams are levelled, the ones whose seams' corrections reach them."""

    x0: int
    x1: int
    columns: range


def strips(layout: TileLayout, max_width: int = STRIP_WIDTH) -> list[Strip]:
    """The image's columns cut at tile strides into strips of at most about `max_width` pixels
    (at least one tile stride each); one strip when the image is that narrow."""
    st, nx = layout.stride, layout.nx
    per = max(1, max_width // st)  # tile columns whose stride-wide blocks one strip outputs
    out = []
    for c0 in range(0, nx, per):
        c1 = min(nx, c0 + per)
        x0, x1 = c0 * st, layout.width if c1 == nx else c1 * st
        if layout.overlap >= LEVEL_MIN_OVERLAP:  # tile c0 - 1 reaches in by `overlap`, and level_row
            out.append(Strip(x0, x1, range(max(0, c0 - 2), min(nx, c1 + 1))))  # moves it by its seam with c0 - 2
        elif layout.overlap > 0:  # the left neighbour reaches in by `overlap`
            out.append(Strip(x0, x1, range(max(0, c0 - 1), c1)))
        else:
            out.append(Strip(x0, x1, range(c0, c1)))
    return out


def blend_bands(
    rows: Iterable[Iterable[torch.Tensor]], layout: TileLayout, strip: Strip | None = None, level: bool = True
) -> Iterator[np.ndarray]:
    """Tile rows in, image rows out. `rows` gives, for each of the layout's ny tile rows in order,
    the tiles of `strip.columns` (default: all) left to right as batches of (n, 3, S, S) in [0, 1];
    yields (h, x1 - x0, 3) uint8 bands, top to bottom, that together make columns x0..x1 of the
    (H, W, 3) image. The tiles' seams are levelled first (:func:`level_seams`; `level=False`, the
    linear blend alone, is for comparisons: decoding always levels). Holds a few rows of
    the strip's tiles and 16 * S * (x1 - x0) bytes of floats at once, whatever the number of tile
    rows; pixels are bit-identical to :func:`blend_tiles`."""
    s, st, o = layout.tile, layout.stride, layout.overlap
    strip = strip or Strip(0, layout.width, range(layout.nx))
    x_lo, width, height = strip.x0, strip.x1 - strip.x0, layout.height
    carry_acc, carry_w = torch.zeros(3, 0, width), torch.zeros(1, 0, width)

    def joined(batches) -> torch.Tensor:  # one row of the strip's tiles: (n, 3, S, S)
        parts = [b.float().cpu() for b in batches]
        row = torch.cat(parts) if parts else torch.zeros(0, 3, s, s)
        if row.shape[0] != len(strip.columns):  # checked before levelling, which pairs tiles up
            raise ValueError(f"a tile row has {row.shape[0]} tiles, the strip {len(strip.columns)}")
        return row

    joined_rows = (joined(b) for b in rows)
    for r, row in enumerate(level_seams(joined_rows, o) if level else joined_rows):
        if r >= layout.ny:
            raise ValueError(f"more than the layout's {layout.ny} tile rows")
        band_h = min(s, height - r * st)  # rows past the image are never shown: not accumulated
        acc, weight = torch.zeros(3, band_h, width), torch.zeros(1, band_h, width)
        acc[:, : carry_acc.shape[1]], weight[:, : carry_w.shape[1]] = carry_acc, carry_w
        wy = _ramp(s, o, r > 0, r < layout.ny - 1)[:band_h]
        c = strip.columns.start
        for tile in row:
            t0 = c * st  # the tile's first column in the image
            lo, hi = max(t0, x_lo), min(t0 + s, strip.x1)
            if hi > lo:
                wx = _ramp(s, o, c > 0, c < layout.nx - 1)[lo - t0 : hi - t0]
                w = wy[:, None] * wx[None, :]
                acc[:, :, lo - x_lo : hi - x_lo] += tile[:, :band_h, lo - t0 : hi - t0] * w
                weight[:, :, lo - x_lo : hi - x_lo] += w
            c += 1
        final = band_h if r == layout.ny - 1 else st  # the rest is shared with the next row
        out = acc[:, :final] / weight[:, :final].clamp_min(1e-8)
        yield (out.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
        carry_acc, carry_w = acc[:, final:].clone(), weight[:, final:].clone()


def tile_rows(tiles: torch.Tensor, layout: TileLayout) -> Iterator[list[torch.Tensor]]:
    """(T, 3, S, S) -> the row-by-row batches blend_bands takes."""
    for r in range(layout.ny):
        yield [tiles[r * layout.nx : (r + 1) * layout.nx]]


def blend_tiles(tiles: torch.Tensor, layout: TileLayout, level: bool = True) -> np.ndarray:
    """(T, 3, S, S) in [0, 1] -> (H, W, 3) uint8 at the original size."""
    return np.concatenate(list(blend_bands(tile_rows(tiles, layout), layout, level=level)), axis=0)
