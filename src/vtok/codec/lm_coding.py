"""Coding token prefixes under a token LM: each digit of each token range-coded under the LM's
prediction from the tokens before it (code length = negative log-likelihood; M2T,
https://arxiv.org/abs/2304.07313), through constriction's queue (range) coder, which suits
autoregressive models (Bamler 2022).

Decoding must reproduce the encoder's probabilities bit for bit. Both sides therefore run the
very same computation: the LM one position at a time with its key/value cache (never the
teacher-forced pass, whose matrix shapes, and so float rounding, differ), tiles in fixed chunks
whose shapes depend only on the token counts in the header, in float64 numpy (vtok.lm.stepper.NumpyStepper), and
the probabilities are quantized to a 1/2**20 grid with a floor, so no symbol is ever impossible
and rounding noise between machines (about 1e-16) would have to land on a grid boundary to
matter. Should a decoder still diverge (another platform's kernels), the file's CRC-32, which
for LM files covers the decoded token ids too (format.token_check), turns a wrong picture into a
FormatError. The file names the LM by a 4-byte id (lm_id).

Payload: the range coder's 32-bit words, little-endian, without the zero bytes that end the last.
"""

from __future__ import annotations

import numpy as np

from ..errors import OptionalDependencyError, TokenError
from ..lm.stepper import NumpyStepper

__all__ = ["lm_encode", "lm_decode", "CHUNK"]

CHUNK = 64  # tiles coded side by side (one LM batch); part of the format: both sides use it
PRECISION = 1 << 20  # probabilities are whole multiples of 1 / PRECISION, each at least 1 / PRECISION


def _constriction():
    try:
        import constriction
    except ImportError as e:
        raise OptionalDependencyError("constriction", "codec", "LM entropy coding") from e
    return constriction


def _digit_probs(stepper: NumpyStepper, u: np.ndarray, j: int) -> np.ndarray:
    """(B, A_j) probabilities of digit j, quantized to whole multiples of 1 / PRECISION, none zero."""
    logits = stepper.head_logits(u, j)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    counts = np.floor(p * ((PRECISION - p.shape[1]) / p.sum(-1, keepdims=True))) + 1.0
    return counts / counts.sum(-1, keepdims=True)


def _code(lm, counts: np.ndarray, num_tokens: int, coder, tokens: np.ndarray | None) -> np.ndarray:
    """Run the LM over every tile's prefix, coding (tokens given) or decoding (coder is a decoder)."""
    family = _constriction().stream.model.Categorical(perfect=False)
    out = np.zeros((len(counts), num_tokens), dtype=np.int64)
    alphabets = lm.alphabets
    for start in range(0, len(counts), CHUNK):
        rows = np.arange(start, min(len(counts), start + CHUNK))
        length = int(counts[rows].max())
        chunk = np.zeros((len(rows), length), dtype=np.int64)  # tokens fed back (0 past a tile's prefix)
        if tokens is not None:
            chunk = np.where(np.arange(length)[None, :] < counts[rows][:, None], tokens[rows, :length], 0)
        stepper = NumpyStepper(lm, np.full(len(rows), lm.null_class), length)
        for t in range(length):
            active = np.nonzero(counts[rows] > t)[0]
            every = len(active) == len(rows)
            u = stepper.step(chunk[:, t - 1] if t else None)
            digits = lm.digits.split(chunk[:, t])  # (B, D); decoding fills it digit by digit
            for j in range(len(alphabets)):
                probs = _digit_probs(stepper, u, j)
                if not every:
                    probs = probs[active]
                if tokens is not None:
                    coder.encode(digits[active, j].astype(np.int32), family, probs)
                else:
                    digits[active, j] = coder.decode(family, probs)
                if j + 1 < len(alphabets):
                    u = stepper.add_digit(u, digits[:, j], j)
            if tokens is None:
                chunk[active, t] = lm.digits.join(digits[active])
        out[rows, :length] = chunk
    keep = np.arange(num_tokens)[None, :] < counts[:, None]
    return np.where(keep, out, 0)


def _check(lm, counts: np.ndarray, num_tokens: int) -> None:
    if num_tokens > lm.num_positions:
        raise TokenError(f"the LM predicts {lm.num_positions} positions; these tiles hold up to {num_tokens}")


def lm_encode(tokens: np.ndarray, counts: np.ndarray, lm) -> bytes:
    """(T, K) tokens with (T,) prefix lengths -> the range-coded payload."""
    tokens = np.asarray(tokens, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    _check(lm, counts, int(counts.max()) if len(counts) else 0)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= lm.codebook_size):
        raise TokenError(f"token ids must lie in 0..{lm.codebook_size - 1}")
    encoder = _constriction().stream.queue.RangeEncoder()
    _code(lm, counts, tokens.shape[1], encoder, tokens)
    # Zero bytes at the end of the last word are dropped and restored on decoding, as for ANS.
    return encoder.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")


def lm_decode(payload: bytes, counts: np.ndarray, num_tokens: int, lm) -> np.ndarray:
    """The payload -> (T, num_tokens) tokens (zeros past each tile's prefix)."""
    counts = np.asarray(counts, dtype=np.int64)
    _check(lm, counts, int(counts.max()) if len(counts) else 0)
    padded = payload + b"\x00" * (-len(payload) % 4)
    words = np.frombuffer(padded, dtype="<u4").astype(np.uint32)
    try:
        decoder = _constriction().stream.queue.RangeDecoder(words)
        tokens = _code(lm, counts, num_tokens, decoder, None)
    except Exception as e:  # noqa: BLE001 - constriction refuses streams that cannot be valid
        raise TokenError(f"LM-coded payload is corrupt ({e})") from e
    return tokens
