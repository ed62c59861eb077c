"""Images to .vtok bytes and back: tiling, adaptive length per tile, entropy coding.

Adaptive length: every tile is encoded once; for a quality target the smallest prefix length
k that reaches it is found per tile by binary search over prefixes (each probe decodes all
still-open tiles in one batch, about log2(K) decodes in all). A tile that cannot reach the
target even with all K tokens keeps all K and is reported. A byte budget picks the largest
common k whose file fits.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, ImageError, TokenError, VtokError
from ..images import load_image, to_rgb
from ..metrics.pixel import psnr as psnr_metric
from ..metrics.pixel import ssim as ssim_metric
from ..tokenizer import Tokenizer, load
from .entropy import ANS, BITPACK, CODING_NAMES, ans_decode, ans_encode, pack_tokens, unpack_tokens
from .format import FormatError, VtokFile, read_file, write_file
from .tiling import TileLayout, blend_tiles, split_tiles

__all__ = [
    "Encoded",
    "encode_image",
    "compress",
    "decompress",
    "decode_file",
    "choose_prefix_lengths",
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

    @property
    def tiles(self) -> int:
        return len(self.counts)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str) -> Tokenizer:
    return load(name)


def _tokenizer(model: str | os.PathLike | Tokenizer) -> Tokenizer:
    if isinstance(model, Tokenizer):
        return model
    return _load_cached(str(model))


def _as_array(image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageError("numpy images for compress must be uint8 (H, W, 3)")
        return image
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image))
    raise ImageError(f"unsupported image input of type {type(image).__name__}")


@functools.lru_cache(maxsize=1)
def _feature_distance():
    from ..metrics.perceptual import create_feature_distance

    return create_feature_distance()


def _quality(metric: str, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Higher is better for every metric: the feature distance enters negated."""
    if metric == "psnr":
        return psnr_metric(recon, target).clamp(max=99)
    if metric == "ssim":
        return ssim_metric(recon, target)
    if metric == "perceptual":
        with torch.no_grad():
            return -_feature_distance()(recon, target)
    raise ConfigError(f"unknown quality metric {metric!r}")


def _decode_prefixes(tok: Tokenizer, tokens: torch.Tensor, counts: torch.Tensor, batch: int = 64) -> torch.Tensor:
    out = [tok.decode_prefixes(t, c) for t, c in zip(tokens.split(batch), counts.split(batch))]
    return torch.cat(out)


def choose_prefix_lengths(
    tok: Tokenizer, tiles: torch.Tensor, tokens: torch.Tensor, metric: str, target: float
) -> tuple[torch.Tensor, int]:
    """Per tile, the smallest k whose decoding reaches `target` ("psnr" dB, "ssim", or "perceptual":
    an EffNet-Lite0 feature distance at most `target`); tiles that cannot reach it get K.
    Returns (lengths (T,), number of tiles that could not reach it)."""
    if metric == "perceptual":
        target = -float(target)  # _quality negates the distance so that higher is better
    k_max = tok.num_tokens
    full = _quality(metric, _decode_prefixes(tok, tokens, torch.full((len(tokens),), k_max)), tiles)
    met = full >= target
    lo = torch.ones(len(tokens), dtype=torch.long)
    hi = torch.full((len(tokens),), k_max, dtype=torch.long)
    lo[~met] = k_max
    while True:
        open_ = lo < hi
        if not open_.any():
            break
        idx = open_.nonzero().flatten()
        mid = (lo[idx] + hi[idx]) // 2
        q = _quality(metric, _decode_prefixes(tok, tokens[idx], mid), tiles[idx])
        ok = q >= target
        hi[idx[ok]] = mid[ok]
        lo[idx[~ok]] = mid[~ok] + 1
    return lo, int((~met).sum())


