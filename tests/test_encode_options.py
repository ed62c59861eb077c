import math

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
import vtok.codec
from vtok.cli import main
from vtok.codec import encode_image
from vtok.demo import sample_images


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 64x64 real photo: four tiles of the tiny model."""
    return np.asarray(Image.open(sample_images()[0]).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS))


@pytest.fixture()
def photo_file(photo, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    return path


def _cli(argv, capsys):
    """(exit status, stdout, stderr) of ``vtok ARGV`` run in this process."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse mistakes and signal exits
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_at_most_one_target():
    with pytest.raises(vtok.ConfigError, match="at most one"):
        vtok.EncodeOptions.from_kwargs(psnr=10, perceptual=0.5)
    with pytest.raises(vtok.ConfigError, match="at most one"):
        vtok.EncodeOptions.from_kwargs(tokens=2, max_bytes=100)
    assert vtok.EncodeOptions.from_kwargs(perceptual=0.5).target == "perceptual"
    assert vtok.EncodeOptions.from_kwargs().target is None


def test_perceptual_with_another_target_is_refused_by_encode_image(tiny, photo):
    with pytest.raises(vtok.ConfigError):
        encode_image(photo, tiny, psnr=10, perceptual=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ssim": 1.5},
        {"ssim": -0.1},
        {"tokens": 0},
        {"tokens": 2.5},
        {"psnr": -1},
        {"psnr": math.nan},
        {"ssim": math.nan},
        {"perceptual": math.inf},
        {"perceptual": -0.1},
        {"max_bytes": 0},
        {"tokens": True},
    ],
    ids=repr,
)
def test_out_of_range_targets_are_config_errors(kwargs, tiny, photo):
    with pytest.raises(vtok.ConfigError):
        vtok.EncodeOptions.from_kwargs(**kwargs)
    with pytest.raises(vtok.ConfigError):  # the same check in the library, before any image work
        encode_image(photo, tiny, **kwargs)


def test_allocation_and_coding_are_checked():
    for target in ({}, {"tokens": 2}, {"max_bytes": 500}):
        with pytest.raises(vtok.ConfigError, match="quality target"):
            vtok.EncodeOptions.from_kwargs(allocation="mean", **target)
    assert vtok.EncodeOptions.from_kwargs(ssim=0.5, allocation="mean").allocation == "mean"
    with pytest.raises(vtok.ConfigError):
        vtok.EncodeOptions.from_kwargs(ssim=0.5, allocation="greedy")
    with pytest.raises(vtok.ConfigError):
        vtok.EncodeOptions.from_kwargs(coding="zip")
    with pytest.raises(vtok.ConfigError):
        vtok.EncodeOptions.from_kwargs(overlap=2.5)
    with pytest.raises(vtok.ConfigError, match="unknown encode option"):
        vtok.EncodeOptions.from_kwargs(qualty=3)
    with pytest.raises(vtok.ConfigError):
        vtok.EncodeOptions(target="psnr")  # a target without a value


def test_encode_image_takes_options_or_keywords_not_both(tiny, photo):
    options = vtok.EncodeOptions(target="tokens", value=3, coding="bitpack")
    by_object = encode_image(photo, tiny, options)
    by_keywords = encode_image(photo, tiny, tokens=3, coding="bitpack")
    assert by_object.data == by_keywords.data and by_object.counts.tolist() == [3] * by_object.tiles
    with pytest.raises(vtok.ConfigError, match="not both"):
        encode_image(photo, tiny, options, tokens=2)


def test_perceptual_target_changes_the_tokens_per_tile(tiny, photo):
    full = encode_image(photo, tiny, coding="bitpack")
    assert full.tiles > 1 and full.counts.tolist() == [tiny.num_tokens] * full.tiles
    loose = encode_image(photo, tiny, coding="bitpack", perceptual=1e6)  # any picture is close enough
    assert loose.counts.tolist() == [1] * loose.tiles and loose.unmet_tiles == 0
    assert len(loose.data) < len(full.data)
    strict = encode_image(photo, tiny, coding="bitpack", perceptual=0.0)  # only a perfect copy
    assert strict.counts.tolist() == [tiny.num_tokens] * strict.tiles and strict.unmet_tiles == strict.tiles


