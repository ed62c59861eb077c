import math

import numpy as np
import pytest
import torch

from vtok.metrics import psnr, ssim


def test_psnr_identical_is_inf_and_known_noise_matches():
    x = torch.rand(2, 3, 32, 32)
    assert torch.isinf(psnr(x, x)).all()
    y = x + 0.1  # MSE = 0.01 exactly -> 20 dB
    assert torch.allclose(psnr(x, y), torch.full((2,), 20.0), atol=1e-4)


def test_ssim_identical_is_one_and_noise_lowers_it():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert (ssim(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1)) < 0.9).all()


def test_ssim_matches_scikit_image_reference():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((40, 48, 3))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    ref = structural_similarity(
        a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    ours = ssim(torch.from_numpy(a).permute(2, 0, 1)[None].float(), torch.from_numpy(b).permute(2, 0, 1)[None].float())
    # scikit-image averages over a cropped border of (win-1)/2, as our 'valid' convolution does.
    assert float(ours) == pytest.approx(ref, abs=2e-3)


def test_ssim_handles_images_smaller_than_the_window():
    x = torch.rand(1, 3, 5, 7)
    assert math.isclose(float(ssim(x, x)), 1.0, abs_tol=1e-6)


def test_perceptual_distance_zero_for_identical_and_grows_with_noise():
    from vtok.metrics.perceptual import create_feature_distance

    d = create_feature_distance()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    small = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    large = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert torch.allclose(d(x, x), torch.zeros(2), atol=1e-6)
    assert (d(x, small) < d(x, large)).all()


def test_perceptual_backbone_from_a_bad_local_file_is_a_clear_error(tmp_path):
    import vtok
    from vtok.metrics.perceptual import create_feature_distance

    bad = tmp_path / "weights.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(vtok.ModelLoadError):
        create_feature_distance(weights=bad)


def test_ms_ssim_hand_computed_for_flat_images():
    # Flat images: every contrast-structure term is 1 and only the coarsest scale's luminance
    # term l = (2ab + C1) / (a^2 + b^2 + C1), C1 = 0.01^2, remains, raised to its weight 0.1333.
    from vtok.metrics import ms_ssim

    a, b = 0.4, 0.6
    x, y = torch.full((1, 3, 176, 176), a), torch.full((1, 3, 176, 176), b)
    c1 = 0.01**2
    expected = ((2 * a * b + c1) / (a * a + b * b + c1)) ** 0.1333
    assert float(ms_ssim(x, y)) == pytest.approx(expected, rel=1e-4)


def test_imagenet_classifier_names_real_photos():
    """EfficientNet-Lite0 as the wheel trained it (ReLU6, Lite preprocessing): scikit-image's coffee,
    rocket and motorcycle get their classes. With swish in place of ReLU6 they read as a combination
    lock, a corkscrew and a unicycle, and the astronaut as a chain-link fence."""
    pytest.importorskip("efficientnet_lite_pytorch")
    import numpy as np
    import skimage.data as sd
    from PIL import Image

    from vtok.images import fit_square, pil_to_tensor
    from vtok.metrics.probe import imagenet_class_names
    from vtok.metrics.quality import ImageNetClassifier

    names = imagenet_class_names()
    photos = {"coffee": "espresso", "rocket": "missile", "stereo_motorcycle": "moped"}
    images = []
    for name in photos:
        a = getattr(sd, name)()
        a = a[0] if isinstance(a, tuple) else a
        images.append(pil_to_tensor(fit_square(Image.fromarray(np.asarray(a)).convert("RGB"), 224)))
    got = [names[c] for c in ImageNetClassifier()(torch.stack(images)).tolist()]
    assert got == list(photos.values())
