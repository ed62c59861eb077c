"""Coding token prefixes under a token LM: each digit of each token range-coded under the LM's
prediction from the tokens before it (code length = negative log-likelihood; M2T,
https://arxiv.org/abs/2304.07313), through constriction's queue (range) coder, which suits
autoregressive models (Bamler 2022).

Decoding must reproduce the encoder's probabilities bit for bit. Both sides therefore run the
very same computation: the LM one position at a time with its key/value cache (never the
teacher-forced pass, whose matrix shapes, and so float rounding, differ), tiles in fixed chunks
whose shapes depend only on the token counts in the header, in float64 numpy (see _Stepper), and
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

__all__ = ["lm_encode", "lm_decode", "CHUNK"]

CHUNK = 64  # tiles coded side by side (one LM batch); part of the format: both sides use it
PRECISION = 1 << 20  # probabilities are whole multiples of 1 / PRECISION, each at least 1 / PRECISION


def _constriction():
    try:
        import constriction
    except ImportError as e:
        raise OptionalDependencyError("constriction", "codec", "LM entropy coding") from e
    return constriction


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form: the one TokenLM uses (nn.GELU(approximate="tanh")), and one numpy call."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


def _normalize(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """LayerNorm without its affine part (folded into the next linear layer where there is one)."""
    centred = x - np.add.reduce(x, -1, keepdims=True) / x.shape[-1]
    variance = np.add.reduce(centred * centred, -1, keepdims=True) / x.shape[-1]
    return centred / np.sqrt(variance + eps)


def _numpy_weights(lm) -> dict[str, np.ndarray]:
    """The LM's weights as float64 arrays, linear weights transposed and contiguous so each product
    is a plain (B, in) @ (in, out); kept on the LM until one of its tensors changes (a file of one
    tile would otherwise spend a tenth of its time converting them)."""
    key = tuple((t.data_ptr(), t._version) for t in lm.parameters())
    cached = getattr(lm, "_vtok_numpy_weights", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    weights = {}
    for name, value in lm.state_dict().items():
        array = value.detach().cpu().double().numpy()
        if value.ndim == 2 and name.endswith("weight") and "embed" not in name:
            array = array.T
        weights[name] = np.ascontiguousarray(array)
    for i in range(lm.config.depth):  # (n(x) * g + b) @ W + c = n(x) @ (g W) + (b W + c): two operations fewer
        p = f"blocks.{i}."
        for norm, linear in (("norm1", "attn.qkv"), ("norm2", "mlp.0")):
            gain, shift = weights.pop(p + norm + ".weight"), weights.pop(p + norm + ".bias")
            weights[p + linear + ".bias"] = shift @ weights[p + linear + ".weight"] + weights[p + linear + ".bias"]
            weights[p + linear + ".weight"] = np.ascontiguousarray(gain[:, None] * weights[p + linear + ".weight"])
    lm._vtok_numpy_weights = (key, weights)
    return weights


class _Stepper:
    """The LM's one-position step and digit head in float64 numpy, for coding.

    A second implementation of TokenLM's incremental path (tests hold it to the torch model), for
    two reasons: numpy's per-operation cost is a few microseconds where PyTorch's eager one is tens,
    and coding runs one position at a time (a 64-token tile is 64 steps of 6 digit heads); and
    float64 keeps the rounding differences between two machines' kernels far below the 1/2**20
    grid the probabilities are quantized to."""

    def __init__(self, lm, batch: int, length: int):
        c = lm.config
        w = _numpy_weights(lm)
        self.w, self.heads, self.depth = w, c.heads, c.depth
        self.alphabets = list(lm.alphabets)
        self.offsets = lm.digit_offsets.cpu().numpy()
        self.radix = lm.radix.cpu().numpy()
        self.start = w["start_embed.weight"][lm.null_class]
        hd = c.width // c.heads
        self.keys = np.zeros((c.depth, batch, c.heads, length, hd))
        self.values = np.zeros((c.depth, batch, c.heads, length, hd))
        self.scale = 1.0 / np.sqrt(hd)
        self.t = 0
        self.head_embed = w["head_embed.weight"]
        self.head = [
            (
                w[f"head_hidden.{j}.weight"],
                w[f"head_hidden.{j}.bias"],
                w[f"head_out.{j}.weight"],
                w[f"head_out.{j}.bias"],
            )
            for j in range(len(self.alphabets))
        ]

    def step(self, previous: np.ndarray | None) -> np.ndarray:
        """(B,) tokens at position t - 1 (None at t = 0) -> (B, C) states at position t."""
        w, t = self.w, self.t
        if previous is None:
            x = np.broadcast_to(self.start, (self.keys.shape[1], self.start.shape[0])).copy()
        else:
            digits = (previous[:, None] // self.radix) % np.asarray(self.alphabets)
            x = w["digit_embed.weight"][digits + self.offsets].sum(1)
        x = x + w["pos_embed"][t]
        b, c = x.shape
        hd = c // self.heads
        for i in range(self.depth):
            p = f"blocks.{i}."
            y = _normalize(x)
            qkv = (y @ w[p + "attn.qkv.weight"] + w[p + "attn.qkv.bias"]).reshape(b, 3, self.heads, hd)
            self.keys[i, :, :, t] = qkv[:, 1]
            self.values[i, :, :, t] = qkv[:, 2]
            scores = np.matmul(self.keys[i, :, :, : t + 1], qkv[:, 0, :, :, None])[..., 0] * self.scale  # (B, H, t+1)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attn = np.matmul(scores[:, :, None, :], self.values[i, :, :, : t + 1])  # (B, H, 1, C/H)
            x = x + attn.reshape(b, c) @ w[p + "attn.proj.weight"] + w[p + "attn.proj.bias"]
            y = _normalize(x)
            y = _gelu(y @ w[p + "mlp.0.weight"] + w[p + "mlp.0.bias"])
            x = x + y @ w[p + "mlp.2.weight"] + w[p + "mlp.2.bias"]
        self.t += 1
        return _normalize(x) * w["norm.weight"] + w["norm.bias"]

    def digit_probs(self, u: np.ndarray, j: int) -> np.ndarray:
        """(B, A_j) quantized probabilities of digit j. u: the states plus the head embeddings of the
        digits < j of the same token (see add_digit)."""
        hidden_w, hidden_b, out_w, out_b = self.head[j]
        logits = _gelu(u @ hidden_w + hidden_b) @ out_w + out_b
        p = np.exp(logits - logits.max(-1, keepdims=True))
        counts = np.floor(p * ((PRECISION - p.shape[1]) / p.sum(-1, keepdims=True))) + 1.0
        return counts / counts.sum(-1, keepdims=True)

    def add_digit(self, u: np.ndarray, digit: np.ndarray, j: int) -> np.ndarray:
        """u for digit j + 1, once digit j is known."""
        return u + self.head_embed[digit + self.offsets[j]]


def _code(lm, counts: np.ndarray, num_tokens: int, coder, tokens: np.ndarray | None) -> np.ndarray:
    """Run the LM over every tile's prefix, coding (tokens given) or decoding (coder is a decoder)."""
    family = _constriction().stream.model.Categorical(perfect=False)
    out = np.zeros((len(counts), num_tokens), dtype=np.int64)
    radix = lm.radix.cpu().numpy()
    alphabets = np.asarray(lm.alphabets)
    for start in range(0, len(counts), CHUNK):
        rows = np.arange(start, min(len(counts), start + CHUNK))
        length = int(counts[rows].max())
        chunk = np.zeros((len(rows), length), dtype=np.int64)  # tokens fed back (0 past a tile's prefix)
        if tokens is not None:
            chunk = np.where(np.arange(length)[None, :] < counts[rows][:, None], tokens[rows, :length], 0)
        stepper = _Stepper(lm, len(rows), length)
        for t in range(length):
            active = np.nonzero(counts[rows] > t)[0]
            every = len(active) == len(rows)
            u = stepper.step(chunk[:, t - 1] if t else None)
            digits = (chunk[:, t, None] // radix) % alphabets  # (B, D); decoding fills it digit by digit
            for j in range(len(alphabets)):
                probs = stepper.digit_probs(u, j)
                if not every:
                    probs = probs[active]
                if tokens is not None:
                    coder.encode(digits[active, j].astype(np.int32), family, probs)
                else:
                    digits[active, j] = coder.decode(family, probs)
                if j + 1 < len(alphabets):
                    u = stepper.add_digit(u, digits[:, j], j)
            if tokens is None:
                chunk[active, t] = (digits[active] * radix).sum(1)
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
