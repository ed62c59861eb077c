"""Encoder-side rate-distortion search: better tokens for the same decoder (``effort``).

Yang, Bamler, Mandt. "Improving Inference for Neural Image Compression", NeurIPS 2020
(https://arxiv.org/abs/2006.04240), and Campos et al. 2019, "Content adaptive optimization for
neural image compression": with the networks fixed, optimise each image's latents for the true
rate-distortion loss. Video encoders do the same discretely (RDOQ, trellis quantization).

Here: start from the encoder's continuous latents (B, K, D), run Adam through the frozen
quantizer (straight-through rounding) and decoder on

    loss = mean over the target prefixes of MSE(decode(prefix), image) + lam * bits

where `bits` is the tile's cost under the model's static token prior, each FSQ digit's cost
interpolated linearly between its two nearest levels so that it has a gradient. The target
prefixes are every power of two up to K (a plain encode: any prefix must stay good; each step
takes K and one other prefix in turn) or one length per tile (a tile whose length is chosen). A tile keeps its searched tokens only
when they score better than the encoder's own under that loss, so a search never makes a tile
worse by its own measure. Deterministic: fixed step counts, no sampling.

Searched tokens are ordinary tokens: nothing new is needed to decode them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["EFFORT_LEVELS", "MAX_EFFORT", "EffortLevel", "check_effort", "search_tokens"]


@dataclass(frozen=True)
class EffortLevel:
    """steps: Adam steps per tile; lr: the peak step size (cosine to 0); lam: bits' weight
    against MSE in [0, 1] pixel units (2e-5: about the exchange rate at which searched tokens
    cost no more bytes than the encoder's, measured on whole photos at 64 tokens)."""

    steps: int
    lr: float = 0.05
    lam: float = 2e-5


# effort -> level; 0 is the plain encoder. Seconds per 128x128 tile on 2 cores: docs/measurements.md.
EFFORT_LEVELS: dict[int, EffortLevel | None] = {
    0: None,
    1: EffortLevel(steps=15),
    2: EffortLevel(steps=40),
    3: EffortLevel(steps=100),
}
MAX_EFFORT = max(EFFORT_LEVELS)


def check_effort(effort) -> int:
    """A valid effort level as an int, or a ConfigError that names the range."""
    if isinstance(effort, bool) or not isinstance(effort, (int, np.integer)) or effort not in EFFORT_LEVELS:
        raise ConfigError(f"effort must be a whole number in 0..{MAX_EFFORT}, got {effort!r}")
    return int(effort)


def _digit_bit_tables(prior) -> list[torch.Tensor] | None:
    """Per digit d: (K, L_d) float32 bits of each level at each position, or None without a prior."""
    if prior is None:
        return None
    return [torch.from_numpy(-np.log2(p)).float() for p in prior.probs]


def _soft_bits(bounded: torch.Tensor, tables: list[torch.Tensor], half_width: torch.Tensor, kept: torch.Tensor):
    """bounded: (B, K, D) FSQ values before rounding; kept: (B, K) float mask -> (B,) bits, each
    digit's cost interpolated between its two nearest levels."""
    pos = bounded + half_width  # (B, K, D) in [0, L - 1]
    total = bounded.new_zeros(bounded.shape[0])
    k = bounded.shape[1]
    rows = torch.arange(k)
    for d, table in enumerate(tables):
        x = pos[..., d].clamp(0, table.shape[1] - 1)  # (B, K)
        lo = x.detach().floor().clamp(max=table.shape[1] - 2).long()
        frac = x - lo
        t = table.to(bounded.device)
        c_lo, c_hi = t[rows[None, :], lo], t[rows[None, :], lo + 1]  # (B, K)
        total = total + ((c_lo + frac * (c_hi - c_lo)) * kept).sum(1)
    return total


def _objective(model, z, x, prefixes, lengths, tables, lam, half_width, exact: bool = False) -> torch.Tensor:
    """(B,) loss of latents z (B, K, D) for images x (B, 3, S, S) in [-1, 1]; `exact` counts the
    rounded digits' bits (what the file will spend) instead of the interpolated ones."""
    q = model.quantizer.quantize(z.float())
    b, k = z.shape[:2]
    if lengths is None:
        keeps = [torch.full((b,), p, dtype=torch.long) for p in prefixes]
        rate_keep = torch.ones(b, k)
    else:
        keeps = [lengths]
        rate_keep = (torch.arange(k)[None, :] < lengths[:, None]).float()
    dist = z.new_zeros(b)
    for keep in keeps:
        recon = model.decode_codes(q.codes, keep.to(z.device)).float()
        dist = dist + F.mse_loss(recon, x, reduction="none").mean((1, 2, 3)) / 4  # [-1, 1] -> [0, 1] units
    dist = dist / len(keeps)
    if tables is None or lam <= 0:
        return dist
    bounded = model.quantizer.bound(z.float())
    if exact:
        bounded = torch.round(bounded)
    return dist + lam * _soft_bits(bounded, tables, half_width, rate_keep.to(z.device))


def _optimise(model, z, x, opt, level, prefixes, lengths, tables, half_width) -> None:
    """Adam on the latents z for `level.steps` steps, the step size cosine from level.lr to 0."""
    k = model.num_tokens
    for step in range(level.steps):
        for g in opt.param_groups:
            g["lr"] = level.lr * 0.5 * (1 + math.cos(math.pi * step / level.steps))
        # every prefix at once costs a decode each: a step takes the full length and one
        # other prefix in turn (the final comparison in search_tokens weighs them all)
        step_prefixes = [k, prefixes[step % (len(prefixes) - 1)]] if len(prefixes) > 1 else prefixes
        loss = _objective(model, z, x, step_prefixes, lengths, tables, level.lam, half_width).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def search_tokens(
    tok,
    tiles: torch.Tensor,
    effort: int,
    lengths: torch.Tensor | None = None,
    batch: int = 16,
) -> torch.Tensor:
    """Tiles (T, 3, S, S) in [0, 1] -> token ids (T, K) searched at `effort` (0: the encoder's).
    `lengths` (T,): each tile's prefix length, or None to keep every prefix 1, 2, 4, ..., K good.
    The rate term uses the model's token prior (none: distortion alone)."""
    effort = check_effort(effort)
    model = tok.model
    level = EFFORT_LEVELS[effort]
    x_all = (tiles.to(tok.device).float() * 2 - 1).clamp(-1, 1)
    with torch.no_grad():
        z0_all = torch.cat([model.encode_latents(c) for c in x_all.split(64)]).float()
    if level is None:
        with torch.no_grad():
            return model.quantizer.quantize(z0_all).indices
    if not hasattr(model.quantizer, "bound"):
        raise ConfigError("effort > 0 needs an FSQ model (its latents are searched through the quantizer)")
    k = model.num_tokens
    prefixes = [2**i for i in range(int(math.log2(k)) + 1) if 2**i < k] + [k]
    tables = _digit_bit_tables(tok.prior)
    half_width = model.quantizer.half_width
    out = []
    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)  # only the latents move
    try:
        for start in range(0, x_all.shape[0], batch):
            x = x_all[start : start + batch]
            z0 = z0_all[start : start + batch]
            ln = None if lengths is None else torch.as_tensor(lengths[start : start + batch], dtype=torch.long)
            z = z0.clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=level.lr)
            with torch.enable_grad():  # also under a caller's no_grad
                _optimise(model, z, x, opt, level, prefixes, ln, tables, half_width)
            with torch.no_grad():  # keep the searched tokens only where they score better
                searched = _objective(model, z, x, prefixes, ln, tables, level.lam, half_width, exact=True)
                plain = _objective(model, z0, x, prefixes, ln, tables, level.lam, half_width, exact=True)
                best = torch.where((searched < plain)[:, None, None], z.detach(), z0)
                out.append(model.quantizer.quantize(best).indices)
    finally:
        model.train(was_training)
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    return torch.cat(out)
