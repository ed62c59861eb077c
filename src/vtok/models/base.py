"""The uniform model API shared by every tokenizer architecture.

A model maps images in [-1, 1] of shape (B, 3, S, S), S = ``image_size``, to ``num_tokens``
(K) discrete tokens and back. Decoding accepts any prefix 1 <= k <= K: positions past k are
replaced by a learned mask embedding, exactly as during nested-dropout training.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..quantizers import Quantizer, build_quantizer
from .blocks import NORMS

__all__ = ["ConvTrunkConfig", "ModelOutput", "TokenizerModel", "MAX_PARAMETERS", "check_int"]

MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32: far past any vtok model, short of a hostile config's ask
MAX_GRID = 256  # feature-grid side: attention over G*G positions, DCT bases of (K, G*G)


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """ConfigError unless `value` is an integer (not a bool, not a float) in low..high."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ConfigError(f"{name} must lie in {low}..{high}, got {value}")


def _res_block_parameters(width: int) -> int:
    return 18 * width * width + 6 * width  # two 3x3 convolutions and two norms


@dataclass
class ConvTrunkConfig:
    """What every architecture shares: resolution, the convolutional trunk and the quantizer.

    A config comes from a config.json as often as from code, and a tampered or hostile one must
    not reach a constructor that divides by zero or allocates terabytes: :meth:`validate` checks
    every value against the ranges below (and the architectures' own) before anything is built.
    """

    image_size: int = 128  # 8..4096, a multiple of patch * 2**(len(channels) - 1)
    patch: int = 4  # 1..64
    channels: tuple[int, ...] = (64, 128, 256)  # 1..8 stages, each 1..4096 wide
    blocks_per_stage: int = 1  # 0..64
    decoder_blocks_per_stage: int = 0  # 0..64; 0: as blocks_per_stage; more gives the decoder room for detail
    norm: str = "group"  # "group" (the first models) or "channel" (keeps flat colours: see blocks.ChannelNorm)
    refine: int = 0  # 0..256; width of a residual refinement on the decoded pixels (blocks.PixelRefine); 0: none
    # 0..0.5: a fixed filter across the pixel shuffle's cell edges (blocks.CellDeblock), no weights; 0: none
    deblock: float = 0.0
    quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "fsq", "levels": [8, 8, 8, 5, 5, 5]})

    def validate(self) -> None:
        """ConfigError for a value out of range or a model over MAX_PARAMETERS (estimated from
        the config alone, before any allocation)."""
        self._check_trunk()
        self._check_architecture()
        estimate = self.estimated_parameters()
        if estimate > MAX_PARAMETERS:
            raise ConfigError(
                f"this config makes a model of about {estimate:.3g} parameters, over {MAX_PARAMETERS:.0e}"
            )

    def _check_trunk(self) -> None:
        check_int("image_size", self.image_size, 8, 4096)
        check_int("patch", self.patch, 1, 64)
        if not isinstance(self.channels, (list, tuple)) or not 1 <= len(self.channels) <= 8:
            raise ConfigError(f"channels must be a list of 1 to 8 stage widths, got {self.channels!r}")
        for width in self.channels:
            check_int("each of channels", width, 1, 4096)
        check_int("blocks_per_stage", self.blocks_per_stage, 0, 64)
        check_int("decoder_blocks_per_stage", self.decoder_blocks_per_stage, 0, 64)
        check_int("refine", self.refine, 0, 256)
        if isinstance(self.deblock, bool) or not isinstance(self.deblock, (int, float)) or not 0 <= self.deblock <= 0.5:
            raise ConfigError(f"deblock must be a number in 0..0.5, got {self.deblock!r}")
        if self.deblock and self.patch < 2:
            raise ConfigError("deblock needs patch >= 2 (with patch 1 there are no cells to deblock)")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not isinstance(self.quantizer, dict) or not isinstance(self.quantizer.get("name"), str):
            raise ConfigError(f"quantizer must be a mapping with a 'name', got {self.quantizer!r}")
        factor = self.patch * 2 ** (len(self.channels) - 1)
        if self.image_size % factor:
            raise ConfigError(f"image_size {self.image_size} must be a multiple of patch * 2**(stages - 1) = {factor}")
        if self.image_size // factor > MAX_GRID:
            raise ConfigError(f"the feature grid ({self.image_size // factor} cells a side) is over {MAX_GRID}")

    def _check_architecture(self) -> None:
        """The ranges of an architecture's own values (none for the shared trunk)."""

    @property
    def grid(self) -> int:
        """Side of the feature grid the trunk brings an image to."""
        return self.image_size // (self.patch * 2 ** (len(self.channels) - 1))

    def estimated_parameters(self) -> int:
        """Parameters of the encoder and decoder trunks, computed from the config (the quantizer's
        few are left out): cheap, so that a config can be refused before it is built."""
        channels, pixels = list(self.channels), 3 * self.patch**2
        decoder_blocks = self.decoder_blocks_per_stage or self.blocks_per_stage
        downs = sum(9 * a * b + b for a, b in zip(channels, channels[1:]))
        ups = sum(9 * a * b + b for a, b in zip(channels[1:], channels))
        encoder = pixels * channels[0] + channels[0] + downs + 2 * channels[-1]
        decoder = ups + 2 * channels[0] + 9 * channels[0] * pixels + pixels
        blocks = sum(_res_block_parameters(w) for w in channels)
        refine = 55 * self.refine + 3 if self.refine else 0
        return encoder + decoder + refine + (self.blocks_per_stage + decoder_blocks) * blocks


