"""The uniform model API shared by every tokenizer architecture.

A model maps images in [-1, 1] of shape (B, 3, S, S), S = ``image_size``, to ``num_tokens``
(K) discrete tokens and back. Decoding accepts any prefix 1 <= k <= K: positions past k are
replaced by a learned mask embedding, exactly as during nested-dropout training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..quantizers import Quantizer, build_quantizer

__all__ = ["ConvTrunkConfig", "ModelOutput", "TokenizerModel"]


@dataclass
class ConvTrunkConfig:
    """What every architecture shares: resolution, the convolutional trunk and the quantizer."""

    image_size: int = 128
    patch: int = 4
    channels: tuple[int, ...] = (64, 128, 256)
    blocks_per_stage: int = 1
    decoder_blocks_per_stage: int = 0  # 0: as blocks_per_stage; more gives the decoder room for detail
    norm: str = "group"  # "group" (the first models) or "channel" (keeps flat colours: see blocks.ChannelNorm)
    quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "fsq", "levels": [8, 8, 8, 5, 5, 5]})


@dataclass
class ModelOutput:
    """recon: (B, 3, S, S) in about [-1, 1]; indices: (B, K); aux_loss: scalar."""

    recon: torch.Tensor
    indices: torch.Tensor
    aux_loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class TokenizerModel(nn.Module):
    """Base class. Subclasses set image_size, num_tokens, quantizer and implement
    ``encode_latents`` and ``decode_codes``."""

    architecture: str
    image_size: int
    num_tokens: int
    quantizer: Quantizer

    def _setup_trunk(self, c: ConvTrunkConfig) -> None:
        """Set config, image_size, grid (the feature grid's side) and quantizer from `c`."""
        factor = c.patch * 2 ** (len(c.channels) - 1)
        if c.image_size % factor:
            raise ValueError(f"image_size {c.image_size} must be a multiple of {factor}")
        self.config = c
        self.image_size = c.image_size
        self.grid = c.image_size // factor
        self.quantizer = build_quantizer(dict(c.quantizer))

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, 3, S, S) -> continuous latents (B, K, D) before quantization."""
        raise NotImplementedError

    def decode_codes(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """codes (B, K, D) with positions >= keep[b] ignored -> images (B, 3, S, S)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor):
        """(B, 3, S, S) in [-1, 1] -> QuantizerOutput with indices (B, K)."""
        return self.quantizer(self.encode_latents(x))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, k) int64 token ids, 1 <= k <= K -> images (B, 3, S, S) in about [-1, 1]."""
        b, k = indices.shape
        codes = self.quantizer.indices_to_codes(indices)  # (B, k, D)
        if k < self.num_tokens:
            pad = codes.new_zeros(b, self.num_tokens - k, codes.shape[-1])
            codes = torch.cat([codes, pad], dim=1)  # (B, K, D)
        keep = torch.full((b,), k, dtype=torch.long, device=indices.device)
        return self.decode_codes(codes, keep)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> ModelOutput:
        """Training pass: encode, quantize, decode keeping the first keep[b] tokens of image b."""
        q = self.encode(x)
        if keep is None:
            keep = torch.full((x.shape[0],), self.num_tokens, dtype=torch.long, device=x.device)
        recon = self.decode_codes(q.codes, keep)
        return ModelOutput(recon=recon, indices=q.indices, aux_loss=q.aux_loss, stats=q.stats)

    def _prefix_mask(self, keep: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, K, 1) bool, True where the token is kept."""
        positions = torch.arange(self.num_tokens, device=keep.device)
        return (positions[None, :] < keep[:, None]).unsqueeze(-1)