def allocate_prefix_lengths(
    tok: Tokenizer, tiles: torch.Tensor, tokens: torch.Tensor, metric: str, target: float
) -> tuple[torch.Tensor, bool]:
    """Rate-distortion allocation: prefix lengths that reach a MEAN quality over all tiles with the
    fewest bits. Each tile is decoded at a ladder of k (1, 2, 3, 4, 6, 8, ... K); a prefix costs its
    bits under the prior (k * log2 V without one); for a multiplier lam every tile takes the k that
    maximises quality - lam * bits, and lam is bisected until the mean quality meets `target`.
    Returns (lengths (T,), whether the target was met)."""
    k_max = tok.num_tokens
    ladder = sorted({max(1, min(k_max, round(2 ** (i / 2)))) for i in range(2 * int(np.log2(k_max)) + 2)} | {k_max})
    sign = -1.0 if metric == "perceptual" else 1.0
    quality = torch.stack(
        [_quality(metric, _decode_prefixes(tok, tokens, torch.full((len(tokens),), k)), tiles) for k in ladder]
    ).numpy()  # (C, T), higher is better
    goal = sign * float(target)
    if tok.prior is not None:
        bits = tok.prior.prefix_bits(tokens.cpu().numpy())[:, np.array(ladder) - 1].T  # (C, T)
    else:
        bits = np.array(ladder, dtype=np.float64)[:, None] * tok.bits_per_token * np.ones((1, len(tokens)))
    columns = np.arange(len(tokens))

    def choose(lam: float) -> np.ndarray:
        return np.argmax(quality - lam * bits, axis=0)

    best = choose(0.0)
    if quality[best, columns].mean() < goal:
        return torch.full((len(tokens),), k_max, dtype=torch.long), False
    lo, hi = 0.0, 1.0
    while quality[choose(hi), columns].mean() >= goal and hi < 1e6:
        hi *= 4
    for _ in range(50):
        mid = (lo + hi) / 2
        if quality[choose(mid), columns].mean() >= goal:
            lo = mid
        else:
            hi = mid
    picks = choose(lo)
    return torch.tensor(np.array(ladder)[picks], dtype=torch.long), True


def _payload(tok: Tokenizer, coding: int, tokens: np.ndarray, counts: np.ndarray) -> bytes:
    if coding == ANS:
        return ans_encode(tokens, counts, tok.prior)
    return pack_tokens(tokens, counts, tok.codebook_size)


def encode_image(
    image,
    model: str | os.PathLike | Tokenizer = "default",
    *,
    tokens: int | None = None,
    psnr: float | None = None,
    ssim: float | None = None,
    perceptual: float | None = None,
    max_bytes: int | None = None,
    coding: str | None = None,
    overlap: int | None = None,
    allocation: str = "per-tile",
) -> Encoded:
    """Encode one image of any size. Give at most one of: tokens (per tile), psnr (dB), ssim,
    perceptual (largest EffNet-Lite0 feature distance per tile), max_bytes (whole file).
    With none, every tile keeps all K tokens. `allocation` says how a quality target is met:
    "per-tile" (every tile reaches it, or keeps all K and is counted in unmet_tiles) or "mean" (the
    mean over tiles reaches it with the fewest bits: rate-distortion allocation)."""
    tok = _tokenizer(model)
    chosen = [
        name
        for name, v in (("tokens", tokens), ("psnr", psnr), ("ssim", ssim), ("max_bytes", max_bytes))
        if v is not None
    ]
    if len(chosen) > 1:
        raise ConfigError(f"give at most one of tokens, psnr, ssim, perceptual, max_bytes (got {', '.join(chosen)})")
    if tok.num_tokens > 255:
        raise ConfigError(f"the .vtok format stores up to 255 tokens per tile; this model has {tok.num_tokens}")
    coding = coding or ("ans" if tok.prior is not None else "bitpack")
    if coding not in CODING_NAMES:
        raise ConfigError(f"unknown coding {coding!r}; use one of {', '.join(CODING_NAMES)}")
    if coding == "ans" and tok.prior is None:
        raise ConfigError(
            "this model has no token prior for ANS coding: use coding='bitpack' or fit one (`vtok prior`)"
        )
    s = tok.image_size
    overlap = s // 8 if overlap is None else int(overlap)
    if not 0 <= overlap <= s // 2:
        raise ConfigError(f"overlap must lie in 0..{s // 2}")

    array = _as_array(image)
    layout = TileLayout(array.shape[1], array.shape[0], s, overlap)
    tiles = split_tiles(array, layout)  # (T, 3, S, S)
    ids = tok.encode(tiles)  # (T, K)
    unmet = 0
    quality_targets = {"psnr": psnr, "ssim": ssim, "perceptual": perceptual}
    metric = next((m for m, v in quality_targets.items() if v is not None), None)
    if allocation not in ("per-tile", "mean"):
        raise ConfigError(f"allocation must be 'per-tile' or 'mean', got {allocation!r}")
    if metric is not None and allocation == "mean":
        counts, met = allocate_prefix_lengths(tok, tiles, ids, metric, float(quality_targets[metric]))
        unmet = 0 if met else layout.count
    elif metric is not None:
        counts, unmet = choose_prefix_lengths(tok, tiles, ids, metric, float(quality_targets[metric]))
    else:
        k = tok._check_num_tokens(tokens) if tokens is not None else tok.num_tokens
        counts = torch.full((layout.count,), k, dtype=torch.long)

    code = CODING_NAMES[coding]
    ids_np = ids.cpu().numpy()

    def build(c: np.ndarray) -> bytes:
        return write_file(
            VtokFile(
                code, tok.fingerprint()[:4], layout.width, layout.height, overlap, c, _payload(tok, code, ids_np, c)
            )
        )

    if max_bytes is not None:
        if max_bytes < 1:
            raise ConfigError("max_bytes must be >= 1")
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
        counts = torch.full((layout.count,), lo, dtype=torch.long)
    counts_np = counts.cpu().numpy().astype(np.int64)
    return Encoded(build(counts_np), layout.width, layout.height, counts_np, coding, unmet)


