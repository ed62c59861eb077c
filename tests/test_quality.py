"""The metrics that show blur, colour shifts, seams and lost meaning, and the eval that reports them."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vtok
from vtok.codec import decode_file, encode_image
from vtok.codec.tiling import TileLayout
from vtok.evaluate import evaluate
from vtok.metrics.quality import (
    ImageNetClassifier,
    block_edge_ratio,
    flat_colour_error,
    flat_colour_grid,
    high_frequency_ratio,
    seam_ratio,
)
from vtok.models.blocks import ChannelNorm


def test_high_frequency_ratio_is_one_for_the_original_and_falls_with_blur(photo_dirs):
    x = torch.rand(2, 3, 64, 64)
    blurred = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    assert torch.allclose(high_frequency_ratio(x, x), torch.ones(2))
    assert (high_frequency_ratio(blurred, x) < 0.2).all()


def test_flat_colour_grid_spans_the_cube_and_the_error_is_in_255_units():
    grid = flat_colour_grid(3, 8)
    assert grid.shape == (27, 3, 8, 8)
    assert {tuple(c) for c in grid[:, :, 0, 0].tolist()} >= {(0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0)}
    shifted = (grid + 10 / 255).clamp(0, 1)
    assert flat_colour_error(grid, grid).max() == 0
    assert flat_colour_error(shifted, grid)[0] == pytest.approx(10, abs=1e-3)  # black moves by 10


def test_seam_ratio_sees_a_tile_grid_and_not_a_smooth_image():
    tile, overlap = 32, 8
    stride = tile - overlap
    smooth = np.tile(np.linspace(0, 255, 100, dtype=np.float64)[None, :, None], (100, 1, 3))
    blocky = smooth.copy()
    for i, start in enumerate(range(0, 100, stride)):  # each tile a different brightness offset
        blocky[:, start + overlap // 2 :] += 30 * (-1) ** i
    noise = np.random.default_rng(0).normal(0, 2, smooth.shape)
    to_u8 = lambda a: np.clip(a + noise, 0, 255).astype(np.uint8)  # noqa: E731
    assert seam_ratio(to_u8(smooth), tile, stride, overlap) == pytest.approx(1.0, abs=0.1)
    assert seam_ratio(to_u8(blocky), tile, stride, overlap) > 1.3


def test_block_edge_ratio_sees_a_pixel_shuffle_grid():
    torch.manual_seed(0)
    ramp = torch.linspace(0, 6.0, 64)
    waves = 0.5 + 0.2 * torch.sin(ramp[None, :] * 1.7 + 0.3) * torch.cos(ramp[:, None] * 1.3)  # (64, 64)
    smooth = (waves.expand(2, 3, 64, 64) + 0.01 * torch.randn(2, 3, 64, 64)).clamp(0, 1)
    cells = torch.rand(2, 3, 16, 16) * 0.1  # each 4x4 cell gets its own small offset
    blocky = (smooth + F.interpolate(cells, scale_factor=4, mode="nearest")).clamp(0, 1)
    assert block_edge_ratio(smooth, 4) == pytest.approx(1.0, abs=0.1)
    assert block_edge_ratio(blocky, 4) > 1.5
    assert block_edge_ratio(blocky, 3) < 1.5  # another grid than the blocks' is not seen


def test_wider_overlap_hides_seams_better_than_none(tiny):
    rng = np.random.default_rng(0)
    image = (np.linspace(0, 1, 96)[None, :, None] * np.linspace(0.2, 1, 96)[:, None, None] * 255).repeat(3, 2)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    ratios = {}
    for overlap in (0, None):
        data = encode_image(image, tiny, tokens=2, overlap=overlap, measure=False).data
        recon, f = decode_file(data, tiny)
        layout = TileLayout(f.width, f.height, tiny.image_size, f.overlap)
        ratios[overlap] = seam_ratio(recon, tiny.image_size, layout.stride, f.overlap)
    assert ratios[None] < ratios[0]


def test_channel_norm_keeps_a_flat_images_level_where_group_norm_erases_it():
    flat = torch.full((2, 8, 4, 4), 3.0)
    flat[1] = -1.0  # two flat inputs at different levels, every channel alike
    group = torch.nn.GroupNorm(8, 8)  # one channel per group: an instance norm
    channel = ChannelNorm(1, 8)
    assert torch.allclose(group(flat)[0], group(flat)[1], atol=1e-3)  # both become the bias: the level is gone
    varied = flat * torch.linspace(0.5, 1.5, 8)[None, :, None, None]
    assert not torch.allclose(channel(varied)[0], channel(varied)[1])


def test_classifier_agrees_with_itself_and_runs_offline():
    torch.manual_seed(0)
    classifier = ImageNetClassifier()
    x = torch.rand(2, 3, 64, 64)
    top1 = classifier(x)
    assert top1.shape == (2,) and top1.dtype == torch.long
    assert torch.equal(top1, classifier(x.clone()))


def test_eval_reports_views_sources_sharpness_and_flat_colours(photo_dirs, tiny_model_dir):
    train, _ = photo_dirs
    result = evaluate(vtok.load(tiny_model_dir), train.parent, progress=False)
    assert result.num_images > 0 and len(result.rows) == len(vtok.load(tiny_model_dir).prefix_lengths())
    row = result.rows[-1]
    assert {"psnr", "ssim", "sharpness", "feature_distance", "semantic"} <= set(row)
    assert 0 <= row["semantic"] <= 1 and row["sharpness"] > 0
    assert set(result.sources) == {"train", "val"}
    assert result.num_detail > 0 and len(result.detail_rows) == len(result.rows)
    assert len(result.flat_colour_error) == len(result.rows) and result.flat_colour_error[0]["error"] >= 0
    text = result.table()
    assert "detail crops" in text and "flat colours" in text and "per source" in text
