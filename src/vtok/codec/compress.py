"""The file API: images to .vtok bytes and back (compress, decompress, encode_image, read_tokens).

An image is tiled (tiling.py), each tile encoded (or searched, search.py), the prefix lengths
chosen (rate.py for quality targets; a byte budget picks the largest common k whose file fits,
and scale="auto" the coded size), the tokens coded (coders.py) into the container (format.py).
Models and coders are found and cached by resolve.py.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, FormatError, ImageError, TokenError, VtokError
from ..images import MAX_PIXELS, image_size, load_image, to_rgb
from ..metrics.pixel import psnr as psnr_metric
from ..metrics.pixel import ssim as ssim_metric
from ..tokenizer import Tokenizer
from .coders import ANS, BY_NAME, CODINGS, LM
from .format import VtokFile, decode_payload, read_file, token_check, verify_tokens, write_file
from .options import EncodeOptions
from .rate import allocate_prefix_lengths, choose_prefix_lengths, limit_neighbour_ratio
from .resolve import find_lm, find_model, lm_id_of, token_lm, tokenizer_for
from .search import search_tokens
from .tiling import Strip, TileLayout, blend_bands, check_budget, split_tiles, strips

CODE_OF = {name: c.code for name, c in BY_NAME.items()}

__all__ = [
    "Encoded",
    "EncodeOptions",
    "TokenFile",
    "encode_image",
    "read_tokens",
    "compress",
    "decompress",
    "decode_file",
    "decode_to_png",
    "single_tile_file_sizes",
]


@dataclass
class Encoded:
    data: bytes
    width: int
    height: int
    counts: np.ndarray  # tokens kept per tile
    coding: str
    unmet_tiles: int = 0  # tiles that could not reach the quality target with all K tokens
    psnr: float | None = None  # what the file decodes to, against the original (measure=True)
    ssim: float | None = None
    options: EncodeOptions | None = None
    coded_size: tuple[int, int] | None = None  # the size it was coded at, when smaller than width x height

    @property
    def tiles(self) -> int:
        return len(self.counts)

    @property
    def num_tokens(self) -> int:
        return int(self.counts.sum())

    def summary(self) -> str:
        """One line: bytes, tiles, tokens, the quality reached, the tiles that missed the target."""
        parts = [f"{len(self.data)} bytes", f"{self.tiles} tile(s)", f"{self.num_tokens} tokens"]
        if self.coded_size is not None:
            parts.append(f"coded at {self.coded_size[0]}x{self.coded_size[1]}")
        if self.psnr is not None and self.ssim is not None:
            parts.append(f"PSNR {self.psnr:.2f} dB, SSIM {self.ssim:.3f}")
        if self.unmet_tiles and self.options is not None and self.options.allocation == "mean":
            parts.append("the image's mean could not reach the target: every tile keeps all its tokens")
        elif self.unmet_tiles:
            parts.append(f"{self.unmet_tiles} tile(s) could not reach the target")
        return ", ".join(parts)


def _as_array(image, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image, max_pixels=max_pixels)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageError("numpy images for compress must be uint8 (H, W, 3)")
        return image
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image))
    raise ImageError(f"unsupported image input of type {type(image).__name__}")


def encode_image(
    image,
    model: str | os.PathLike | Tokenizer = "default",
    options: EncodeOptions | None = None,
    *,
    measure: bool = True,
    progress: bool = False,
    lm=None,
    max_pixels: int = MAX_PIXELS,
    **targets,
) -> Encoded:
    """Encode one image of any size. The target comes as an :class:`EncodeOptions` or as keywords:
    at most one of tokens (per tile), psnr (dB), ssim, perceptual (largest EffNet-Lite0 feature
    distance per tile), max_bytes (whole file); plus allocation, coding and overlap. With no
    target every tile keeps all K tokens. `allocation` says how a quality target is met:
    "per-tile" (every tile reaches it, or keeps all K and is counted in unmet_tiles) or "mean"
    (the mean over tiles reaches it with the fewest bits: rate-distortion allocation).
    `measure` decodes the file once more to report the PSNR/SSIM it reached; `progress` shows a
    bar over the tiles of a large image. `lm` (a vtok.lm.TokenLM, a shipped LM name or an LM
    folder) range-codes the tokens under that token LM (coding "lm"): smaller files, slower coding.
    `max_pixels` bounds the work (check_budget: the image's pixels and its tiles' pixels), checked
    from an image file's header before its pixels are read."""
    if options is None:
        options = EncodeOptions.from_kwargs(**targets)
    elif targets:
        raise ConfigError("give the encode options either as EncodeOptions or as keywords, not both")
    tok = tokenizer_for(model)
    if tok.num_tokens > 255:
        raise ConfigError(f"the .vtok format stores up to 255 tokens per tile; this model has {tok.num_tokens}")
    coding = options.coding or ("lm" if lm is not None else "ans" if tok.prior is not None else "bitpack")
    if coding == "lm":
        if lm is None:
            raise ConfigError("coding 'lm' needs a token LM: pass lm=... (CLI: --lm LM)")
        lm = token_lm(lm)
        from ..lm.pretrained import tokenizer_mismatch

        problem = tokenizer_mismatch(lm, tok)
        if problem:
            raise ConfigError(problem)
    elif lm is not None:
        raise ConfigError(f"an LM was given but coding is {coding!r}: leave coding out, or set it to 'lm'")
    if coding == "ans" and tok.prior is None:
        raise ConfigError(
            "this model has no token prior for ANS coding: use coding='bitpack' or fit one (`vtok prior`)"
        )
    s = tok.image_size
    # A quarter tile: at s/8 the blend band was too narrow to hide neighbouring tiles' different
    # low frequencies (boundary/interior gradient 1.34 at 16 tokens per tile; 1.13 at s/4).
    overlap = default_overlap(s) if options.overlap is None else int(options.overlap)
    if not 0 <= overlap <= s // 2:
        raise ConfigError(f"overlap must lie in 0..{s // 2}")
    if options.target == "tokens":
        assert options.value is not None  # EncodeOptions: a target always comes with its value
        if options.value > tok.num_tokens:  # worded as EncodeOptions words the format's own bound
            raise ConfigError(
                f"tokens (tokens per tile) must lie in 1..{tok.num_tokens} for this model, got {options.value:g}"
            )

    if isinstance(image, (str, os.PathLike)):  # the budget from the header, before any pixel is decoded
        check_budget(TileLayout(*image_size(image, max_pixels=max_pixels), s, overlap), max_pixels)
    array = _as_array(image, max_pixels)
    check_budget(TileLayout(array.shape[1], array.shape[0], s, overlap), max_pixels)
    scale = options.scale if options.scale is not None else "auto" if options.target == "max_bytes" else 1.0
    if scale == "auto":
        return _encode_best_scale(tok, array, options, coding, overlap, lm, progress, measure, max_pixels)
    factor = float(scale)
    if factor > 1:
        coded = TileLayout(round(array.shape[1] * factor), round(array.shape[0] * factor), s, overlap)
        check_budget(coded, max_pixels)
    return _encode_array(tok, array, options, coding, overlap, lm, progress, measure, factor)