@dataclass
class ModelOutput:
    """recon: (B, 3, S, S) in about [-1, 1]; indices: (B, K); aux_loss: scalar; codes: (B, K, D),
    the quantized codes with the quantizer's straight-through gradient (for auxiliary losses);
    latents: (B, K, D), the encoder's continuous latents before quantization."""

    recon: torch.Tensor
    indices: torch.Tensor
    aux_loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    codes: torch.Tensor | None = None
    latents: torch.Tensor | None = None


def _parameters(part) -> list[nn.Parameter]:
    """A token part's parameters: a submodule's, or the part itself when it is a bare parameter."""
    if isinstance(part, nn.Module):
        return list(part.parameters())
    return [part] if isinstance(part, nn.Parameter) else []


class TokenizerModel(nn.Module):
    """Base class. Subclasses set image_size, num_tokens, quantizer and implement
    ``encode_latents`` and ``decode_codes``."""

    architecture: str
    image_size: int
    num_tokens: int
    quantizer: Quantizer
    # The submodules and parameters that turn pixels into tokens (the quantizer besides).
    encoder_parts: tuple[str, ...] = ()
    encoder_frozen: bool = False

    def _setup_trunk(self, c: ConvTrunkConfig) -> None:
        """Set config, image_size, grid (the feature grid's side) and quantizer from `c`, once `c`
        is validated (a model built without the registry gets the same checks)."""
        c.validate()
        self.config = c
        self.image_size = c.image_size
        self.grid = c.grid
        self.quantizer = build_quantizer(dict(c.quantizer))

    def grown_from(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`weights` (a state_dict of a smaller model of this architecture) with the parts this
        model adds filled in as the identity, so it decodes exactly as they did until trained (the
        trainer's model.init_from); other missing or misshapen parts are left for the strict
        check to name. Grows a pixel refinement (``refine``); an architecture may grow more."""
        out = dict(weights)
        for key, value in self.state_dict().items():
            if key.startswith("head.refine.") and key not in out:  # its last convolution starts at zero
                out[key] = value
        return out

    @property
    def token_parts(self) -> tuple[str, ...]:
        """Names of the submodules and parameters that decide an image's tokens."""
        return (*self.encoder_parts, "quantizer")

    def freeze_encoder(self) -> None:
        """Train the decoder alone: the encoder and quantizer keep their weights and a VQ codebook
        its entries, so every image keeps exactly its tokens (a token prior or LM made for them
        still fits)."""
        self.encoder_frozen = True
        for name in self.token_parts:
            getattr(self, name).requires_grad_(False)
        self.train(self.training)

    def freeze_decoder(self) -> None:
        """Train the encoder alone: every part that turns tokens into pixels keeps its weights, so
        the encoder learns to say more through the decoder it has (encoder catch-up)."""
        token_params = {id(p) for name in self.token_parts for p in _parameters(getattr(self, name))}
        for p in self.parameters():
            if id(p) not in token_params:
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder_frozen:  # a frozen VQ must not move its codebook in training mode
            for part in (getattr(self, name) for name in self.token_parts):
                if isinstance(part, nn.Module):
                    part.eval()
        return self

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
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            z = self.encode_latents(x)  # (B, K, D)
            q = self.quantizer(z)
        if keep is None:
            keep = torch.full((x.shape[0],), self.num_tokens, dtype=torch.long, device=x.device)
        recon = self.decode_codes(q.codes, keep)
        return ModelOutput(recon=recon, indices=q.indices, aux_loss=q.aux_loss, stats=q.stats, codes=q.codes, latents=z)

    def _prefix_mask(self, keep: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, K, 1) bool, True where the token is kept."""
        positions = torch.arange(self.num_tokens, device=keep.device)
        return (positions[None, :] < keep[:, None]).unsqueeze(-1)
