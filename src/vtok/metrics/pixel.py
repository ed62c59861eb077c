"""Pixel metrics on images in [0, 1], shape (B, C, H, W); one value per image.

SSIM follows Wang et al. "Image Quality Assessment: From Error Visibility to Structural
Similarity", IEEE TIP 2004: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, computed
per channel over the valid region and averaged. It matches
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`` (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "ms_ssim", "MS_SSIM_MIN_SIDE"]


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x2 in [0, 1] -> (B,) PSNR in dB; +inf where the images are identical."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)  # 1/0 -> inf, which is the honest answer


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(B, C, H, W) x2 in [0, 1] -> (B,) mean SSIM. Differentiable. Images smaller than the
    window use a window as large as the image allows."""
    x, y = x.float(), y.float()
    window = min(window, x.shape[-1], x.shape[-2])
    if window % 2 == 0:
        window -= 1
    c = x.shape[1]
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    kernel_h = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    kernel_v = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, valid region only
        return F.conv2d(F.conv2d(t, kernel_h, groups=c), kernel_v, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIDE = (11 - 1) * 2 ** (len(_MS_WEIGHTS) - 1) + 1  # 161: every scale must fit the 11x11 window


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5):
    c = x.shape[1]
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    kh, kv = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, kh, groups=c), kv, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Multi-scale SSIM (Wang, Simoncelli, Bovik 2003), 5 scales; None when an image side is
    below MS_SSIM_MIN_SIDE (161 px) and the coarsest scale would be smaller than the window."""
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return None
    x, y = x.float(), y.float()
    values = []
    for i, w in enumerate(_MS_WEIGHTS):
        s, cs = _ssim_parts(x, y)
        values.append((s if i == len(_MS_WEIGHTS) - 1 else cs).clamp_min(1e-6) ** w)
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.stack(values).prod(0)