# Coded sizes tried by scale="auto" (of each side), largest first: below 1 as long as the long side
# keeps a tile; above 1 when the budget buys more tokens than the image at its own size can use
# (each tile then covers less of the picture).


SCALES = (2.0, 3 / 2, 1.0, 3 / 4, 1 / 2, 3 / 8, 1 / 4, 3 / 16, 1 / 8)


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))


def _encode_best_scale(tok, array, options, coding, overlap, lm, progress, measure, max_pixels) -> Encoded:
    """Resolution as a coding choice: the coded size (of SCALES) whose file, within the byte budget
    and brought back to the original size, is closest to the original (PSNR). Chosen with the plain
    encoder; a search (effort > 0) then runs at the chosen size only."""
    h, w = array.shape[:2]
    best: tuple[float, float, Encoded] | None = None
    first_error: VtokError | None = None
    plain = dataclasses.replace(options, effort=0, scale=None)
    for f in SCALES:
        if f < 1 and max(w, h) * f < tok.image_size:
            break
        if f > 1:
            coded = TileLayout(round(w * f), round(h * f), tok.image_size, overlap)
            if coded.work > max_pixels or coded.width * coded.height > max_pixels:
                continue
        try:
            enc = _encode_array(tok, array, plain, coding, overlap, lm, False, True, f)
        except VtokError as e:  # this size cannot fit the budget
            first_error = first_error or e
            continue
        assert enc.psnr is not None
        if best is None or enc.psnr > best[0]:
            best = (enc.psnr, f, enc)
    if best is None:
        assert first_error is not None
        raise first_error
    if not options.effort:  # the plain encode of the chosen size is the file: not encoded again
        best[2].options = options
        return best[2]
    return _encode_array(tok, array, options, coding, overlap, lm, progress, measure, best[1])


