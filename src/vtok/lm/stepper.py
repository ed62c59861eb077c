"""A TokenLM run one position at a time: the incremental path that sampling and LM coding share.

Two implementations of the same step (TokenLM.hidden over a KV cache, then the digit head):

- :class:`NumpyStepper`, float64 numpy on the CPU. A small LM's step is dozens of tiny
  operations; numpy's per-operation cost is a few microseconds where PyTorch's eager one is
  tens, so this is what a CPU samples and codes with. Float64 also keeps rounding differences
  between two machines' kernels far below the 1/2**20 grid that LM coding quantizes
  probabilities to (vtok.codec.lm_coding), so encoder and decoder agree.
- :class:`TorchStepper`, the model itself on its device (a GPU samples big batches with it).

Both take the previous position's tokens and return the states (B, C) that predict the next;
``recompute`` gives the same states from the whole prefix without a cache (what the cache
saves, measured by benchmarks/lm.py). Tests hold the numpy path to the torch model.

Axis letters: B rows (samples, or tiles), T positions so far, C width, H heads, A a digit's alphabet.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from .model import TokenLM

__all__ = ["Stepper", "NumpyStepper", "TorchStepper", "make_stepper", "softmax"]


class Stepper(Protocol):
    """States are numpy arrays or tensors, as the implementation keeps them; logits are numpy."""

    def step(self, previous: np.ndarray | None) -> Any: ...

    def recompute(self, tokens: np.ndarray) -> Any: ...

    def head_logits(self, u: Any, j: int) -> np.ndarray: ...

    def add_digit(self, u: Any, digit: np.ndarray, j: int) -> Any: ...


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form: the one TokenLM uses (nn.GELU(approximate="tanh")), and one numpy call."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


def _normalize(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """LayerNorm without its affine part (folded into the next linear layer where there is one)."""
    centred = x - np.add.reduce(x, -1, keepdims=True) / x.shape[-1]
    variance = np.add.reduce(centred * centred, -1, keepdims=True) / x.shape[-1]
    return centred / np.sqrt(variance + eps)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    x = np.exp(x - x.max(-1, keepdims=True))
    x /= x.sum(-1, keepdims=True)
    return x


def _mlp_residual(x: np.ndarray, w: dict[str, np.ndarray], p: str) -> np.ndarray:
    """x plus block `p`'s MLP of it (its LayerNorm folded into the first linear layer)."""
    x = x + _gelu(_normalize(x) @ w[p + "mlp.0.weight"] + w[p + "mlp.0.bias"]) @ w[p + "mlp.2.weight"]
    return x + w[p + "mlp.2.bias"]


def numpy_weights(lm: TokenLM) -> dict[str, np.ndarray]:
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
    lm.__dict__["_vtok_numpy_weights"] = (key, weights)  # a plain attribute: not in the state_dict
    return weights


