"""Statistics of a token corpus: the "language of visual tokens".

All entropies in bits. tokens: (N, K) int64 sequences, vocabulary V.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["token_statistics"]


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def token_statistics(tokens: np.ndarray, vocab: int) -> dict:
    """Codebook usage, unigram entropy, per-position entropy, bigram conditional entropy
    H(t_i | t_{i-1}), and a Zipf fit (slope of log frequency vs log rank, least squares)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 2 or tokens.size == 0:
        raise ValueError("tokens must be a non-empty (N, K) array")
    n, k = tokens.shape
    counts = np.bincount(tokens.ravel(), minlength=vocab)
    per_position = [_entropy(np.bincount(tokens[:, i], minlength=vocab)) for i in range(k)]
    if k > 1:
        pairs = tokens[:, :-1] * vocab + tokens[:, 1:]
        _, pair_counts = np.unique(pairs, return_counts=True)
        bigram = _entropy(pair_counts) - _entropy(np.bincount(tokens[:, :-1].ravel(), minlength=vocab))
    else:
        bigram = float("nan")
    freq = np.sort(counts[counts > 0])[::-1].astype(np.float64)
    ranks = np.arange(1, len(freq) + 1, dtype=np.float64)
    slope = float(np.polyfit(np.log(ranks), np.log(freq), 1)[0]) if len(freq) > 1 else float("nan")
    return {
        "sequences": n,
        "positions": k,
        "vocab": vocab,
        "codebook_usage": float((counts > 0).mean()),
        "unigram_entropy_bits": _entropy(counts),
        "max_entropy_bits": math.log2(vocab),
        "per_position_entropy_bits": per_position,
        "bigram_conditional_entropy_bits": bigram,
        "zipf_slope": slope,
        "rank_frequency": freq[:1000].tolist(),
    }
