"""Layers shared by the tokenizer architectures.

Axis letters: B batch, C channels, H/W height/width, G grid side, P = G*G grid positions,
T sequence length, E transformer width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChannelNorm",
    "ConvEncoder",
    "ConvDecoder",
    "NORMS",
    "PixelRefine",
    "Transformer",
    "make_norm",
    "zigzag_dct_basis",
]


class ChannelNorm(nn.GroupNorm):
    """LayerNorm over the channels of each position alone (ConvNeXt's LayerNorm2d).

    Unlike GroupNorm it keeps every position's absolute level: a group norm with one or a few
    channels per group is an instance norm, which subtracts each channel's spatial mean, so a
    flat-coloured image leaves nothing but the layer's bias (the cause of the shifted colours
    of vtok's first models). Subclassing GroupNorm keeps the parameter names and shapes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


NORMS = ("group", "channel")


def make_norm(kind: str, channels: int) -> nn.GroupNorm:
    """'group': GroupNorm with up to 32 groups; 'channel': :class:`ChannelNorm`."""
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "channel":
        return ChannelNorm(1, channels)
    raise ValueError(f"unknown norm {kind!r}; choose one of: {', '.join(NORMS)}")


class ResBlock(nn.Module):
    def __init__(self, channels: int, norm: str = "group"):
        super().__init__()
        self.body = nn.Sequential(
            make_norm(norm, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            make_norm(norm, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConvEncoder(nn.Module):
    """(B, 3, H, W) -> (B, channels[-1], H/f, W/f) with f = patch * 2**(len(channels)-1).

    The first step is a space-to-depth patchify, not a full-resolution convolution: on a CPU
    the full-resolution layers would cost more than the rest of the model together.
    """

    def __init__(self, patch: int, channels: Sequence[int], blocks_per_stage: int, norm: str = "group"):
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(patch), nn.Conv2d(3 * patch * patch, channels[0], 1)]
        for i, ch in enumerate(channels):
            layers += [ResBlock(ch, norm) for _ in range(blocks_per_stage)]
            if i + 1 < len(channels):
                layers.append(nn.Conv2d(ch, channels[i + 1], 3, stride=2, padding=1))
        layers += [make_norm(norm, channels[-1]), nn.SiLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PixelRefine(nn.Module):
    """A residual 3x3 -> SiLU -> 3x3 on the decoded pixels: (B, 3, H, W) -> (B, 3, H, W).

    The decoder's last step, a pixel shuffle, writes every patch x patch block from one feature
    position alone, and a sharp decoder leaves a faint grid at the blocks' edges; this sees across
    them. Its last convolution starts at zero, so the block is the identity until trained and
    weights made without it warm-start exactly. Replicate padding: no dark frame at the border."""

    def __init__(self, width: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, width, 3, padding=1, padding_mode="replicate")
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1, padding_mode="replicate")
        with torch.no_grad():
            for tensor in self.conv_out.parameters():  # weight and bias
                tensor.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_out(F.silu(self.conv_in(x)))


class CellDeblock(nn.Module):
    """A fixed deblocking filter across the edges of the pixel shuffle's patch x patch cells.

    A pixel shuffle paints every cell from one feature position, and the cells' edges show as a
    faint grid (``metrics.quality.block_edge_ratio``: gradients across cell edges 1.3-1.4x those
    inside cells on the default model, 1.01x in photos). As video codecs' in-loop deblocking filters
    do at their block edges (H.264's, in its simplest form), the two pixels either side of each edge
    are blended with their neighbours across it, [w, 1 - 2w, w], columns first, then rows. No weights:
    it adds nothing to a state_dict, so weights made without it load as they are. On the default
    model w = 0.25 brings the ratio to 1.01-1.04 and raises PSNR by 0.00-0.03 dB (measured on the
    source-held-out photos, docs/measurements.md)."""

    def __init__(self, patch: int, weight: float):
        super().__init__()
        self.patch, self.weight = patch, float(weight)

    def _along_width(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p, wt = self.patch, self.weight
        cells = x.reshape(b, c, h, w // p, p)  # (B, C, H, cells, p)
        p1, p0 = cells[..., :-1, p - 2], cells[..., :-1, p - 1]  # the two columns before each inner edge
        q0, q1 = cells[..., 1:, 0], cells[..., 1:, 1]  # and the two after it
        left = wt * p1 + (1 - 2 * wt) * p0 + wt * q0
        right = wt * p0 + (1 - 2 * wt) * q0 + wt * q1
        out = cells.clone()
        out[..., :-1, p - 1] = left
        out[..., 1:, 0] = right
        return out.reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight == 0 or self.patch < 2:
            return x
        x = self._along_width(x)
        return self._along_width(x.transpose(2, 3)).transpose(2, 3)

    def extra_repr(self) -> str:
        return f"patch={self.patch}, weight={self.weight}"


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: (B, channels[-1], G, G) -> (B, 3, H, W); with `refine` > 0
    a :class:`PixelRefine` of that width at the end, and with `deblock` > 0 a :class:`CellDeblock`
    after that."""

    def __init__(
        self,
        patch: int,
        channels: Sequence[int],
        blocks_per_stage: int,
        norm: str = "group",
        refine: int = 0,
        deblock: float = 0.0,
    ):
        super().__init__()
        rev = list(channels)[::-1]
        layers: list[nn.Module] = []
        for i, ch in enumerate(rev):
            layers += [ResBlock(ch, norm) for _ in range(blocks_per_stage)]
            if i + 1 < len(rev):
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, rev[i + 1], 3, padding=1)]
        layers += [
            make_norm(norm, rev[-1]),
            nn.SiLU(),
            nn.Conv2d(rev[-1], 3 * patch * patch, 3, padding=1),
            nn.PixelShuffle(patch),
        ]
        self.net = nn.Sequential(*layers)
        self.refine = PixelRefine(refine) if refine else None
        self.deblock = CellDeblock(patch, deblock) if deblock else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(x)
        x = self.refine(x) if self.refine is not None else x
        return self.deblock(x) if self.deblock is not None else x


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, E/heads)
        return self.proj(y.transpose(1, 2).reshape(b, t, e))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Pre-norm transformer over (B, T, E), ending in a LayerNorm."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def zigzag_dct_basis(grid: int, count: int) -> torch.Tensor:
    """The first `count` orthonormal 2D DCT-II bases of a grid x grid field, lowest frequency
    first: (count, grid*grid). Rows past grid*grid (more tokens than positions) are zero.

    Used to initialise the linear maps between the feature grid and the 1D token sequence, so
    that token i starts as the i-th coarsest frequency: an ordering prior without which a
    TiTok-style model trained from scratch can stall (see docs/design.md).
    """
    n = torch.arange(grid, dtype=torch.float64)
    freqs = torch.arange(grid, dtype=torch.float64)
    dct = torch.cos(math.pi * (n[None, :] + 0.5) * freqs[:, None] / grid)  # (freq, position)
    dct[0] *= math.sqrt(1.0 / grid)
    dct[1:] *= math.sqrt(2.0 / grid)
    order = sorted(
        ((u, v) for u in range(grid) for v in range(grid)),
        key=lambda uv: (uv[0] + uv[1], uv[0] if (uv[0] + uv[1]) % 2 else uv[1]),
    )
    basis = torch.zeros(count, grid * grid, dtype=torch.float64)
    for i, (u, v) in enumerate(order[:count]):
        basis[i] = torch.outer(dct[u], dct[v]).flatten()
    return basis.float()
