"""A convolutional grid tokenizer: one token per cell of a G x G feature grid.

The VQGAN-style baseline (Esser, Rombach, Ommer. "Taming Transformers for High-Resolution
Image Synthesis", CVPR 2021, https://arxiv.org/abs/2012.09841) without its adversarial loss:
tokens are in raster order, so a prefix decodes the top rows and leaves the rest to a
learned mask code. It exists as the reference users know, not for variable length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .base import TokenizerModel, build_quantizer
from .blocks import ConvDecoder, ConvEncoder

__all__ = ["Grid2DConfig", "Grid2DTokenizer"]


@dataclass
class Grid2DConfig:
    image_size: int = 128
    patch: int = 4
    channels: tuple[int, ...] = (64, 128, 256)
    blocks_per_stage: int = 1
    quantizer: str = "fsq"
    fsq_levels: tuple[int, ...] = field(default_factory=lambda: (8, 8, 8, 5, 5, 5))
    vq_codebook_size: int = 4096
    vq_dim: int = 8


class Grid2DTokenizer(TokenizerModel):
    architecture = "grid2d"

    def __init__(self, config: Grid2DConfig):
        super().__init__()
        c = config
        factor = c.patch * 2 ** (len(c.channels) - 1)
        if c.image_size % factor:
            raise ValueError(f"image_size {c.image_size} must be a multiple of {factor}")
        self.config = c
        self.image_size = c.image_size
        self.grid = c.image_size // factor
        self.num_tokens = self.grid * self.grid
        self.quantizer = build_quantizer(c.quantizer, c.fsq_levels, c.vq_codebook_size, c.vq_dim)
        d = self.quantizer.dim
        self.stem = ConvEncoder(c.patch, c.channels, c.blocks_per_stage)
        self.to_code = nn.Conv2d(c.channels[-1], d, 1)
        self.mask_code = nn.Parameter(torch.zeros(d))
        self.from_code = nn.Conv2d(d, c.channels[-1], 1)
        self.head = ConvDecoder(c.patch, c.channels, c.blocks_per_stage)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        z = self.to_code(self.stem(x))  # (B, D, G, G)
        return z.flatten(2).transpose(1, 2)  # (B, K, D), raster order

    def decode_codes(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        codes = torch.where(self._prefix_mask(keep), codes, self.mask_code)  # (B, K, D)
        grid = codes.transpose(1, 2).reshape(codes.shape[0], -1, self.grid, self.grid)  # (B, D, G, G)
        return self.head(self.from_code(grid))
