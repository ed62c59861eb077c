"""LPIPS, the published learned perceptual metric, from weight files the user gives.

Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", CVPR 2018, https://arxiv.org/abs/1801.03924.

Two backbones, each in torchvision's ``features.N`` layout so its ImageNet file loads as is:
VGG16 (relu1_2 ... relu5_3) and AlexNet (relu1 ... relu5). The linear calibration layers come
from the authors' ``vgg.pth`` / ``alex.pth`` (keys ``lin0.model.1.weight`` ... ``lin4``), as
``.pth`` or ``.safetensors``. The values then are LPIPS proper, comparable with published numbers
(up to resizing: vtok scores images at the model's resolution).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelLoadError
from .weights import load_state_dict_file, load_strict

__all__ = ["LPIPS", "AlexNetFeatures", "VGG16Features", "LPIPS_NETS"]


class _TorchvisionTrunk(nn.Module):
    """A frozen conv trunk built from a layout list: ints are 3x3 convs (or (out, kernel, stride,
    padding) tuples), "M" max pools; returns the ReLU outputs at `taps`."""

    layout: tuple
    taps: tuple[int, ...]
    pool: tuple[int, int]
    channels: tuple[int, ...]
    display_name: str

    def __init__(self, weights: str | Path):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in self.layout:
            if v == "M":
                layers.append(nn.MaxPool2d(*self.pool))
                continue
            out, kernel, stride, padding = v if isinstance(v, tuple) else (v, 3, 1, 1)
            layers += [nn.Conv2d(channels, out, kernel, stride, padding), nn.ReLU(inplace=False)]
            channels = out
        self.features = nn.Sequential(*layers)
        state = {
            k.removeprefix("features."): v
            for k, v in load_state_dict_file(weights).items()
            if not k.startswith("classifier.")
        }
        load_strict(self.features, state, self.display_name, weights)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
            if i >= self.taps[-1]:
                break
        return out


class VGG16Features(_TorchvisionTrunk):
    """VGG16's trunk (torchvision ``vgg16().features``): relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

    layout = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    taps = (3, 8, 15, 22, 29)
    pool = (2, 2)
    channels = (64, 128, 256, 512, 512)
    display_name = "VGG16"


class AlexNetFeatures(_TorchvisionTrunk):
    """AlexNet's trunk (torchvision ``alexnet().features``): relu1 ... relu5."""

    layout = ((64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
    taps = (1, 4, 7, 9, 11)
    pool = (3, 2)
    channels = (64, 192, 384, 256, 256)
    display_name = "AlexNet"


LPIPS_NETS: dict[str, type[_TorchvisionTrunk]] = {"vgg": VGG16Features, "alex": AlexNetFeatures}


class LPIPS(nn.Module):
    """LPIPS: (B, 3, H, W) x2 in [0, 1] -> (B,), 0 for identical images, lower is more alike.

    ``backbone_weights``: torchvision's ImageNet VGG16 or AlexNet file; ``lpips_weights``: the
    authors' linear layers for the same net. ``features``/``from_features`` let a caller compute
    a reference's features once and compare many candidates against them.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, backbone_weights: str | Path, lpips_weights: str | Path, net: str = "vgg"):
        super().__init__()
        if net not in LPIPS_NETS:
            raise ConfigError(f"unknown LPIPS net {net!r}; known: {', '.join(LPIPS_NETS)}")
        self.net = net
        self.backbone = LPIPS_NETS[net](backbone_weights)
        lins = [nn.Conv2d(c, 1, 1, bias=False) for c in self.backbone.channels]
        self.lins = nn.ModuleList(lins)
        state = load_state_dict_file(lpips_weights)
        try:
            for i, lin in enumerate(lins):
                lin.weight.data.copy_(state[f"lin{i}.model.1.weight"])
        except (KeyError, RuntimeError) as e:
            raise ModelLoadError(
                f"{lpips_weights}: not LPIPS-{net} linear weights (missing or mismatched {str(e)[:120]})"
            ) from e
        # The authors' input scaling layer, applied to images in [-1, 1].
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-unit-normalised activations of the five taps."""
        feats = self.backbone(((x.float() * 2 - 1) - self.shift) / self.scale)
        return [f / (f.norm(dim=1, keepdim=True) + 1e-10) for f in feats]

    def from_features(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        total = fx[0].new_zeros(fx[0].shape[0])
        for a, b, lin in zip(fx, fy, self.lins):
            total = total + lin((a - b).pow(2)).mean((1, 2, 3))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(x), self.features(y))
