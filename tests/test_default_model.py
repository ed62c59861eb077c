"""The shipped default model: loads offline, honours the prefix contract, reconstructs real photos."""

import pytest
import torch

import vtok
from vtok.demo import run_demo, sample_images
from vtok.metrics import psnr


@pytest.fixture(scope="module")
def default():
    return vtok.load("default")


def test_default_is_shipped_and_loads_offline(default):
    assert "default" in vtok.shipped_models()
    assert default.image_size >= 128
    assert default.bytes_for(default.num_tokens) <= 128


def test_default_prefix_property_on_real_photos(default):
    photos = sample_images()
    full = default.encode(photos)
    for k in default.prefix_lengths():
        assert torch.equal(default.encode(photos, num_tokens=k), full[:, :k])


def test_default_quality_rises_with_tokens_on_photos_it_never_saw(default):
    photos = default.preprocess(sample_images())
    tokens = default.encode(photos)
    scores = [float(psnr(default.decode(tokens[:, :k]), photos).mean()) for k in (1, 8, default.num_tokens)]
    assert scores[0] < scores[1] < scores[2]
    mean_colour = float(psnr(photos.mean((2, 3), keepdim=True).expand_as(photos), photos).mean())
    assert scores[2] > mean_colour + 2.0


def test_demo_writes_sheet_and_table(tmp_path):
    result = run_demo(out=tmp_path / "demo.png")
    assert result.sheet.is_file()
    ks = sorted({r["k"] for r in result.rows})
    assert ks[0] == 1 and ks[-1] == vtok.load("default").num_tokens
    assert "PSNR" in result.table()


def test_default_keeps_flat_colours(default):
    """The first default (GroupNorm with one channel per group) returned every flat image at about
    the same colour: 33/255 mean error at full length. The shipped model must stay well below."""
    from vtok.metrics.quality import flat_colour_error, flat_colour_grid

    grid = flat_colour_grid(3, default.image_size)
    error = flat_colour_error(default.decode(default.encode(grid)), grid).mean()
    assert error < 15
