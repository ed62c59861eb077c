"""Rate control: how many tokens each tile keeps for a quality target.

Every tile is encoded once; for a per-tile target the smallest prefix length k that reaches it
is found per tile by binary search over prefixes (each probe decodes all still-open tiles in one
batch, about log2(K) decodes in all); a tile that cannot reach it even with all K tokens keeps all
K and is reported. For a mean target, a Lagrangian search over lambda trades each tile's quality
against its bits (rate-distortion allocation).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..errors import ConfigError
from ..metrics.pixel import psnr as psnr_metric
from ..metrics.pixel import ssim as ssim_metric
from ..tokenizer import Tokenizer

__all__ = ["allocate_prefix_lengths", "choose_prefix_lengths", "limit_neighbour_ratio", "NEIGHBOUR_RATIO"]

# Neighbouring tiles keep prefix lengths within this factor of each other (the shorter one is raised):
# a 1-token tile beside a 64-token one decodes to a different blur of the same sky. Video encoders
# bound the quantiser step between neighbouring blocks the same way. Since the decoder levels seams
# (tiling.level_seams) the seams would hide without it, but the tokens it adds are cheap quality: at
# a per-tile SSIM 0.6 target, +7% bytes for +0.8 dB PSNR (docs/measurements.md).
NEIGHBOUR_RATIO = 4


def limit_neighbour_ratio(counts: torch.Tensor, nx: int, ny: int, ratio: int = NEIGHBOUR_RATIO) -> torch.Tensor:
    """(T,) prefix lengths of an nx x ny tile grid (row-major) -> lengths raised until every tile keeps
    at least ceil(k / ratio) of each of its 4 neighbours' k. Only raises, so quality targets stay met."""
    k = counts.view(ny, nx).clone()
    while True:
        need = torch.zeros_like(k)
        need[1:] = torch.maximum(need[1:], k[:-1])
        need[:-1] = torch.maximum(need[:-1], k[1:])
        need[:, 1:] = torch.maximum(need[:, 1:], k[:, :-1])
        need[:, :-1] = torch.maximum(need[:, :-1], k[:, 1:])
        floor = (need + ratio - 1) // ratio
        if bool((k >= floor).all()):
            return k.reshape(-1)
        k = torch.maximum(k, floor)


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