def _encode_array(tok, original, options, coding, overlap, lm, progress, measure, scale: float) -> Encoded:
    """Encode an (H, W, 3) uint8 image, coded at `scale` times its size (shown at its own size)."""
    s = tok.image_size
    height, width = original.shape[:2]
    display = None
    array = original
    if scale != 1.0:
        coded = (max(1, round(width * scale)), max(1, round(height * scale)))
        if coded != (width, height):
            array, display = _resize(original, coded), (width, height)
    layout = TileLayout(array.shape[1], array.shape[0], s, overlap)
    tiles = split_tiles(array, layout)  # (T, 3, S, S)
    # A search keeps every prefix good when the lengths are still to be chosen (no target, a quality
    # target); for a token count or a byte budget it runs once that length is known (below).
    every_prefix = options.target is None or options.is_quality
    # lm is the file's coder when coding is "lm" (else None): the search counts that coder's bits
    ids = _encode_tiles(tok, tiles, progress, options.effort if every_prefix else 0, lm=lm)  # (T, K)
    unmet = 0
    if options.is_quality:
        assert options.target is not None and options.value is not None  # a quality target has a value
        if options.allocation == "mean":
            counts, met = allocate_prefix_lengths(tok, tiles, ids, options.target, float(options.value))
            unmet = 0 if met else layout.count
        else:
            counts, unmet = choose_prefix_lengths(tok, tiles, ids, options.target, float(options.value))
        counts = limit_neighbour_ratio(counts, layout.nx, layout.ny)  # no 1-token tile beside a 64-token one
    else:
        k = tok.num_tokens
        if options.target == "tokens":
            assert options.value is not None
            k = int(options.value)
        counts = torch.full((layout.count,), k, dtype=torch.long)
        if options.effort and options.target == "tokens":  # the search aims at the one length kept (K too)
            ids = _encode_tiles(tok, tiles, progress, options.effort, counts, lm)

    code = CODE_OF[coding]
    ids_np = ids.cpu().numpy()

    def build(c: np.ndarray, ids: np.ndarray | None = None) -> bytes:
        return _build_file(tok, code, layout, overlap, c, ids_np if ids is None else ids, lm, display)

    if options.target == "max_bytes":
        assert options.value is not None
        max_bytes = int(options.value)
        lo, hi = 1, tok.num_tokens
        smallest = build(np.full(layout.count, 1))
        if len(smallest) > max_bytes:
            raise VtokError(
                f"cannot fit this image in {max_bytes} bytes; its smallest .vtok file is {len(smallest)} bytes"
            )
        while lo < hi:  # largest k whose file fits
            mid = (lo + hi + 1) // 2
            if len(build(np.full(layout.count, mid))) <= max_bytes:
                lo = mid
            else:
                hi = mid - 1
        if options.effort:
            lo, ids_np = _search_within(tok, tiles, layout, lo, max_bytes, ids_np, build, options.effort, progress, lm)
            ids = torch.from_numpy(ids_np)  # build() now writes these
        counts = torch.full((layout.count,), lo, dtype=torch.long)
    counts_np = counts.cpu().numpy().astype(np.int64)
    enc = Encoded(
        build(counts_np),
        width,
        height,
        counts_np,
        coding,
        unmet,
        options=options,
        coded_size=display and (layout.width, layout.height),
    )
    if measure:
        ids_t, counts_t = ids.cpu(), torch.from_numpy(counts_np)
        rows = (
            _decoded_batches(
                tok, ids_t[r * layout.nx : (r + 1) * layout.nx], counts_t[r * layout.nx : (r + 1) * layout.nx]
            )
            for r in range(layout.ny)
        )
        recon = np.concatenate(list(blend_bands(rows, layout)), axis=0)  # a few rows of tiles in floats at a time
        if display is not None:
            recon = _resize(recon, display)
        enc.psnr, enc.ssim = _measure(recon, original)
    return enc


MEASURE_ROWS = 256  # SSIM-map rows per stripe: the metrics' float intermediates stay a few MB per stripe


