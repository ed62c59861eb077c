"""A learned prior over token ids, for entropy coding.

Tokens are split into symbols with small alphabets: an FSQ token is its D digits (one per
quantized dimension, alphabets = the FSQ levels); a VQ token is one symbol over the codebook.
The prior holds, for every sequence position and every digit, a categorical distribution
estimated from the tokens of a folder of images (Krichevsky-Trofimov smoothing: counts + 1/2),
so no symbol ever has probability zero. Stored as ``prior.safetensors`` beside a model's weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError, TokenError
from ..quantizers.digits import Digits

__all__ = ["TokenPrior", "symbol_alphabets", "tokens_to_symbols", "symbols_to_tokens"]


def symbol_alphabets(quantizer) -> list[int]:
    """The symbols a token splits into for the prior (see Quantizer.symbol_alphabets)."""
    return quantizer.symbol_alphabets()


def tokens_to_symbols(tokens: np.ndarray, alphabets: list[int]) -> np.ndarray:
    """(N,) token ids -> (N, D) digits, least significant first (quantizers.Digits)."""
    return Digits(alphabets).split(np.asarray(tokens, dtype=np.int64))


def symbols_to_tokens(symbols: np.ndarray, alphabets: list[int]) -> np.ndarray:
    return Digits(alphabets).join(symbols)


class TokenPrior:
    """probs[d]: (K, alphabets[d]) float64, rows summing to 1."""

    def __init__(self, probs: list[np.ndarray]):
        self.probs = [np.asarray(p, dtype=np.float64) for p in probs]
        self.alphabets = [p.shape[1] for p in self.probs]
        self.num_positions = self.probs[0].shape[0]

    def id(self) -> bytes:
        """The first 4 bytes of the SHA-256 over the probabilities: what an ANS-coded file names."""
        import hashlib

        h = hashlib.sha256()
        for p in self.probs:
            h.update(p.tobytes())
        return h.digest()[:4]

    @classmethod
    def fit(cls, tokens: torch.Tensor | np.ndarray, alphabets: list[int]) -> TokenPrior:
        """Estimate from (N, K) full-length token sequences."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[0] == 0:
            raise TokenError("fitting a prior needs a non-empty (N, K) array of tokens")
        n, k = tokens.shape
        symbols = tokens_to_symbols(tokens.reshape(-1), alphabets).reshape(n, k, len(alphabets))
        probs = []
        for d, size in enumerate(alphabets):
            counts = np.full((k, size), 0.5)
            for pos in range(k):
                counts[pos] += np.bincount(symbols[:, pos, d], minlength=size)
            probs.append(counts / counts.sum(1, keepdims=True))
        return cls(probs)

    def cross_entropy_bits(self, tokens: np.ndarray, counts: np.ndarray) -> float:
        """Ideal code length in bits of tiles' prefixes under this prior."""
        positions, symbols = self.flatten(tokens, counts)
        return float(sum(-np.log2(self.probs[d][positions, symbols[:, d]]).sum() for d in range(len(self.alphabets))))

    def prefix_bits(self, tokens: np.ndarray) -> np.ndarray:
        """(T, K) full sequences -> (T, K): ideal bits of the first 1, 2, ..., K tokens of each."""
        tokens = np.asarray(tokens, dtype=np.int64)
        t, k = tokens.shape
        symbols = tokens_to_symbols(tokens.reshape(-1), self.alphabets).reshape(t, k, len(self.alphabets))
        bits = np.zeros((t, k))
        for d in range(len(self.alphabets)):
            bits -= np.log2(self.probs[d][np.arange(k)[None, :], symbols[:, :, d]])
        return np.cumsum(bits, axis=1)

    def flatten(self, tokens: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, K) tokens + (T,) prefix lengths -> (positions (M,), symbols (M, D)) of the kept tokens."""
        keep = np.arange(tokens.shape[1])[None, :] < counts[:, None]
        positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)[keep]
        return positions, tokens_to_symbols(tokens[keep], self.alphabets)

    def to_bytes(self) -> bytes:
        """The prior.safetensors file, serialised in memory (to go into a model folder with the weights)."""
        from safetensors.numpy import save

        return save({f"probs_{d}": p for d, p in enumerate(self.probs)}, metadata={"format": "vtok-prior"})

    def save(self, path: str | Path) -> None:
        from ..files import write_atomic

        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path, num_positions: int, alphabets: list[int]) -> TokenPrior:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from ..files import safetensors_shapes

        expected_shapes = {f"probs_{d}": (num_positions, a) for d, a in enumerate(alphabets)}
        try:  # shapes from the header first: a tampered file is not read whole
            shapes = {k: shape for k, (_, shape) in safetensors_shapes(path).items()}
            data = load_file(str(path)) if shapes == expected_shapes else {}
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: unreadable prior ({e})") from e
        found = [data.get(f"probs_{d}") for d in range(len(alphabets))]
        probs = [p for p in found if p is not None]
        expected = [(num_positions, a) for a in alphabets]
        if len(probs) != len(found) or [p.shape for p in probs] != expected or len(data) != len(alphabets):
            raise ModelLoadError(f"{path}: prior does not match the model (expected shapes {expected})")
        if any(not np.all(np.isfinite(p)) or np.any(p <= 0) or np.abs(p.sum(1) - 1).max() > 1e-6 for p in probs):
            raise ModelLoadError(f"{path}: prior rows must be positive, finite and sum to 1")
        return cls(probs)  # unchanged, bit for bit: the model's fingerprint covers them


def fit_prior(
    tokenizer, folder: str | Path, crops_per_image: int = 16, seed: int = 0, batch_size: int = 64
) -> TokenPrior:
    """Fit a prior on the tokens of random crops (random scale and position) of a folder's images,
    attach it to `tokenizer` (``tokenizer.prior``) and return it."""
    from ..data import RandomCropDataset, scan_images
    from ..errors import ImageError

    files, _ = scan_images(folder)
    if not files:
        raise ImageError(f"{folder}: no readable images to fit a prior on")
    n = len(files) * crops_per_image
    data = RandomCropDataset(files, tokenizer.image_size, seed=seed, length=n, min_scale=0.02, hflip=True)
    tokens = []
    for start in range(0, n, batch_size):
        batch = torch.stack([data[i] for i in range(start, min(n, start + batch_size))])
        tokens.append(tokenizer.encode(batch).cpu())
    tokenizer.prior = TokenPrior.fit(torch.cat(tokens).numpy(), symbol_alphabets(tokenizer.model.quantizer))
    return tokenizer.prior