def single_tile_file_sizes(
    tok: Tokenizer, tokens: np.ndarray, counts: np.ndarray, coding: str | None = None
) -> np.ndarray:
    """Exact .vtok file sizes of S x S images (one tile each) with the given prefix lengths,
    without running the model again: tokens (N, K), counts (N,)."""
    coding = coding or ("ans" if tok.prior is not None else "bitpack")
    code, s, fid = CODING_NAMES[coding], tok.image_size, tok.fingerprint()[:4]
    return np.array(
        [
            len(write_file(VtokFile(code, fid, s, s, s // 8, c[None], _payload(tok, code, t[None], c[None]))))
            for t, c in zip(np.asarray(tokens), np.asarray(counts))
        ]
    )


def compress(image, model: str | os.PathLike | Tokenizer = "default", **options) -> bytes:
    """Image (path, PIL or uint8 array, any size) -> .vtok bytes. Options as in encode_image."""
    return encode_image(image, model, **options).data


def decode_file(data: bytes, model: str | os.PathLike | Tokenizer = "default") -> tuple[np.ndarray, VtokFile]:
    tok = _tokenizer(model)
    f = read_file(data, tok.image_size, tok.num_tokens)
    if f.model_id != tok.fingerprint()[:4]:
        raise FormatError(
            f"this file was made by another model (id {f.model_id.hex()}); {tok.name} has id {tok.fingerprint()[:4].hex()}"
        )
    if f.coding == ANS:
        if tok.prior is None:
            raise FormatError("this file is ANS-coded but the model has no token prior")
        tokens = ans_decode(f.payload, f.counts, tok.num_tokens, tok.prior)
    elif f.coding == BITPACK:
        tokens = unpack_tokens(f.payload, f.counts, tok.num_tokens, tok.codebook_size)
    else:  # pragma: no cover - read_file validated it
        raise FormatError(f"unknown coding {f.coding}")
    layout = TileLayout(f.width, f.height, tok.image_size, f.overlap)
    try:
        recon = _decode_prefixes(tok, torch.from_numpy(tokens), torch.from_numpy(f.counts))
    except TokenError as e:
        raise FormatError(f"payload holds invalid tokens ({e})") from e
    return blend_tiles(recon, layout), f


def decompress(data: bytes | str | os.PathLike, model: str | os.PathLike | Tokenizer = "default") -> Image.Image:
    """.vtok bytes (or a path to a .vtok file) -> RGB PIL image at the original size."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FormatError(f"{path}: no such file")
        data = path.read_bytes()
    array, _ = decode_file(data, model)
    return Image.fromarray(array, mode="RGB")