def _search_within(
    tok: Tokenizer,
    tiles: torch.Tensor,
    layout: TileLayout,
    k: int,
    max_bytes: int,
    plain_ids: np.ndarray,
    build_plain: Callable[..., bytes],
    effort: int,
    progress: bool,
    lm,
) -> tuple[int, np.ndarray]:
    """A byte budget with a search: search at the length k that the encoder's tokens fit, and keep
    that if it still fits. Searched tokens cost fewer bytes (the rate term), so the budget has room
    left: up to two more searches, each at the longest length whose plain file, shrunk by what the
    last search saved, would fit; the longest searched file that fits is kept. -> (length, ids)."""

    sizes: dict[int, int] = {}

    def plain_bytes(length: int) -> int:  # grows with the length; each size built once
        if length not in sizes:
            sizes[length] = len(build_plain(np.full(layout.count, length)))
        return sizes[length]

    def searched_file(length: int) -> tuple[np.ndarray, int]:
        lengths = torch.full((layout.count,), length, dtype=torch.long)
        ids = _encode_tiles(tok, tiles, progress, effort, lengths, lm).cpu().numpy()
        return ids, len(build_plain(np.full(layout.count, length), ids=ids))

    ids, size = searched_file(k)
    if size > max_bytes:
        return k, plain_ids
    best, ratio, too_long = (k, ids), size / plain_bytes(k), tok.num_tokens + 1
    for _ in range(2):
        longer, above = best[0], too_long  # the longest length whose shrunk plain file fits, bisected
        while above - longer > 1:
            mid = (longer + above) // 2
            longer, above = (mid, above) if plain_bytes(mid) * ratio <= max_bytes else (longer, mid)
        if longer == best[0]:
            break
        more, size = searched_file(longer)
        ratio = size / plain_bytes(longer)  # the saving at that length: a closer estimate
        if size <= max_bytes:
            best = (longer, more)
        else:
            too_long = longer
    return best


def _measure(recon: np.ndarray, array: np.ndarray, window: int = 11) -> tuple[float, float]:
    """PSNR and SSIM of two (H, W, 3) uint8 images, exactly as psnr/ssim over the whole images,
    computed in stripes of rows (SSIM's valid window needs window - 1 rows of context): whole,
    the metrics' float intermediates cost some 100 bytes a pixel, gigabytes for a large photo."""
    h, w = array.shape[:2]
    win = min(window, w, h)
    win -= 1 - win % 2
    if h - win + 1 <= MEASURE_ROWS:
        a, b = _to_tensor(recon), _to_tensor(array)
        return float(psnr_metric(a, b).clamp(max=99)), float(ssim_metric(a, b, window=window))
    squared, ssim_sum = 0.0, 0.0
    for y in range(0, h, MEASURE_ROWS):
        d = recon[y : y + MEASURE_ROWS].astype(np.float64) - array[y : y + MEASURE_ROWS]
        squared += float((d * d).sum()) / 255.0**2
    map_rows = h - win + 1
    for m in range(0, map_rows, MEASURE_ROWS):
        n = min(MEASURE_ROWS, map_rows - m)
        a, b = _to_tensor(recon[m : m + n + win - 1]), _to_tensor(array[m : m + n + win - 1])
        ssim_sum += float(ssim_metric(a, b, window=window)) * n
    mse = squared / recon.size
    psnr = min(99.0, 10 * np.log10(1.0 / mse)) if mse > 0 else 99.0
    return float(psnr), ssim_sum / map_rows


def default_overlap(tile: int) -> int:
    """Pixels shared by neighbouring tiles unless the caller says otherwise: a quarter tile."""
    return tile // 4


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)[None].float() / 255.0


def _encode_tiles(
    tok: Tokenizer,
    tiles: torch.Tensor,
    progress: bool,
    effort: int = 0,
    lengths: torch.Tensor | None = None,
    lm=None,
) -> torch.Tensor:
    """Tiles (T, 3, S, S) -> ids (T, K): the encoder's (effort 0) or searched (codec.search), at
    every prefix or at each tile's `lengths`, the rate counted under `lm` if the file is LM-coded."""
    batch = 64 if effort == 0 else 16
    chunks = list(range(0, tiles.shape[0], batch))
    batches: Iterable[int] = chunks
    if progress and (len(chunks) > 1 or effort):
        from ..progress import progress_bar

        batches = progress_bar(chunks, desc="tiles" if not effort else f"search (effort {effort})", unit="batch")
    out = []
    for start in batches:
        chunk = tiles[start : start + batch]
        if effort == 0:
            out.append(tok.encode(chunk))
        else:
            ln = None if lengths is None else lengths[start : start + batch]
            out.append(search_tokens(tok, chunk, effort, ln, batch=batch, lm=lm))
    return torch.cat(out)


