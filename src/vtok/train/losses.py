"""Reconstruction losses. They live here, never in a model's state_dict."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.pixel import ssim

__all__ = ["ReconstructionLoss"]


class ReconstructionLoss(nn.Module):
    """weights.l1 * L1 + weights.l2 * MSE + weights.ssim * (1 - SSIM) + weights.perceptual * D_feat,
    on images in [0, 1]. Returns (total, {name: detached value})."""

    def __init__(
        self,
        l1: float = 1.0,
        l2: float = 0.0,
        ssim_weight: float = 0.2,
        perceptual: float = 0.0,
        backbone: nn.Module | None = None,
    ):
        super().__init__()
        self.l1, self.l2, self.ssim_weight, self.perceptual = l1, l2, ssim_weight, perceptual
        if perceptual > 0 and backbone is None:
            raise ValueError("a perceptual weight needs a backbone")
        self.backbone = backbone

    def forward(
        self, recon: torch.Tensor, target: torch.Tensor, perceptual_weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`perceptual_weights` (B,): how much each image's perceptual distance counts (the mean
        of the weighted distances is reported and added)."""
        recon, target = recon.float(), target.float()
        parts: dict[str, torch.Tensor] = {}
        total = recon.new_zeros(())
        # Pixel terms in float32 even under autocast: SSIM's E[x^2] - E[x]^2 is lost in bfloat16.
        # The perceptual backbone may run in the caller's autocast precision.
        with torch.autocast(recon.device.type, enabled=False):
            if self.l1:
                parts["l1"] = F.l1_loss(recon, target)
                total = total + self.l1 * parts["l1"]
            if self.l2:
                parts["l2"] = F.mse_loss(recon, target)
                total = total + self.l2 * parts["l2"]
            if self.ssim_weight:
                parts["ssim"] = ssim(recon, target).mean()
                total = total + self.ssim_weight * (1 - parts["ssim"])
        if self.perceptual:
            assert self.backbone is not None, "a perceptual weight needs a backbone"
            distance = self.backbone(recon, target).float()  # (B,)
            if perceptual_weights is not None:
                distance = distance * perceptual_weights.to(distance)
            parts["perceptual"] = distance.mean()
            total = total + self.perceptual * parts["perceptual"]
        return total, {k: float(v.detach()) for k, v in parts.items()}