class NumpyStepper:
    """TokenLM's incremental path in float64 numpy, for `classes` (B,) rows and up to `length` positions."""

    def __init__(self, lm: TokenLM, classes: np.ndarray, length: int):
        c = lm.config
        w = numpy_weights(lm)
        self.w, self.heads, self.depth = w, c.heads, c.depth
        self.alphabets = np.asarray(lm.alphabets)
        self.offsets = lm.digit_offsets.cpu().numpy()
        self.digits = lm.digits
        self.start = w["start_embed.weight"][np.asarray(classes, dtype=np.int64)]  # (B, C)
        batch, hd = len(self.start), c.width // c.heads
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

    def _inputs(self, tokens: np.ndarray) -> np.ndarray:
        """(B, T) tokens -> (B, T, C) the sum of each token's digit embeddings."""
        digits = self.digits.split(tokens)  # (B, T, D)
        return self.w["digit_embed.weight"][digits + self.offsets].sum(-2)

    def step(self, previous: np.ndarray | None) -> np.ndarray:
        """(B,) tokens at position t - 1 (None at t = 0) -> (B, C) states at position t."""
        w, t = self.w, self.t
        x = self.start if previous is None else self._inputs(previous[:, None])[:, 0]
        x = x + w["pos_embed"][t]
        b, c = x.shape
        hd = c // self.heads
        for i in range(self.depth):
            p = f"blocks.{i}."
            qkv = (_normalize(x) @ w[p + "attn.qkv.weight"] + w[p + "attn.qkv.bias"]).reshape(b, 3, self.heads, hd)
            self.keys[i, :, :, t] = qkv[:, 1]
            self.values[i, :, :, t] = qkv[:, 2]
            scores = np.matmul(self.keys[i, :, :, : t + 1], qkv[:, 0, :, :, None])[..., 0] * self.scale  # (B, H, t+1)
            attn = np.matmul(softmax(scores)[:, :, None, :], self.values[i, :, :, : t + 1])  # (B, H, 1, C/H)
            x = x + attn.reshape(b, c) @ w[p + "attn.proj.weight"] + w[p + "attn.proj.bias"]
            x = _mlp_residual(x, w, p)
        self.t += 1
        return _normalize(x) * w["norm.weight"] + w["norm.bias"]

    def recompute(self, tokens: np.ndarray) -> np.ndarray:
        """(B, T) tokens -> (B, C) states at position T, from the whole prefix, without the cache."""
        w = self.w
        x = self.start[:, None]  # (B, 1, C)
        if tokens.shape[1]:
            x = np.concatenate([x, self._inputs(tokens)], 1)  # (B, T+1, C)
        b, n, c = x.shape
        x = x + w["pos_embed"][:n]
        hd = c // self.heads
        future = np.triu(np.full((n, n), -np.inf), 1)  # causal: position i sees 0..i
        for i in range(self.depth):
            p = f"blocks.{i}."
            qkv = (_normalize(x) @ w[p + "attn.qkv.weight"] + w[p + "attn.qkv.bias"]).reshape(b, n, 3, self.heads, hd)
            q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # 3x (B, H, T+1, C/H)
            scores = np.matmul(q, k.transpose(0, 1, 3, 2)) * self.scale + future
            attn = np.matmul(softmax(scores), v).transpose(0, 2, 1, 3).reshape(b, n, c)
            x = x + attn @ w[p + "attn.proj.weight"] + w[p + "attn.proj.bias"]
            x = _mlp_residual(x, w, p)
        return _normalize(x[:, -1]) * w["norm.weight"] + w["norm.bias"]

    def head_logits(self, u: np.ndarray, j: int) -> np.ndarray:
        """(B, A_j) logits of digit j. u: the states plus the head embeddings of the digits < j of
        the same token (see add_digit)."""
        hidden_w, hidden_b, out_w, out_b = self.head[j]
        return _gelu(u @ hidden_w + hidden_b) @ out_w + out_b

    def add_digit(self, u: np.ndarray, digit: np.ndarray, j: int) -> np.ndarray:
        """u for digit j + 1, once digit j is known: one embedding added."""
        return u + self.head_embed[digit + self.offsets[j]]


class TorchStepper:
    """The same interface over the torch model on its own device (numpy in and out)."""

    def __init__(self, lm: TokenLM, classes: np.ndarray, length: int):
        self.lm = lm
        self.device = lm.pos_embed.device
        self.classes = torch.as_tensor(classes, dtype=torch.long, device=self.device)
        self.cache = lm.new_cache(len(classes), length)
        self.t = 0

    @torch.no_grad()
    def step(self, previous: np.ndarray | None) -> torch.Tensor:
        prev = None if previous is None else torch.as_tensor(previous, device=self.device)
        self.t += 1
        return self.lm.hidden(self.lm.step_input(prev, self.classes, self.t - 1), self.cache)[:, 0]

    @torch.no_grad()
    def recompute(self, tokens: np.ndarray) -> torch.Tensor:
        t = tokens.shape[1]
        padded = torch.zeros(len(self.classes), t + 1, dtype=torch.long, device=self.device)
        padded[:, :t] = torch.as_tensor(tokens, device=self.device)  # the last one is never read
        return self.lm.hidden(self.lm.embed_inputs(padded, self.classes))[:, t]

    @torch.no_grad()
    def head_logits(self, u: torch.Tensor, j: int) -> np.ndarray:
        return self.lm.head_logits(u, j).double().cpu().numpy()

    @torch.no_grad()
    def add_digit(self, u: torch.Tensor, digit: np.ndarray, j: int) -> torch.Tensor:
        return self.lm.add_digit(u, torch.as_tensor(digit, device=self.device), j)


NUMPY_MAX_ROWS = 8  # measured (benchmarks/lm.py): past this numpy's float64 work costs more than torch's overhead


def make_stepper(lm: TokenLM, classes: np.ndarray, length: int) -> Stepper:
    """numpy for a few rows on the CPU (there a small LM's step is overhead-bound), else torch."""
    if lm.pos_embed.device.type == "cpu" and len(classes) <= NUMPY_MAX_ROWS:
        return NumpyStepper(lm, classes, length)
    return TorchStepper(lm, classes, length)