def _build_file(
    tok: Tokenizer,
    code: int,
    layout: TileLayout,
    overlap: int,
    counts: np.ndarray,
    tokens: np.ndarray,
    lm=None,
    display: tuple[int, int] | None = None,
) -> bytes:
    method = CODINGS[code]
    prior_id = tok.prior.id() if method is ANS else lm_id_of(lm) if method is LM else None
    payload = method.encode(tok, tokens, counts, lm)
    f = VtokFile(code, tok.weights_id(), layout.width, layout.height, overlap, counts, payload, prior_id)
    f.display = display
    if method.crc_covers_tokens:
        f.token_bytes = token_check(tokens, counts)
    return write_file(f, tile=tok.image_size)


def single_tile_file_sizes(
    tok: Tokenizer, tokens: np.ndarray, counts: np.ndarray, coding: str | None = None, lm=None
) -> np.ndarray:
    """Exact .vtok file sizes of S x S images (one tile each) with the given prefix lengths,
    without running the model again: tokens (N, K), counts (N,)."""
    coding = coding or ("lm" if lm is not None else "ans" if tok.prior is not None else "bitpack")
    code, s = CODE_OF[coding], tok.image_size
    layout = TileLayout(s, s, s, default_overlap(s))
    return np.array(
        [
            len(_build_file(tok, code, layout, default_overlap(s), c[None], t[None], lm))
            for t, c in zip(np.asarray(tokens), np.asarray(counts))
        ]
    )


def compress(image, model: str | os.PathLike | Tokenizer = "default", **options) -> bytes:
    """Image (path, PIL or uint8 array, any size) -> .vtok bytes. Options as in encode_image."""
    options.setdefault("measure", False)  # only the bytes are returned: no decode to measure them
    return encode_image(image, model, **options).data


@dataclass
class TokenFile:
    """The tokens inside a .vtok file, without decoding pixels: what an LLM pipeline reads.

    tokens[i] holds the ids of tile i (row-major over a grid of `columns` x `rows` tiles of
    `tile` pixels overlapping by `overlap`), of length counts[i]."""

    tokens: list[np.ndarray]
    counts: np.ndarray
    width: int
    height: int
    tile: int
    overlap: int
    columns: int
    rows: int
    model: str
    coding: str

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "tile": self.tile,
            "overlap": self.overlap,
            "columns": self.columns,
            "rows": self.rows,
            "model": self.model,
            "coding": self.coding,
            "counts": [int(c) for c in self.counts],
            "tokens": [[int(t) for t in row] for row in self.tokens],
        }

    def padded(self, fill: int = -1) -> np.ndarray:
        """(T, max count) int64, positions past a tile's count set to `fill`."""
        out = np.full((len(self.tokens), int(self.counts.max(initial=1))), fill, dtype=np.int64)
        for i, row in enumerate(self.tokens):
            out[i, : len(row)] = row
        return out


def _read(
    data: bytes, model: str | os.PathLike | Tokenizer | None, lm=None, max_pixels: int = MAX_PIXELS
) -> tuple[Tokenizer, VtokFile, np.ndarray]:
    tok = find_model(data, model)
    f = read_file(data, tok.image_size, tok.num_tokens, max_pixels)
    coder = None  # the model the payload is coded under, besides the tokenizer: a token LM
    if CODINGS[f.coding].needs == "lm":
        coder = find_lm(f, tok, lm)
    elif CODINGS[f.coding].needs == "prior":
        if tok.prior is None:
            raise FormatError(
                f"this file is ANS-coded under token prior {f.prior_id.hex() if f.prior_id else '?'}, "
                f"but {tok.name} has no prior (prior.safetensors) beside its weights"
            )
        if f.version >= 2 and f.prior_id != tok.prior.id():
            assert f.prior_id is not None  # read_file reads a prior id for every version-2 ANS file
            raise FormatError(
                f"this file is ANS-coded under token prior {f.prior_id.hex()}, but {tok.name}'s prior is "
                f"{tok.prior.id().hex()} (refitted since?): decode with the prior.safetensors it was made with"
            )
    tokens = decode_payload(f, tok, coder)
    if CODINGS[f.coding].crc_covers_tokens:
        verify_tokens(f, data, tokens)
    return tok, f, tokens