@pytest.mark.parametrize(
    "flags,expected",
    [
        ([], {"target": None, "value": None, "allocation": "per-tile", "coding": None, "overlap": None}),
        (["--tokens", "3"], {"target": "tokens", "value": 3}),
        (["--psnr", "21.5"], {"target": "psnr", "value": 21.5}),
        (["--ssim", "0.6"], {"target": "ssim", "value": 0.6}),
        (["--perceptual", "0.25"], {"target": "perceptual", "value": 0.25}),
        (["--max-bytes", "700"], {"target": "max_bytes", "value": 700}),
        (["--coding", "bitpack"], {"coding": "bitpack"}),
        (["--coding", "ans"], {"coding": "ans"}),
        (["--ssim", "0.6", "--allocation", "mean"], {"target": "ssim", "value": 0.6, "allocation": "mean"}),
        (["--perceptual", "0.3", "--allocation", "mean"], {"target": "perceptual", "allocation": "mean"}),
        (["--overlap", "4"], {"overlap": 4}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_every_encode_flag_reaches_the_library(
    flags, expected, tiny_model_dir, photo_file, tmp_path, monkeypatch, capsys
):
    seen = []

    def fake_encode_image(image, model, options=None, **kwargs):
        seen.append((options, kwargs))
        return vtok.codec.Encoded(b"VTOK-fake", 64, 64, np.array([1]), "bitpack")

    monkeypatch.setattr(vtok.codec, "encode_image", fake_encode_image)
    out = tmp_path / "photo.vtok"
    rc, stdout, stderr = _cli(["encode", photo_file, "-o", out, "--model", tiny_model_dir, *flags], capsys)
    assert rc == 0, stderr
    assert len(seen) == 1
    options, kwargs = seen[0]
    assert isinstance(options, vtok.EncodeOptions), f"encode_image got keywords {kwargs}, not EncodeOptions"
    got = options.to_dict()
    assert {k: got[k] for k in expected} == expected
    assert out.read_bytes() == b"VTOK-fake"


def test_an_out_of_range_flag_is_one_line_and_reads_nothing(photo_file, tmp_path, capsys):
    out = tmp_path / "y.vtok"
    rc, stdout, stderr = _cli(["encode", photo_file, "-o", out, "--ssim", "1.5"], capsys)
    assert rc == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vtok: error:") and "ssim" in lines[0]
    assert "Traceback" not in stderr and not out.exists()
    # Options are checked before the image: a missing input still gets the option's error.
    rc, _, stderr = _cli(["encode", tmp_path / "x.jpg", "-o", out, "--ssim", "1.5"], capsys)
    assert rc == 2 and "ssim" in stderr and "no such file" not in stderr


@pytest.mark.parametrize(
    "flags,word",
    [(["--tokens", "0"], "tokens"), (["--psnr", "-1"], "psnr"), (["--max-bytes", "0"], "max_bytes")],
)
def test_other_bad_flags_are_one_line_errors(flags, word, photo_file, tmp_path, capsys):
    rc, _, stderr = _cli(["encode", photo_file, "-o", tmp_path / "y.vtok", *flags], capsys)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("vtok: error:") and word in lines[0]


def test_mean_allocation_without_a_quality_target_is_refused_by_the_cli(photo_file, tmp_path, capsys):
    rc, _, stderr = _cli(["encode", photo_file, "-o", tmp_path / "y.vtok", "--allocation", "mean"], capsys)
    assert rc == 2 and "quality target" in stderr


def test_messages_read_as_a_user_expects():
    """One wording for a token count out of range, whole numbers for byte bounds, a hint for a typo."""
    import vtok
    from vtok.codec import EncodeOptions
    from vtok.errors import ConfigError, TokenError
    from vtok.train.config import load_config

    with pytest.raises(ConfigError, match=r"must lie in 1\.\.1,073,741,824, got -5"):
        EncodeOptions.from_kwargs(max_bytes=-5)
    with pytest.raises(ConfigError, match=r"^tokens \(tokens per tile\) must lie in 1\.\.255, got 999$"):
        EncodeOptions.from_kwargs(tokens=999)
    tok = vtok.create_tokenizer("ordered1d-tiny")
    with pytest.raises(ConfigError, match=r"^tokens \(tokens per tile\) must lie in 1\.\.8 for this model, got 100$"):
        vtok.codec.encode_image(np.zeros((32, 32, 3), np.uint8), tok, tokens=100)
    with pytest.raises(TokenError, match=r"num_tokens \(tokens per tile\) must lie in 1\.\.8 for this model, got 100"):
        tok.encode(torch.rand(1, 3, 32, 32), num_tokens=100)
    with pytest.raises(TokenError, match="no tokens given"):
        tok.decode(torch.zeros(1, 0, dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"did you mean optim\.steps\?"):
        load_config(None, ["optim.stpes=3"])


def test_a_mean_target_that_is_missed_reads_as_a_mean():
    tok = vtok.create_tokenizer("ordered1d-tiny")
    image = np.asarray(Image.open(sample_images()[0]).convert("RGB").resize((64, 64)))
    enc = encode_image(image, tok, psnr=98.0, allocation="mean")
    assert "the image's mean could not reach the target" in enc.summary() and "tile(s) could not" not in enc.summary()
    assert "tile(s) could not reach the target" in encode_image(image, tok, psnr=98.0).summary()
