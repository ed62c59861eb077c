"""The adversarial part of the tokenizer objective: a patch discriminator and its losses.

Everything here lives in training code and in ``checkpoint.pt``, never in a model's
``state_dict`` or exported weights.

- Discriminator: a PatchGAN (Isola et al., "Image-to-Image Translation with Conditional
  Adversarial Networks", CVPR 2017, https://arxiv.org/abs/1611.07004) as taming-transformers
  uses it, with GroupNorm instead of BatchNorm so that it behaves the same on one GPU, many, or
  a CPU at batch 8, and with the input blurred-downsampled rather than strided at the first
  layer's level (TiTok stage 2's discriminator does the same against checkerboard artefacts).
- Losses: hinge (Lim & Ye 2017) for both players, and LeCAM regularisation (Tseng et al.,
  "Regularizing Generative Adversarial Networks under Limited Data", CVPR 2021,
  https://arxiv.org/abs/2104.03310), which keeps the discriminator from over-fitting a small
  photo set.

Axis letters: B batch, C channels, H/W height/width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AdversarialSettings", "PatchDiscriminator", "AdversarialLoss"]


@dataclass
class AdversarialSettings:
    """The adversarial part of the objective (the ``gan`` section of a training config)."""

    weight: float = 0.0  # 0 switches the adversarial loss off; fixed, so it cannot blow up
    start_step: int = 0  # reconstruction-only before this step; the discriminator starts here too
    ramp_steps: int = 500  # the generator's adversarial weight grows linearly from 0 over these steps
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.9
    lecam: float = 0.001
    channels: int = 64
    layers: int = 3
    crop: int = 0  # the discriminator sees one random crop of this side per batch (0: whole images); cheaper on CPUs
    prefix_power: float = 1.0  # an image decoded from k of K tokens gets adversarial weight (k/K)**power


class _BlurDown(nn.Module):
    """[1, 3, 3, 1] binomial blur then stride 2: anti-aliased downsampling."""

    kernel: torch.Tensor

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum()).expand(channels, 1, 4, 4).clone(), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 2, 1, 2), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


class PatchDiscriminator(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 1, H/8, W/8) real/fake logits, one per overlapping patch."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(layers):
            out = min(channels * 2 ** (i + 1), 512)
            blocks += [
                _BlurDown(ch),
                nn.Conv2d(ch, out, 3, padding=1),
                nn.GroupNorm(32 if out % 32 == 0 else 1, out),
                nn.LeakyReLU(0.2),
            ]
            ch = out
        blocks += [nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(32 if ch % 32 == 0 else 1, ch), nn.LeakyReLU(0.2)]
        blocks.append(nn.Conv2d(ch, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AdversarialLoss(nn.Module):
    """Hinge losses with LeCAM regularisation.

    ``generator_loss(logits_fake, weights)`` -> scalar: -E[D(fake)], weighted per image.
    ``discriminator_loss(logits_real, logits_fake)`` -> (scalar, stats): hinge plus
    ``lecam * (||relu(D(real) - ema_fake)||^2 + ||relu(ema_real - D(fake))||^2)``; the two
    running means are buffers, saved with the checkpoint.
    """

    ema_real: torch.Tensor
    ema_fake: torch.Tensor

    def __init__(self, lecam: float = 0.001, ema_decay: float = 0.99):
        super().__init__()
        self.lecam, self.ema_decay = lecam, ema_decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    @staticmethod
    def generator_loss(logits_fake: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        per_image = -logits_fake.float().mean(dim=(1, 2, 3))  # (B,)
        if weights is None:
            return per_image.mean()
        return (per_image * weights).sum() / weights.sum().clamp(min=1e-8)

    def discriminator_loss(
        self, logits_real: torch.Tensor, logits_fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        real, fake = logits_real.float(), logits_fake.float()
        hinge = F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
        loss = hinge
        if self.lecam > 0:
            reg = F.relu(real - self.ema_fake).pow(2).mean() + F.relu(self.ema_real - fake).pow(2).mean()
            loss = loss + self.lecam * reg
        with torch.no_grad():
            self.ema_real.lerp_(real.mean(), 1 - self.ema_decay)
            self.ema_fake.lerp_(fake.mean(), 1 - self.ema_decay)
        stats = {
            "d_loss": float(hinge.detach()),
            "d_real": float(real.mean().detach()),
            "d_fake": float(fake.mean().detach()),
        }
        return loss, stats