def read_tokens(
    data: bytes | str | os.PathLike,
    model: str | os.PathLike | Tokenizer | None = None,
    lm=None,
    *,
    max_pixels: int = MAX_PIXELS,
) -> TokenFile:
    """The tokens of a .vtok file (bytes or a path), tile by tile, and the tile layout. `lm`: the
    token LM of an LM-coded file (default: the shipped LM the file names). `max_pixels` bounds the
    work a file may order (check_budget), checked before its token counts are read."""
    data = _file_bytes(data)
    tok, f, tokens = _read(data, model, lm, max_pixels)
    layout = TileLayout(f.width, f.height, tok.image_size, f.overlap)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= tok.codebook_size):
        raise FormatError("payload holds token ids outside the model's codebook")
    return TokenFile(
        tokens=[np.asarray(row[:count], dtype=np.int64) for row, count in zip(tokens, f.counts)],
        counts=f.counts,
        width=f.width,
        height=f.height,
        tile=tok.image_size,
        overlap=f.overlap,
        columns=layout.nx,
        rows=layout.ny,
        model=tok.name,
        coding=CODINGS[f.coding].name,
    )


def decode_bands(
    data: bytes,
    model: str | os.PathLike | Tokenizer | None = None,
    lm=None,
    *,
    max_pixels: int = MAX_PIXELS,
) -> tuple[VtokFile, Iterator[tuple[Strip, Iterator[np.ndarray]]]]:
    """The parsed file and its pixels, strip by strip (tiling.strips: columns x0..x1, at most
    STRIP_WIDTH wide), each as (h, x1 - x0, 3) uint8 bands top to bottom, decoded one row of the
    strip's tiles at a time: the file is checked whole (and against `max_pixels`) before the
    first band, and the working set is that of a few rows of one strip's tiles (tiling.blend_bands),
    whatever the image's width and height."""
    tok, f, tokens = _read(data, model, lm, max_pixels)
    layout = TileLayout(f.width, f.height, tok.image_size, f.overlap)
    ids, counts = torch.from_numpy(tokens), torch.from_numpy(f.counts)

    def rows(strip: Strip) -> Iterator[Iterator[torch.Tensor]]:
        for r in range(layout.ny):
            row = slice(r * layout.nx + strip.columns.start, r * layout.nx + strip.columns.stop)
            yield _decoded_batches(tok, ids[row], counts[row])

    return f, ((strip, blend_bands(rows(strip), layout, strip)) for strip in strips(layout))


DECODE_BATCH_PIXELS = 1 << 18  # tiles decoded at once: 16 of 128x128, 256 of 32x32 (a bounded working set)


