"""An ordered 1D tokenizer: any prefix of its token sequence decodes to an image.

Architecture in the spirit of TiTok (Yu et al. "An Image is Worth 32 Tokens for
Reconstruction and Generation", NeurIPS 2024, https://arxiv.org/abs/2406.07550): grid
features and K learned latent tokens go through a transformer encoder, the latent tokens are
quantized, and a transformer decoder rebuilds the grid from them. Trained with nested dropout
/ tail-token drop (Rippel et al. 2014; One-D-Piece, https://arxiv.org/abs/2501.10064;
FlexTok, https://arxiv.org/abs/2502.13967), so the first tokens carry the gist.

Two vtok choices, both for training on a CPU:
- a convolutional stem brings the image to a small G x G feature grid before any attention;
- a linear shortcut grid -> tokens (and tokens -> grid in the decoder), initialised with the
  zigzag 2D-DCT bases, gives token i the i-th coarsest frequency from step 0. The transformers
  start as zero residuals on top of it. Without such a prior a TiTok-style model trained from
  scratch stalls near the mean-colour baseline (TiTok itself needed proxy codes, see
  1d-tokenizer issue #27).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .base import ConvTrunkConfig, TokenizerModel, check_int
from .blocks import ConvDecoder, ConvEncoder, Transformer, zigzag_dct_basis

__all__ = ["Ordered1DConfig", "Ordered1DTokenizer"]


@dataclass
class Ordered1DConfig(ConvTrunkConfig):
    width: int = 256  # 1..8192
    encoder_depth: int = 4  # 0..256
    decoder_depth: int = 4  # 0..256
    heads: int = 4  # 1..width, dividing width
    num_tokens: int = 64  # 1..4096

    def _check_architecture(self) -> None:
        check_int("width", self.width, 1, 8192)
        check_int("encoder_depth", self.encoder_depth, 0, 256)
        check_int("decoder_depth", self.decoder_depth, 0, 256)
        check_int("heads", self.heads, 1, self.width)
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}")
        check_int("num_tokens", self.num_tokens, 1, 4096)

    def estimated_parameters(self) -> int:
        positions, k, w, feat = self.grid**2, self.num_tokens, self.width, self.channels[-1]
        transformers = (self.encoder_depth + self.decoder_depth) * (12 * w * w + 13 * w) + 4 * w
        mixing = 2 * positions * k  # grid -> tokens and tokens -> grid
        embeddings = 4 * (feat * w) + 3 * w + feat + 2 * positions * w + 2 * k * w + w
        return super().estimated_parameters() + transformers + mixing + embeddings


class Ordered1DTokenizer(TokenizerModel):
    architecture = "ordered1d"
    encoder_parts = (
        "stem",
        "grid_to_tokens",
        "grid_embed",
        "grid_pos",
        "latent_embed",
        "latent_pos",
        "encoder",
        "to_code",
        "shortcut_to_code",
    )

    def __init__(self, config: Ordered1DConfig):
        super().__init__()
        c = config
        self._setup_trunk(c)
        self.num_tokens = c.num_tokens
        positions = self.grid * self.grid
        feat = c.channels[-1]
        d = self.quantizer.dim
        basis = zigzag_dct_basis(self.grid, c.num_tokens)  # (K, P)

        # Encoder
        self.stem = ConvEncoder(c.patch, c.channels, c.blocks_per_stage, c.norm)
        self.grid_to_tokens = nn.Linear(positions, c.num_tokens, bias=False)  # mixes P -> K
        self.grid_to_tokens.weight.data.copy_(basis)
        self.grid_embed = nn.Linear(feat, c.width)
        self.grid_pos = nn.Parameter(torch.randn(positions, c.width) * 0.02)
        self.latent_embed = nn.Linear(feat, c.width)
        self.latent_pos = nn.Parameter(torch.randn(c.num_tokens, c.width) * 0.02)
        self.encoder = Transformer(c.width, c.encoder_depth, c.heads)
        self.to_code = nn.Linear(c.width, d)
        self.shortcut_to_code = nn.Linear(feat, d)

        # Decoder
        self.tokens_to_grid = nn.Linear(c.num_tokens, positions, bias=False)  # mixes K -> P
        self.tokens_to_grid.weight.data.copy_(basis.t())
        self.shortcut_to_grid = nn.Linear(d, feat)
        self.code_embed = nn.Linear(d, c.width)
        self.mask_token = nn.Parameter(torch.zeros(c.width))
        self.dec_latent_pos = nn.Parameter(torch.randn(c.num_tokens, c.width) * 0.02)
        self.query_embed = nn.Linear(feat, c.width)
        self.dec_grid_pos = nn.Parameter(torch.randn(positions, c.width) * 0.02)
        self.decoder = Transformer(c.width, c.decoder_depth, c.heads)
        self.to_grid = nn.Linear(c.width, feat)
        self.head = ConvDecoder(
            c.patch, c.channels, c.decoder_blocks_per_stage or c.blocks_per_stage, c.norm, c.refine, c.deblock
        )

        # The transformers start as zero residuals on top of the DCT shortcut.
        for layer in (self.to_code, self.to_grid):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def grown_from(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Also grows deeper transformers (``encoder_depth``, ``decoder_depth``): the blocks past
        the ones `weights` has start with their attention and MLP outputs at zero, residuals that
        add nothing until trained (the blocks feed a final LayerNorm, which they leave as it was)."""
        out = super().grown_from(weights)
        for name, transformer in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, block in enumerate(transformer.blocks):
                prefix = f"{name}.blocks.{i}."
                if any(key.startswith(prefix) for key in weights):
                    continue
                for key, value in block.state_dict().items():
                    zero = key.startswith(("attn.proj.", "mlp.2."))
                    out[prefix + key] = torch.zeros_like(value) if zero else value.clone()
        return out

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)  # (B, C, G, G)
        f = f.flatten(2).transpose(1, 2)  # (B, P, C)
        coarse = self.grid_to_tokens(f.transpose(1, 2)).transpose(1, 2)  # (B, K, C)
        seq = torch.cat([self.grid_embed(f) + self.grid_pos, self.latent_embed(coarse) + self.latent_pos], dim=1)
        h = self.encoder(seq)[:, -self.num_tokens :]  # (B, K, E)
        return self.to_code(h) + self.shortcut_to_code(coarse)  # (B, K, D)

    def decode_codes(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        kept = self._prefix_mask(keep)  # (B, K, 1)
        codes = codes * kept
        coarse = self.shortcut_to_grid(self.tokens_to_grid(codes.transpose(1, 2)).transpose(1, 2))  # (B, P, C)
        latents = torch.where(kept, self.code_embed(codes), self.mask_token) + self.dec_latent_pos
        seq = torch.cat([self.query_embed(coarse) + self.dec_grid_pos, latents], dim=1)
        h = self.decoder(seq)[:, : self.grid * self.grid]  # (B, P, E)
        grid = self.to_grid(h) + coarse  # (B, P, C)
        grid = grid.transpose(1, 2).reshape(grid.shape[0], -1, self.grid, self.grid)  # (B, C, G, G)
        return self.head(grid)
