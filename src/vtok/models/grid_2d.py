"""A convolutional grid tokenizer: one token per cell of a G x G feature grid.

The VQGAN-style baseline (Esser, Rombach, Ommer. "Taming Transformers for High-Resolution
Image Synthesis", CVPR 2021, https://arxiv.org/abs/2012.09841) without its adversarial loss:
tokens are in raster order, so a prefix decodes the top rows and leaves the rest to a
learned mask code. It exists as the reference users know, not for variable length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .base import ConvTrunkConfig, TokenizerModel
from .blocks import ConvDecoder, ConvEncoder

__all__ = ["Grid2DConfig", "Grid2DTokenizer"]

MAX_TOKENS = 4096  # as for the 1D tokenizers


@dataclass
class Grid2DConfig(ConvTrunkConfig):
    """The shared trunk settings are all there is: K is the number of grid cells."""

    def _check_architecture(self) -> None:
        if self.grid**2 > MAX_TOKENS:
            raise ConfigError(f"a {self.grid}x{self.grid} grid makes {self.grid**2} tokens, over {MAX_TOKENS}")


class Grid2DTokenizer(TokenizerModel):
    architecture = "grid2d"
    encoder_parts = ("stem", "to_code")

    def __init__(self, config: Grid2DConfig):
        super().__init__()
        c = config
        self._setup_trunk(c)
        self.num_tokens = self.grid * self.grid
        d = self.quantizer.dim
        self.stem = ConvEncoder(c.patch, c.channels, c.blocks_per_stage, c.norm)
        self.to_code = nn.Conv2d(c.channels[-1], d, 1)
        self.mask_code = nn.Parameter(torch.zeros(d))
        self.from_code = nn.Conv2d(d, c.channels[-1], 1)
        self.head = ConvDecoder(
            c.patch, c.channels, c.decoder_blocks_per_stage or c.blocks_per_stage, c.norm, c.refine, c.deblock
        )

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        z = self.to_code(self.stem(x))  # (B, D, G, G)
        return z.flatten(2).transpose(1, 2)  # (B, K, D), raster order

    def decode_codes(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        codes = torch.where(self._prefix_mask(keep), codes, self.mask_code)  # (B, K, D)
        grid = codes.transpose(1, 2).reshape(codes.shape[0], -1, self.grid, self.grid)  # (B, D, G, G)
        return self.head(self.from_code(grid))