def _decoded_batches(tok: Tokenizer, ids: torch.Tensor, counts: torch.Tensor) -> Iterator[torch.Tensor]:
    batch = max(1, DECODE_BATCH_PIXELS // tok.image_size**2)
    for t, c in zip(ids.split(batch), counts.split(batch)):
        try:
            yield tok.decode_prefixes(t, c)
        except TokenError as e:
            raise FormatError(f"payload holds invalid tokens ({e})") from e


def decode_file(
    data: bytes,
    model: str | os.PathLike | Tokenizer | None = None,
    lm=None,
    *,
    max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, VtokFile]:
    """(H, W, 3) uint8 and the parsed file. `model`: None finds the shipped model the file names;
    `lm` likewise for an LM-coded file. `max_pixels` bounds the work a file may order
    (check_budget), checked before any decoding."""
    f, parts = decode_bands(data, model, lm, max_pixels=max_pixels)
    return _assemble(f, parts), f


def _assemble(f: VtokFile, parts) -> np.ndarray:
    """The strips' bands as one (H, W, 3) image, enlarged to the display size when coded smaller."""
    out = np.empty((f.height, f.width, 3), dtype=np.uint8)
    for strip, bands in parts:
        y = 0
        for band in bands:
            out[y : y + len(band), strip.x0 : strip.x1] = band
            y += len(band)
    return out if f.display is None else _resize(out, f.display)


def decode_to_png(
    data: bytes | str | os.PathLike,
    model: str | os.PathLike | Tokenizer | None = None,
    lm=None,
    *,
    max_pixels: int = MAX_PIXELS,
) -> tuple[bytes, VtokFile]:
    """A .vtok file decoded straight into PNG bytes, band by band: the whole image is never held
    uncompressed in memory (what `vtok decode` writes): an image wider than one strip is decoded
    strip by strip into a temporary file, 3 bytes a pixel, and compressed from there row by row.
    Rows use PNG's Sub filter, compressed at zlib level 6."""
    f, parts = decode_bands(_file_bytes(data), model, lm, max_pixels=max_pixels)
    if f.display is not None:  # coded smaller, enlarged whole (the coded image is the smaller one)
        image = _assemble(f, parts)
        rows = max(1, SPOOL_READ_BYTES // (image.shape[1] * 3))
        return _png_from_bands(
            image.shape[1], image.shape[0], (image[y : y + rows] for y in range(0, len(image), rows))
        ), f
    with tempfile.TemporaryFile() as spool:
        return _png_from_bands(f.width, f.height, _row_bands(f, parts, spool)), f


def _row_bands(f: VtokFile, parts, spool) -> Iterator[np.ndarray]:
    """Full-width (h, W, 3) bands, top to bottom: straight from a single strip, else through `spool`."""
    parts = list(parts)  # (strip, lazy bands) pairs: nothing is decoded yet
    if len(parts) == 1:  # one strip: its bands are the rows
        yield from parts[0][1]
        return
    row_bytes = f.width * 3
    fd = spool.fileno()
    for strip, bands in parts:
        y = 0
        for band in bands:
            for i in range(len(band)):
                os.pwrite(fd, band[i].tobytes(), (y + i) * row_bytes + strip.x0 * 3)
            y += len(band)
    step = max(1, SPOOL_READ_BYTES // row_bytes)
    for y in range(0, f.height, step):
        n = min(step, f.height - y)
        yield np.frombuffer(os.pread(fd, n * row_bytes, y * row_bytes), dtype=np.uint8).reshape(n, f.width, 3)


SPOOL_READ_BYTES = 1 << 22  # rows read back from the spool at once


def _png_from_bands(width: int, height: int, bands: Iterator[np.ndarray]) -> bytes:
    z = zlib.compressobj(6)
    pieces, crc = [], zlib.crc32(b"IDAT")
    for band in bands:
        rows = band.reshape(len(band), -1)
        filtered = rows.copy()
        filtered[:, 3:] -= rows[:, :-3]  # Sub: each byte minus the same channel one pixel left (mod 256)
        pieces.append(z.compress(np.hstack([np.ones((len(rows), 1), dtype=np.uint8), filtered]).tobytes()))
        crc = zlib.crc32(pieces[-1], crc)
    pieces.append(z.flush())
    crc = zlib.crc32(pieces[-1], crc)
    size = sum(len(p) for p in pieces)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))  # 8-bit RGB, no interlace
    idat = [struct.pack(">I", size), b"IDAT", *pieces, struct.pack(">I", crc)]  # joined once: no growing copies
    return b"".join([b"\x89PNG\r\n\x1a\n", header, *idat, chunk(b"IEND", b"")])


def _file_bytes(data: bytes | str | os.PathLike) -> bytes:
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FormatError(f"{path}: no such file")
        try:
            return path.read_bytes()
        except OSError as e:  # unreadable (permissions, I/O error): a bad input like a corrupt one
            raise FormatError(f"{path}: {e.strerror or e}") from e
    return data


def decompress(
    data: bytes | str | os.PathLike,
    model: str | os.PathLike | Tokenizer | None = None,
    lm=None,
    *,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """.vtok bytes (or a path to a .vtok file) -> RGB PIL image at the original size. `model`:
    None finds the shipped model the file names; give a folder for your own models. `max_pixels`
    bounds the work a file may order (check_budget), checked before any decoding. The bands are
    pasted into the image as they are decoded: the image is the only thing that grows with it."""
    f, parts = decode_bands(_file_bytes(data), model, lm, max_pixels=max_pixels)
    if f.display is not None:  # coded at another size: assembled, then resized
        return Image.fromarray(_assemble(f, parts), mode="RGB")
    image = Image.new("RGB", (f.width, f.height))
    for strip, bands in parts:
        y = 0
        for band in bands:
            image.paste(Image.fromarray(band, mode="RGB"), (strip.x0, y))
            y += len(band)
    return image
