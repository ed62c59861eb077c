"""Semantic alignment: teach the first tokens what a vision backbone sees in the photo.

An auxiliary training loss in the manner of REPA (Yu et al. 2024, "Representation Alignment for
Generation", https://arxiv.org/abs/2410.06940: an MLP projection of a model's hidden states, negative
cosine similarity to a frozen encoder's features, weight 0.5 on a diffusion loss), VA-VAE's
vision-foundation loss (Yao et al. 2025, https://arxiv.org/abs/2501.01423) and GigaTok's alignment
(Xiong et al. 2025, https://arxiv.org/abs/2504.08736). A 1D tokenizer's tokens have no spatial
positions to match a backbone's feature map, so here the *prefix* is aligned with the photo's
pooled features: a small MLP reads the quantized codes of the first k tokens (the rest zeroed) and
predicts EfficientNet-Lite0's globally pooled stage features of the original (centred by their
running mean, so the cosine measures what tells photos apart, not the features' common direction).

The loss is the mean of 1 - cosine over prefix lengths k = 1, 2, 4, ..., ``max_prefix``: token 1
takes part in every term and token 16 in one, so the first tokens are the ones asked to carry
meaning. Gradients reach the encoder through the quantizer's straight-through codes.

Everything here (the backbone, the projection, its optimizer, the running mean) belongs to the
training task and is saved with checkpoints, never with the exported model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AlignmentSettings", "SemanticAlignment"]


@dataclass
class AlignmentSettings:
    weight: float = 0.0  # 0: off
    max_prefix: int = 16  # aligned prefixes: 1, 2, 4, ..., max_prefix
    lr: float = 1e-3  # the projection's own AdamW learning rate
    hidden: int = 512
    weights: str | None = None  # a local EfficientNet-Lite0 weight file; None: the installed one


class SemanticAlignment(nn.Module):
    """codes (B, K, D) + originals (B, 3, S, S) in [0, 1] -> (loss, {logged values})."""

    target_mean: torch.Tensor  # (C,) buffers
    seen: torch.Tensor

    def __init__(self, num_tokens: int, code_dim: int, settings: AlignmentSettings):
        super().__init__()
        from ..metrics.perceptual import EfficientNetLite0Features

        self.settings = settings
        self.backbone = EfficientNetLite0Features(settings.weights)
        self.prefixes = [k for k in (2**i for i in range(16)) if k <= min(settings.max_prefix, num_tokens)]
        channels = self.backbone.net._blocks[self.backbone.taps[-1]]._bn2.num_features
        self.project = nn.Sequential(  # the prefix's codes, flattened -> the pooled features
            nn.Linear(num_tokens * code_dim, settings.hidden),
            nn.GELU(),
            nn.Linear(settings.hidden, channels),
        )
        self.register_buffer("target_mean", torch.zeros(channels))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.optimizer = torch.optim.AdamW(self.project.parameters(), lr=settings.lr, weight_decay=0.0)

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, C) pooled last-stage features, centred by a running mean."""
        feats = self.backbone(images.float())[-1].float().mean(dim=(2, 3))  # (B, C)
        momentum = max(0.01, 1.0 / float(self.seen + 1))  # a plain mean at first, then an EMA
        self.target_mean.lerp_(feats.mean(0), momentum)
        self.seen += 1
        return feats - self.target_mean

    def forward(self, codes: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        target = self.targets(images)  # (B, C)
        b, n, d = codes.shape
        positions = torch.arange(n, device=codes.device)
        losses = []
        for k in self.prefixes:
            prefix = codes.float() * (positions < k)[None, :, None]  # (B, K, D), tokens >= k zeroed
            pred = self.project(prefix.reshape(b, n * d))  # (B, C)
            losses.append(1 - F.cosine_similarity(pred, target, dim=1).mean())
        loss = torch.stack(losses).mean()
        parts = {"align": float(loss.detach())}
        parts.update(
            {f"align_k{k}": float(v.detach()) for k, v in zip(self.prefixes, losses) if k in (1, max(self.prefixes))}
        )
        return loss, parts

    def step(self) -> None:
        """Step the projection on the gradients the training loss's backward left it, then clear them."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train_state(self) -> dict[str, Any]:
        return {
            "project": self.project.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "target_mean": self.target_mean,
            "seen": self.seen,
        }

    def load_train_state(self, state: dict[str, Any]) -> None:
        self.project.load_state_dict(state["project"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.target_mean.copy_(state["target_mean"])
        self.seen.copy_(state["seen"])
