"""Coding token prefixes into bytes: a plain bit-packed baseline and ANS under a learned prior.

ANS (asymmetric numeral systems; Duda 2009, https://arxiv.org/abs/0902.0271) through the
``constriction`` library (Bamler, "Understanding Entropy Coding With Asymmetric Numeral Systems",
2022), which is fast (tens of millions of symbols per second) and exact.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import OptionalDependencyError, TokenError
from .prior import TokenPrior, symbols_to_tokens

__all__ = ["pack_tokens", "unpack_tokens", "ans_encode", "ans_decode"]


def bits_per_id(codebook_size: int) -> int:
    return max(1, math.ceil(math.log2(codebook_size)))


def pack_tokens(tokens: np.ndarray, counts: np.ndarray, codebook_size: int) -> bytes:
    """Kept tokens of every tile, ceil(log2 V) bits each, least significant bit first."""
    keep = np.arange(tokens.shape[1])[None, :] < counts[:, None]
    ids = tokens[keep].astype(np.int64)
    b = bits_per_id(codebook_size)
    bits = ((ids[:, None] >> np.arange(b)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def unpack_tokens(payload: bytes, counts: np.ndarray, num_tokens: int, codebook_size: int) -> np.ndarray:
    b = bits_per_id(codebook_size)
    total = int(counts.sum())
    if len(payload) != (total * b + 7) // 8:
        raise TokenError(f"bit-packed payload has {len(payload)} bytes, expected {(total * b + 7) // 8}")
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little", count=total * b)
    ids = (bits.reshape(total, b).astype(np.int64) << np.arange(b)).sum(1)
    if total and ids.max() >= codebook_size:
        raise TokenError(f"payload decodes to token id {int(ids.max())} >= codebook size {codebook_size}")
    return _scatter(ids, counts, num_tokens)


def _constriction():
    try:
        import constriction
    except ImportError as e:
        raise OptionalDependencyError("constriction", "codec", "ANS entropy coding") from e
    return constriction


def ans_encode(tokens: np.ndarray, counts: np.ndarray, prior: TokenPrior) -> bytes:
    c = _constriction()
    positions, symbols = prior.flatten(tokens, counts)
    coder = c.stream.stack.AnsCoder()
    family = c.stream.model.Categorical(perfect=False)
    # A stack: push the last digit group first so that decoding pops digit 0 first.
    for d in reversed(range(len(prior.alphabets))):
        if len(positions):
            coder.encode_reverse(symbols[:, d].astype(np.int32), family, prior.probs[d][positions])
    words = coder.get_compressed().astype("<u4").tobytes()
    return words.rstrip(b"\x00")  # zero high bytes of the last word are restored on decoding


def ans_decode(payload: bytes, counts: np.ndarray, num_tokens: int, prior: TokenPrior) -> np.ndarray:
    c = _constriction()
    padded = payload + b"\x00" * (-len(payload) % 4)
    words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
    positions = np.concatenate([np.arange(int(k)) for k in counts]) if len(counts) else np.zeros(0, dtype=np.int64)
    symbols = np.empty((len(positions), len(prior.alphabets)), dtype=np.int64)
    # The coder is built inside the guard too: constriction checks the stream as it takes it
    # (a last word of zero is refused there), not only while decoding.
    try:
        coder = c.stream.stack.AnsCoder(words)
        family = c.stream.model.Categorical(perfect=False)
        for d in range(len(prior.alphabets)):
            if len(positions):
                symbols[:, d] = coder.decode(family, prior.probs[d][positions])
        leftover = not coder.is_empty()
    except Exception as e:  # noqa: BLE001 - constriction raises on streams that cannot be valid
        raise TokenError(f"ANS payload is corrupt ({e})") from e
    if leftover:
        raise TokenError("ANS payload has data left over after the last token")
    return _scatter(symbols_to_tokens(symbols, prior.alphabets), counts, num_tokens)


def _scatter(ids: np.ndarray, counts: np.ndarray, num_tokens: int) -> np.ndarray:
    """Flat kept ids -> (T, K) with zeros past each tile's prefix."""
    out = np.zeros((len(counts), num_tokens), dtype=np.int64)
    keep = np.arange(num_tokens)[None, :] < counts[:, None]
    out[keep] = ids
    return out
