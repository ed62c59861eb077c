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
