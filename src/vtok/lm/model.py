"""A decoder-only transformer over a tokenizer's token sequences, read in their order.

An ordered 1D tokenizer says the gist first and the detail after, so predicting token t from
tokens < t is generation from coarse to fine, and the same predictions drive an entropy coder
(code length = negative log-likelihood; M2T, https://arxiv.org/abs/2304.07313).

Tokens enter and leave as their *symbols*: an FSQ token is D digits (one per quantized dimension,
alphabets = the FSQ levels, e.g. 8*8*8*5*5*5 = 64,000 codes), a VQ token one symbol over its
codebook. The input embedding of a token is the sum of its digits' embeddings, and the output
head predicts the digits one after another, each from the transformer's state and the digits
already chosen:

    p(token_t | tokens_<t) = prod_j p(digit_j | h_t, digit_<j)

so neither end needs a 64,000-row table (that would be most of a small model, and tokens of a
thousand photos could not train it), and within-token correlations are still modelled.
Positions are learned (sequences are at most a few hundred tokens); blocks are pre-norm; a class
(or the extra "null" class used for classifier-free guidance) is the sequence's first input.

Axis letters: B batch, T positions fed (<= K), K the tokenizer's tokens per image, D digits per
token, C model width, H heads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, TokenError
from ..quantizers.digits import Digits

__all__ = ["LMConfig", "TokenLM", "KVCache"]

MAX_POSITIONS = 4096
MAX_WIDTH = 4096
MAX_DEPTH = 64
MAX_CLASSES = 1 << 20
MAX_ALPHABET = 1 << 20


@dataclass
class LMConfig:
    alphabets: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])  # symbols per token
    num_positions: int = 64  # K: the longest token sequence
    width: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    num_classes: int = 0  # 0: unconditional; else classes 0..N-1, and N is the null class

    def validate(self) -> None:
        """Every value in range, checked before anything is allocated (a config.json is input)."""

        def whole(name: str, value, lo: int, hi: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"LM config {name} must be a whole number in {lo}..{hi}, got {value!r}")

        if not isinstance(self.alphabets, (list, tuple)) or not 1 <= len(self.alphabets) <= 16:
            raise ConfigError(f"LM config alphabets must be a list of 1..16 sizes, got {self.alphabets!r}")
        for a in self.alphabets:
            whole("alphabets[]", a, 2, MAX_ALPHABET)
        whole("num_positions", self.num_positions, 1, MAX_POSITIONS)
        whole("width", self.width, 8, MAX_WIDTH)
        whole("depth", self.depth, 1, MAX_DEPTH)
        whole("heads", self.heads, 1, self.width)
        whole("num_classes", self.num_classes, 0, MAX_CLASSES)
        if self.width % self.heads:
            raise ConfigError(f"LM config width {self.width} must be divisible by heads {self.heads}")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)):
            raise ConfigError(f"LM config mlp_ratio must be a number, got {self.mlp_ratio!r}")
        if not 0.25 <= self.mlp_ratio <= 16 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("LM config mlp_ratio must lie in 0.25..16 and dropout in [0, 1)")
        if self.parameter_estimate() > 2e9:
            raise ConfigError(f"LM config describes about {self.parameter_estimate():.2g} parameters (limit 2e9)")

    def parameter_estimate(self) -> float:
        c = self.width
        per_block = c * c * (4 + 2 * self.mlp_ratio)
        head = sum(c * c + c * a for a in self.alphabets) + c * sum(self.alphabets) * 2
        return self.depth * per_block + head + c * (self.num_positions + self.num_classes + 2)

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of every layer for the positions fed so far, preallocated: (B, H, T, C/H)."""

    def __init__(self, depth: int, batch: int, heads: int, length: int, head_dim: int, device, dtype):
        shape = (batch, heads, length, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(depth)]
        self.length = 0


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3x (B, H, T, C/H)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0)
        else:
            start = cache.length
            cache.keys[layer][:, :, start : start + t] = k
            cache.values[layer][:, :, start : start + t] = v
            k, v = cache.keys[layer][:, :, : start + t], cache.values[layer][:, :, : start + t]
            # The t new queries see every cached position and the new ones causally among themselves.
            mask = None
            if t > 1:
                mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, layer)
        return x + self.mlp(self.norm2(x))


