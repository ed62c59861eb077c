"""LPIPS (VGG, AlexNet) and FID Inception: loading user weight files the tests create."""

import pytest
import torch
import torch.nn.functional as F
from conftest import torchvision_alexnet_trunk, torchvision_vgg16_trunk

import vtok
from vtok.bench.run import frechet_distance
from vtok.metrics.inception import InceptionV3Features
from vtok.metrics.lpips import LPIPS, AlexNetFeatures, VGG16Features


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_backbones_match_torchvisions_published_sizes():
    # torchvision: vgg16 has 138,357,544 parameters and alexnet 61,100,840; their classifiers
    # (25088-4096-4096-1000 and 9216-4096-4096-1000) account for all but the trunk's.
    assert _count(torchvision_vgg16_trunk()) == 138_357_544 - 123_642_856
    assert _count(torchvision_alexnet_trunk()) == 61_100_840 - 58_631_144
    # Inception-v3: 27,161,264 in torchvision, minus AuxLogits (3,326,696) and the fc (2,049,000).
    assert _count(InceptionV3Features()) == 27_161_264 - 3_326_696 - 2_049_000


def _reference_lpips(trunk: torch.nn.Sequential, taps, lins, x, y):
    """LPIPS written from the paper: scale, tap, unit-normalise over channels, weight, average."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps_of(img):
        h, out = (img * 2 - 1 - shift) / scale, []
        for i, layer in enumerate(trunk):
            h = layer(h)
            if i in taps:
                out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        return out

    total = torch.zeros(x.shape[0])
    for a, b, w in zip(taps_of(x), taps_of(y), lins):
        total += ((a - b) ** 2 * w.view(1, -1, 1, 1)).sum(1).mean((1, 2))
    return total


@pytest.mark.slow
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_loads_user_files_and_equals_the_formula(metric_weight_files, net):
    from safetensors.torch import load_file

    metric = LPIPS(metric_weight_files[net], metric_weight_files[f"lpips_{net}"], net=net)
    trunk = torchvision_vgg16_trunk() if net == "vgg" else torchvision_alexnet_trunk()
    state = torch.load(metric_weight_files[net], weights_only=True)
    trunk.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
    lins = [w.flatten() for w in load_file(str(metric_weight_files[f"lpips_{net}"])).values()]
    taps = VGG16Features.taps if net == "vgg" else AlexNetFeatures.taps

    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        expected = _reference_lpips(trunk, taps, lins, x, y)
        assert torch.allclose(metric(x, y), expected, rtol=1e-4)
        assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-7)
        assert (metric(x, y) < metric(x, torch.rand_like(x))).all()
        assert not {"shift", "scale"} & set(metric.state_dict())  # derived buffers stay out of checkpoints


def test_lpips_rejects_wrong_files_with_typed_errors(metric_weight_files):
    w = metric_weight_files
    with pytest.raises(vtok.ModelLoadError, match="AlexNet"):
        LPIPS(w["vgg"], w["lpips_alex"], net="alex")  # a VGG file where AlexNet is expected
    with pytest.raises(vtok.ModelLoadError, match="LPIPS-vgg"):
        LPIPS(w["vgg"], w["lpips_alex"], net="vgg")  # AlexNet's linear layers for VGG
    with pytest.raises(vtok.ModelLoadError, match="no such"):
        LPIPS(w["vgg"].with_name("missing.pth"), w["lpips_vgg"])
    with pytest.raises(vtok.ConfigError, match="alex"):
        LPIPS(w["vgg"], w["lpips_vgg"], net="squeeze")
    for name, content in (("junk.pth", b"\x80junk" * 100), ("empty.pth", b""), ("junk.safetensors", b"{" * 50)):
        (w["vgg"].parent / name).write_bytes(content)
        with pytest.raises(vtok.ModelLoadError, match="empty|plain tensors|safetensors"):
            LPIPS(w["vgg"].parent / name, w["lpips_vgg"])
    with pytest.raises(vtok.ModelLoadError, match="folder"):
        LPIPS(w["vgg"].parent, w["lpips_vgg"])
    with pytest.raises(vtok.ModelLoadError, match="never unpickles"):  # code in a pickle is refused, not run
        hostile = w["vgg"].with_name("hostile.pth")
        torch.save({"features.0.weight": torch.nn.Identity()}, hostile)
        LPIPS(hostile, w["lpips_vgg"])
    with pytest.raises(vtok.ModelLoadError, match="not a state dict"):
        bad = w["vgg"].with_name("list.pth")
        torch.save([torch.zeros(1)], bad)
        LPIPS(bad, w["lpips_vgg"])


@pytest.mark.slow
def test_fid_inception_loads_pytorch_fid_layout(metric_weight_files):
    state = torch.load(metric_weight_files["inception"], weights_only=True)
    # Spot checks of the published file's layout (torchvision names, pytorch-fid's 1008-way fc).
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7c.branch3x3dbl_1.conv.weight"].shape == (448, 2048, 1, 1)
    assert state["fc.weight"].shape == (1008, 2048)

    net = InceptionV3Features.from_file(metric_weight_files["inception"])
    for k, v in state.items():
        if not k.startswith("fc."):
            assert torch.equal(net.state_dict()[k], v)
    torch.manual_seed(2)
    x = torch.rand(3, 3, 64, 64)
    feats = net(x)
    assert feats.shape == (3, 2048) and torch.isfinite(feats).all()
    # The network sees a 299x299 resize: a larger input of the same picture gives nearly the same features.
    big = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    assert torch.allclose(net(big), feats, rtol=0.2, atol=1e-3)
    assert frechet_distance(feats.repeat(4, 1), feats.repeat(4, 1)) == pytest.approx(0.0, abs=1e-6)

    del state["Mixed_7c.branch_pool.conv.weight"]
    broken = metric_weight_files["inception"].with_name("broken.pth")
    torch.save(state, broken)
    with pytest.raises(vtok.ModelLoadError, match="Inception"):
        InceptionV3Features.from_file(broken)
    with pytest.raises(vtok.ModelLoadError, match="Inception"):
        InceptionV3Features.from_file(metric_weight_files["vgg"])
