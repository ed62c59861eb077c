"""Sampling token sequences from a TokenLM, coarse to fine, with a KV cache.

Each token is drawn digit by digit (see model.py); temperature, top-k and top-p act on each
digit's distribution, and classifier-free guidance mixes the logits of the class and of the null
class: l = l_null + cfg * (l_class - l_null) (Ho & Salimans, https://arxiv.org/abs/2207.12598;
LlamaGen uses 1.75-2.0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError
from .model import TokenLM
from .stepper import make_stepper, softmax

__all__ = ["generate", "filter_logits"]

MAX_CACHE_BYTES = 1 << 30  # the KV cache of one call; more samples take more calls


def filter_logits(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """(B, A) logits -> (B, A) probabilities after temperature, top-k and top-p (nucleus)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = -np.partition(-logits, top_k - 1, axis=-1)[:, top_k - 1 : top_k]  # the k-th largest
        logits = np.where(logits < kth, -np.inf, logits)
    probs = softmax(logits)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-probs, -1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, -1)
        before = np.cumsum(sorted_p, -1) - sorted_p  # mass of the more likely symbols
        sorted_p = np.where(before >= top_p, 0.0, sorted_p)  # the most likely one always stays
        probs = np.zeros_like(probs)
        np.put_along_axis(probs, order, sorted_p, -1)
        probs /= probs.sum(-1, keepdims=True)
    return probs


def _draw(weights: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """(B, A) probabilities, or any weights proportional to them, and (B,) uniforms in [0, 1) ->
    (B,) one symbol per row, by inverting the cumulative distribution."""
    cdf = np.cumsum(weights, -1)
    return np.minimum((cdf <= uniform[:, None] * cdf[:, -1:]).sum(-1), weights.shape[1] - 1)


def _check(model: TokenLM, n: int, num_tokens: int | None, cfg: float, temperature: float, top_k, top_p, seed) -> int:
    k = model.num_positions if num_tokens is None else num_tokens
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of samples must be a whole number >= 1, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= model.num_positions:
        raise ConfigError(f"num_tokens must lie in 1..{model.num_positions}, got {k!r}")
    if not temperature > 0 or temperature != temperature:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be a whole number >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must lie in (0, 1], got {top_p!r}")
    if not cfg >= 0 or cfg != cfg:
        raise ConfigError(f"cfg must be >= 0, got {cfg!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ConfigError(f"seed must be a whole number in 0..2**63-1, got {seed!r}")
    c = model.config
    # keys and values, guidance's second half at most: float32 in torch (float64 numpy takes <= 8 rows)
    cache_bytes = 2 * n * c.depth * 2 * k * c.width * 4
    if cache_bytes > MAX_CACHE_BYTES:
        most = max(1, n * MAX_CACHE_BYTES // cache_bytes)
        raise ConfigError(
            f"{n} samples at once would need {cache_bytes / 2**30:.1f} GiB of cache: ask for at most {most} per call"
        )
    return k


@torch.no_grad()
def generate(
    model: TokenLM,
    n: int,
    num_tokens: int | None = None,
    class_id: int | None = None,
    cfg: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    on_token: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """(n, num_tokens) sampled token ids. `class_id` None samples unconditionally (the null class);
    with a class, cfg != 1 also runs the null class and guides. `use_cache=False` recomputes the
    whole prefix at every step (for measuring what the cache saves). `on_token(t, tokens)` is
    called after each position with the (n, t + 1) tokens so far."""
    k = _check(model, n, num_tokens, cfg, temperature, top_k, top_p, seed)
    was = model.training
    model.eval()
    # no seed: one drawn from torch's generator, so torch.manual_seed still makes runs repeatable
    rng = np.random.default_rng(seed if seed is not None else int(torch.randint(0, 2**62, (1,))))
    classes = model.check_classes(None if class_id is None else torch.full((n,), int(class_id)), n).cpu().numpy()
    guided = class_id is not None and cfg != 1.0 and class_id != model.null_class
    if guided:
        classes = np.concatenate([classes, np.full_like(classes, model.null_class)])
    rows = len(classes)
    tokens = np.zeros((rows, k), dtype=np.int64)
    stepper = make_stepper(model, classes, k)
    plain = temperature == 1.0 and top_k is None and top_p is None
    try:
        for t in range(k):
            h = stepper.step(tokens[:, t - 1] if t else None) if use_cache else stepper.recompute(tokens[:, :t])
            chosen = np.zeros((rows, len(model.alphabets)), dtype=np.int64)
            uniforms = rng.random((len(model.alphabets), n))  # one per digit and sample
            u = h
            for j in range(len(model.alphabets)):
                logits = stepper.head_logits(u, j)  # (rows, A)
                if guided:
                    cond, null = logits[:n], logits[n:]
                    logits = null + cfg * (cond - null)
                logits = logits[:n]
                if plain:  # _draw normalises: exp(logits - max) is enough
                    weights = np.exp(logits - logits.max(-1, keepdims=True))
                else:
                    weights = filter_logits(logits, temperature, top_k, top_p)
                digit = _draw(weights, uniforms[j])
                chosen[:, j] = np.tile(digit, 2) if guided else digit
                if j + 1 < len(model.alphabets):
                    u = stepper.add_digit(u, chosen[:, j], j)
            tokens[:, t] = model.digits.join(chosen)
            if on_token is not None:
                on_token(t, torch.from_numpy(tokens[:n, : t + 1]))
    finally:
        model.train(was)
    return torch.from_numpy(tokens[:n]).to(model.pos_embed.device)
