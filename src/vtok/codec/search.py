"""Encoder-side rate-distortion search: better tokens for the same decoder (``effort``).

Yang, Bamler, Mandt. "Improving Inference for Neural Image Compression", NeurIPS 2020
(https://arxiv.org/abs/2006.04240), and Campos et al. 2019, "Content adaptive optimization for
neural image compression": with the networks fixed, optimise each image's latents for the true
rate-distortion loss. Video encoders do the same discretely (RDOQ, trellis quantization).

Here: start from the encoder's continuous latents (B, K, D), run Adam through the frozen
quantizer (straight-through rounding) and decoder on

    loss = mean over the target prefixes of MSE(decode(prefix), image) + lam * bits

where `bits` is the tile's cost under the coder its file will use: the model's static token prior,
or a token LM (coding "lm": each digit's cost from the LM's prediction given the tokens before it
and the digits before it, teacher-forced on the current rounded tokens, refreshed every step);
each FSQ digit's cost interpolated linearly between its two nearest levels so that it has a
gradient (through the digit's own position, not through what it changes in the LM's context). The target
prefixes are every power of two up to K (a plain encode: any prefix must stay good; each step
takes K and one other prefix in turn) or one length per tile (a tile whose length is chosen). A tile keeps its searched tokens only
when they score better than the encoder's own under that loss, so a search never makes a tile
worse by its own measure. Deterministic: fixed step counts, no sampling.

Searched tokens are ordinary tokens: nothing new is needed to decode them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["EFFORT_LEVELS", "MAX_EFFORT", "EffortLevel", "check_effort", "search_tokens"]


@dataclass(frozen=True)
class EffortLevel:
    """steps: Adam steps per tile; lr: the peak step size (cosine to 0); lam: bits' weight
    against MSE in [0, 1] pixel units under the static prior (2e-5: about the exchange rate at
    which searched tokens cost no more bytes than the encoder's, measured on whole photos at 64
    tokens); lam_lm: the same under a token LM (1e-5: of 1e-5, 2e-5 and 4e-5 the best PSNR
    against the best downscaled codec within the same bytes, on the first 32 source-held-out
    photos at 64 tokens, effort 3; docs/measurements.md)."""

    steps: int
    lr: float = 0.05
    lam: float = 2e-5
    lam_lm: float = 1e-5


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


def _lm_bit_tables(model, lm, z: torch.Tensor) -> list[torch.Tensor]:
    """Per digit d: (B, K, L_d) bits of each level at each position of each tile under the token
    LM, given the rounded tokens of the latents z (B, K, D) before it (teacher-forced)."""
    with torch.no_grad():
        ids = model.quantizer.quantize(z.detach().float()).indices  # (B, K)
        logits = lm(ids.long().to(lm.pos_embed.device))  # the LM may sit on another device
        return [-lg.float().log_softmax(-1).to(z.device) / math.log(2) for lg in logits]


def _soft_bits(bounded: torch.Tensor, tables: list[torch.Tensor], half_width: torch.Tensor, kept: torch.Tensor):
    """bounded: (B, K, D) FSQ values before rounding; tables: per digit (K, L_d) or (B, K, L_d)
    bits of each level; kept: (B, K) float mask -> (B,) bits, each digit's cost interpolated
    between its two nearest levels."""
    pos = bounded + half_width  # (B, K, D) in [0, L - 1]
    total = bounded.new_zeros(bounded.shape[0])
    b, k = bounded.shape[:2]
    for d, table in enumerate(tables):
        levels = table.shape[-1]
        x = pos[..., d].clamp(0, levels - 1)  # (B, K)
        lo = x.detach().floor().clamp(max=levels - 2).long()
        frac = x - lo
        t = table.to(bounded.device).expand(b, k, levels)  # (B, K, L)
        c_lo = t.gather(-1, lo[..., None]).squeeze(-1)  # (B, K)
        c_hi = t.gather(-1, lo[..., None] + 1).squeeze(-1)
        total = total + ((c_lo + frac * (c_hi - c_lo)) * kept).sum(1)
    return total


def _objective(model, z, x, prefixes, lengths, rate, lam, half_width, exact: bool = False) -> torch.Tensor:
    """(B,) loss of latents z (B, K, D) for images x (B, 3, S, S) in [-1, 1]; `rate(z)` gives the
    per-digit bit tables (None: distortion alone); `exact` counts the rounded digits' bits (what
    the file will spend) instead of the interpolated ones."""
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
    tables = rate(z) if lam > 0 else None
    if tables is None:
        return dist
    bounded = model.quantizer.bound(z.float())
    if exact:
        bounded = torch.round(bounded)
    return dist + lam * _soft_bits(bounded, tables, half_width, rate_keep.to(z.device))


def _optimise(model, z, x, opt, level, prefixes, lengths, rate, lam, half_width) -> None:
    """Adam on the latents z for `level.steps` steps, the step size cosine from level.lr to 0."""
    k = model.num_tokens
    for step in range(level.steps):
        for g in opt.param_groups:
            g["lr"] = level.lr * 0.5 * (1 + math.cos(math.pi * step / level.steps))
        # every prefix at once costs a decode each: a step takes the full length and one
        # other prefix in turn (the final comparison in search_tokens weighs them all)
        step_prefixes = [k, prefixes[step % (len(prefixes) - 1)]] if len(prefixes) > 1 else prefixes
        loss = _objective(model, z, x, step_prefixes, lengths, rate, lam, half_width).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def search_tokens(
    tok,
    tiles: torch.Tensor,
    effort: int,
    lengths: torch.Tensor | None = None,
    batch: int = 16,
    lm=None,
) -> torch.Tensor:
    """Tiles (T, 3, S, S) in [0, 1] -> token ids (T, K) searched at `effort` (0: the encoder's).
    `lengths` (T,): each tile's prefix length, or None to keep every prefix 1, 2, 4, ..., K good.
    The rate term counts bits under `lm` (a TokenLM of this tokenizer's tokens: files coded "lm")
    or else the model's token prior (none: distortion alone)."""
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
    if lm is not None and (list(lm.alphabets) != list(model.quantizer.levels) or lm.num_positions < model.num_tokens):
        raise ConfigError("the token LM does not predict this tokenizer's tokens (its digits or its length differ)")
    k = model.num_tokens
    prefixes = [2**i for i in range(int(math.log2(k)) + 1) if 2**i < k] + [k]
    rate: Callable[[torch.Tensor], list[torch.Tensor] | None]
    if lm is not None:  # the LM's costs depend on the tokens before: recomputed from the latents each time
        rate, lam = functools.partial(_lm_bit_tables, model, lm), level.lam_lm
    else:
        static = _digit_bit_tables(tok.prior)
        rate, lam = (lambda z: static), level.lam
    half_width = model.quantizer.half_width
    out = []
    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)  # only the latents move
    lm_was_training = lm is not None and lm.training
    if lm is not None:
        lm.eval()
    try:
        for start in range(0, x_all.shape[0], batch):
            x = x_all[start : start + batch]
            z0 = z0_all[start : start + batch]
            ln = None if lengths is None else torch.as_tensor(lengths[start : start + batch], dtype=torch.long)
            z = z0.clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=level.lr)
            with torch.enable_grad():  # also under a caller's no_grad
                _optimise(model, z, x, opt, level, prefixes, ln, rate, lam, half_width)
            with torch.no_grad():  # keep the searched tokens only where they score better
                searched = _objective(model, z, x, prefixes, ln, rate, lam, half_width, exact=True)
                plain = _objective(model, z0, x, prefixes, ln, rate, lam, half_width, exact=True)
                best = torch.where((searched < plain)[:, None, None], z.detach(), z0)
                out.append(model.quantizer.quantize(best).indices)
    finally:
        model.train(was_training)
        if lm_was_training:
            lm.train()
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    return torch.cat(out)
