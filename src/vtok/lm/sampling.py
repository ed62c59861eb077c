"""Sampling token sequences from a TokenLM, coarse to fine, with a KV cache.

Each token is drawn digit by digit (see model.py); temperature, top-k and top-p act on each
digit's distribution, and classifier-free guidance mixes the logits of the class and of the null
class: l = l_null + cfg * (l_class - l_null) (Ho & Salimans, https://arxiv.org/abs/2207.12598;
LlamaGen uses 1.75-2.0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError
from .model import TokenLM

__all__ = ["generate", "filter_logits"]

MAX_CACHE_BYTES = 1 << 30  # the KV cache of one call; more samples take more calls


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """(B, A) logits -> (B, A) probabilities after temperature, top-k and top-p (nucleus)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely symbols
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)  # the most likely one always stays
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _check(model: TokenLM, n: int, num_tokens: int | None, cfg: float, temperature: float, top_k, top_p) -> int:
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
    c = model.config
    cache_bytes = 2 * n * c.depth * 2 * k * c.width * 4  # keys and values, guidance's second half at most
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
    k = _check(model, n, num_tokens, cfg, temperature, top_k, top_p)
    device = model.pos_embed.device
    was = model.training
    model.eval()
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, (1,))))
    classes = model.check_classes(None if class_id is None else torch.full((n,), int(class_id)), n)
    guided = class_id is not None and cfg != 1.0 and class_id != model.null_class
    if guided:
        classes = torch.cat([classes, torch.full_like(classes, model.null_class)])
    rows = classes.shape[0]
    tokens = torch.zeros(rows, k, dtype=torch.long, device=device)
    cache = model.new_cache(rows, k) if use_cache else None
    try:
        for t in range(k):
            if cache is not None:
                h = model.hidden(model.step_input(tokens[:, t - 1] if t else None, classes, t), cache)[:, 0]
            else:
                h = model.hidden(model.embed_inputs(tokens[:, : t + 1], classes))[:, t]  # (rows, C)
            chosen = torch.zeros(rows, len(model.alphabets), dtype=torch.long, device=device)
            u = h
            for j in range(len(model.alphabets)):
                logits = model.head_logits(u, j)
                if guided:
                    cond, null = logits[:n], logits[n:]
                    logits = null + cfg * (cond - null)
                probs = filter_logits(logits[:n], temperature, top_k, top_p)
                digit = torch.multinomial(probs, 1, generator=generator)[:, 0]
                chosen[:, j] = digit.repeat(rows // n) if guided else digit
                if j + 1 < len(model.alphabets):
                    u = model.add_digit(u, chosen[:, j], j)
            tokens[:, t] = model.to_tokens(chosen)
            if on_token is not None:
                on_token(t, tokens[:n, : t + 1])
    finally:
        model.train(was)
    return tokens[:n]