class TokenLM(nn.Module):
    """Next-token model over token sequences of one tokenizer (see the module docstring)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        self.alphabets = [int(a) for a in c.alphabets]
        offsets = torch.tensor([0] + self.alphabets[:-1]).cumsum(0)
        self.digits = Digits(self.alphabets)  # token ids <-> digits, as the tokenizer's quantizer splits them
        self.digit_offsets: torch.Tensor
        self.register_buffer("digit_offsets", offsets, persistent=False)  # (D,)
        total = sum(self.alphabets)
        self.digit_embed = nn.Embedding(total, c.width)  # input: a token is the sum of its digits
        self.start_embed = nn.Embedding(c.num_classes + 1, c.width)  # classes, then null (or the one start)
        self.pos_embed = nn.Parameter(torch.zeros(c.num_positions, c.width))
        self.blocks = nn.ModuleList(_Block(c.width, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.width)
        # Output head: digit j from (h_t + embeddings of the digits < j of the same token).
        self.head_embed = nn.Embedding(total, c.width)
        self.head_hidden = nn.ModuleList(nn.Linear(c.width, c.width) for _ in self.alphabets)
        self.head_out = nn.ModuleList(nn.Linear(c.width, a) for a in self.alphabets)
        self.apply(self._init)
        nn.init.normal_(self.pos_embed, std=0.02)
        # What the weights belong to, saved in config.json by save_pretrained (not in the state_dict).
        self.name = "token-lm"
        self.tokenizer_name: str | None = None  # how to load the tokenizer: a shipped name or a folder
        self.tokenizer_id: str | None = None  # hex of the tokenizer's weights id (vtok.Tokenizer.weights_id)
        self.classes: list[str] = []  # class names for class ids 0..num_classes-1

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # -- description ------------------------------------------------------------------------
    @property
    def num_positions(self) -> int:
        return self.config.num_positions

    @property
    def num_tokens(self) -> int:
        """K, the longest sequence it generates (the tokenizer's num_tokens)."""
        return self.config.num_positions

    @property
    def codebook_size(self) -> int:
        return math.prod(self.alphabets)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    # -- tokens <-> digits ----------------------------------------------------------------------
    def to_digits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., T) token ids -> (..., T, D) digits, least significant first (quantizers.Digits)."""
        return self.digits.split(tokens)

    def to_tokens(self, digits: torch.Tensor) -> torch.Tensor:
        return self.digits.join(digits)

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32, torch.int16):
            raise TokenError("tokens must be an integer tensor of shape (B, T)")
        if tokens.ndim != 2 or tokens.shape[1] > self.num_positions:
            raise TokenError(f"tokens must have shape (B, T) with T <= {self.num_positions}, got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise TokenError(f"token ids must lie in 0..{self.codebook_size - 1}")
        return tokens.long()

    def check_classes(self, classes: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B,) class ids, the null class where none is given."""
        if classes is None:
            return torch.full((batch,), self.null_class, dtype=torch.long, device=self.pos_embed.device)
        classes = torch.as_tensor(classes, dtype=torch.long, device=self.pos_embed.device).reshape(-1)
        if classes.shape[0] != batch:
            raise TokenError(f"{classes.shape[0]} class ids for {batch} sequences")
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) > self.null_class):
            raise TokenError(f"class ids must lie in 0..{self.null_class} ({self.null_class} = no class)")
        return classes

    # -- the transformer --------------------------------------------------------------------------
    def embed_inputs(self, tokens: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Inputs for predicting tokens 0..T-1: the start (class) then tokens 0..T-2. (B, T, C)."""
        start = self.start_embed(classes)[:, None]  # (B, 1, C)
        if tokens.shape[1] <= 1:
            return start + self.pos_embed[:1]
        prev = self.digit_embed(self.to_digits(tokens[:, :-1]) + self.digit_offsets).sum(2)  # (B, T-1, C)
        x = torch.cat([start, prev], 1)
        return x + self.pos_embed[: x.shape[1]]

    def hidden(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T, C) inputs -> (B, T, C) states; with a cache, x holds only the new positions."""
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)

    def step_input(self, tokens: torch.Tensor | None, classes: torch.Tensor, position: int) -> torch.Tensor:
        """The one input that predicts the token at `position`, given the token at position - 1. (B, 1, C)."""
        if position == 0 or tokens is None:
            x = self.start_embed(classes)
        else:
            x = self.digit_embed(self.to_digits(tokens) + self.digit_offsets).sum(1)  # tokens: (B,)
        return (x + self.pos_embed[position])[:, None]

    def new_cache(self, batch: int, length: int | None = None) -> KVCache:
        c = self.config
        return KVCache(
            c.depth,
            batch,
            c.heads,
            length or c.num_positions,
            c.width // c.heads,
            self.pos_embed.device,
            self.pos_embed.dtype,
        )

    # -- the digit head ----------------------------------------------------------------------------
    def digit_logits(self, h: torch.Tensor, chosen: torch.Tensor, j: int) -> torch.Tensor:
        """Logits of digit j. h: (..., C) states; chosen: (..., >= j) the digits < j. -> (..., alphabets[j])."""
        u = h
        if j > 0:
            u = h + self.head_embed(chosen[..., :j] + self.digit_offsets[:j]).sum(-2)
        return self.head_logits(u, j)

    def head_logits(self, u: torch.Tensor, j: int) -> torch.Tensor:
        """Logits of digit j from u = states + head embeddings of the digits < j (see add_digit)."""
        return self.head_out[j](F.gelu(self.head_hidden[j](u), approximate="tanh"))

    def add_digit(self, u: torch.Tensor, digit: torch.Tensor, j: int) -> torch.Tensor:
        """u for digit j + 1 once digit j is chosen: one embedding instead of re-summing all of them
        (what sampling does, one digit at a time)."""
        return u + self.head_embed(digit + self.digit_offsets[j])

    def forward(self, tokens: torch.Tensor, classes: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Teacher-forced logits of every digit of every token.

        tokens: (B, T) ids; classes: (B,) or None. Returns D tensors (B, T, alphabets[j])."""
        tokens = self.check_tokens(tokens)
        classes = self.check_classes(classes, tokens.shape[0])
        h = self.hidden(self.embed_inputs(tokens, classes))  # (B, T, C)
        digits = self.to_digits(tokens)  # (B, T, D)
        return [self.digit_logits(h, digits, j) for j in range(len(self.alphabets))]

    def nll(self, tokens: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) negative log-likelihood of each token, in nats."""
        return self.nll_from_logits(self(tokens, classes), tokens)

    def nll_from_logits(self, logits: list[torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) nats from forward()'s digit logits and the tokens they predict."""
        digits = self.to_digits(tokens.long())
        out = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
        for j, lg in enumerate(logits):
            out = out - lg.float().log_softmax(-1).gather(-1, digits[..., j : j + 1]).squeeze(-1)
        return out

    def class_id(self, label: int | str | None) -> int | None:
        """A class name or id -> its id (None stays None: unconditional)."""
        if label is None:
            return None
        if self.config.num_classes == 0:
            raise ConfigError("this LM was trained without classes: leave the class out")
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        if isinstance(label, str) and label.isdigit():
            label = int(label)
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < self.config.num_classes:
            return label
        shown = ", ".join(self.classes[:20]) + (" ..." if len(self.classes) > 20 else "")
        raise ConfigError(f"unknown class {label!r}; this LM knows: {shown}")

    def generate(
        self,
        n: int,
        num_tokens: int | None = None,
        class_label: int | str | None = None,
        cfg: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """(n, num_tokens) sampled token ids (all K by default); decode them with the tokenizer
        this LM names. See :func:`vtok.lm.sampling.generate`."""
        from .sampling import generate

        return generate(
            self,
            n,
            num_tokens=num_tokens,
            class_id=self.class_id(class_label),
            cfg=cfg,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            use_cache=use_cache,
        )

    @torch.no_grad()
    def log_prob(self, tokens: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) log2-probability of each token given the ones before it: minus the bits each
        token costs under this model (sum over T for a sequence's cost)."""
        was = self.training
        self.eval()
        try:
            return -self.nll(tokens, classes) / math.log(2)
        finally:
            self.train(was)
