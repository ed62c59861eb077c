from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.demo import sample_images

# The suite shares two cores with nothing else in CI; one thread keeps runs deterministic.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _real_photos() -> list[Image.Image]:
    """Real photographs available offline: vtok's bundled samples and scikit-image's."""
    photos = [Image.open(p).convert("RGB") for p in sample_images()]
    import skimage.data as sd

    for name in ("rocket", "stereo_motorcycle", "hubble_deep_field"):
        a = getattr(sd, name)()
        a = a[0] if isinstance(a, tuple) else a
        photos.append(Image.fromarray(np.asarray(a)).convert("RGB"))
    return photos


@pytest.fixture(scope="session")
def photo_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(train, val) folders of real-photo crops, nested one level to exercise recursion."""
    root = tmp_path_factory.mktemp("photos")
    train, val = root / "train" / "nested", root / "val"
    train.mkdir(parents=True)
    val.mkdir()
    rng = random.Random(0)
    photos = _real_photos()
    for i, im in enumerate(photos):
        target = val if i == 0 else train  # astronaut is held out
        for j in range(4 if target is train else 6):
            side = int(min(im.size) * rng.uniform(0.4, 1.0))
            left, top = rng.randint(0, im.width - side), rng.randint(0, im.height - side)
            crop = im.crop((left, top, left + side, top + side)).resize((96, 96), Image.Resampling.LANCZOS)
            crop.save(target / f"{i}_{j}.{'png' if j % 2 else 'jpg'}")
    return root / "train", val


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved (untrained) tiny tokenizer folder."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_model")
    vtok.create_tokenizer("ordered1d-tiny").save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny() -> vtok.Tokenizer:
    torch.manual_seed(0)
    return vtok.create_tokenizer("ordered1d-tiny")


def torchvision_alexnet_trunk() -> torch.nn.Sequential:
    """torchvision's ``alexnet().features``, written out by hand."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )  # fmt: skip


def torchvision_vgg16_trunk() -> torch.nn.Sequential:
    """torchvision's ``vgg16().features``, written out by hand."""
    layers: list[torch.nn.Module] = []
    c = 3
    for width, convs in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
        for _ in range(convs):
            layers += [torch.nn.Conv2d(c, width, 3, padding=1), torch.nn.ReLU()]
            c = width
        layers.append(torch.nn.MaxPool2d(2, 2))
    return torch.nn.Sequential(*layers)


@pytest.fixture(scope="session")
def metric_weight_files(tmp_path_factory) -> dict[str, Path]:
    """Published-metric weight files shaped like the real ones (random values), made here:
    torchvision's vgg16/alexnet ImageNet files (with a classifier), the LPIPS authors' linear
    layers, and pytorch-fid's Inception file (with its 1008-way fc, no batch-norm counters)."""
    from safetensors.torch import save_file

    from vtok.metrics.inception import InceptionV3Features

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("metric_weights")
    files = {}
    for net, trunk, channels in (
        ("vgg", torchvision_vgg16_trunk(), (64, 128, 256, 512, 512)),
        ("alex", torchvision_alexnet_trunk(), (64, 192, 384, 256, 256)),
    ):
        state = {f"features.{k}": v for k, v in trunk.state_dict().items()}
        state["classifier.6.weight"] = torch.zeros(1000, 4096)
        files[net] = root / f"{net}_imagenet.pth"
        torch.save(state, files[net])
        files[f"lpips_{net}"] = root / f"lpips_{net}.safetensors"
        save_file(
            {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(channels)},
            str(files[f"lpips_{net}"]),
        )
    inception = InceptionV3Features()
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    for k in state:
        if k.endswith("running_var"):
            state[k] = torch.rand_like(state[k]) + 0.5  # non-trivial statistics the loader must carry over
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    files["inception"] = root / "pt_inception.pth"
    torch.save(state, files["inception"])
    return files


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``vtok ARGV`` run in this process."""
    from vtok.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err
