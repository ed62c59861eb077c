import io

import numpy as np
import pytest
from PIL import Image

import vtok
from vtok.images import fit_square, load_image


def _save(tmp_path, im, name, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


def test_missing_empty_folder_and_non_image_files(tmp_path):
    with pytest.raises(vtok.ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(vtok.ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "text.png").write_text("hello, not an image")
    with pytest.raises(vtok.ImageError, match="not a readable image"):
        load_image(tmp_path / "text.png")
    with pytest.raises(vtok.ImageError, match="folder"):
        load_image(tmp_path)


def test_truncated_and_corrupt_files(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(vtok.ImageError):
        load_image(tmp_path / "trunc.jpg")
    corrupt = bytearray(data)
    corrupt[20:400] = b"\x00" * 380
    (tmp_path / "corrupt.jpg").write_bytes(bytes(corrupt))
    with pytest.raises(vtok.ImageError):
        load_image(tmp_path / "corrupt.jpg")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _save(tmp_path, Image.new("L", (3000, 3000)), "big.png")
    with pytest.raises(vtok.ImageError, match="over the limit"):
        load_image(path, max_pixels=1_000_000)


@pytest.mark.parametrize(
    "mode,value",
    [
        ("L", 128),
        ("RGBA", (255, 0, 0, 128)),
        ("P", 3),
        ("CMYK", (0, 255, 0, 0)),
        ("I;16", 40000),
        ("LA", (10, 0)),
        ("1", 1),
    ],
)
def test_every_mode_becomes_rgb(tmp_path, mode, value):
    im = Image.new(mode, (10, 7), value)
    ext = "jpg" if mode == "CMYK" else "tiff" if mode == "I;16" else "png"
    out = load_image(_save(tmp_path, im, f"img.{ext}"))
    assert out.mode == "RGB" and out.size == (10, 7)


def test_rgba_transparency_composited_on_white(tmp_path):
    out = load_image(_save(tmp_path, Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "clear.png"))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_is_scaled_not_clipped(tmp_path):
    out = load_image(_save(tmp_path, Image.new("I;16", (4, 4), 32768), "grey16.png"))
    assert 120 <= out.getpixel((0, 0))[0] <= 135


def test_exif_orientation_is_honoured(tmp_path):
    im = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = load_image(_save(tmp_path, im, "rot.jpg", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_fit_square_handles_1x1_and_extreme_aspect():
    assert fit_square(Image.new("RGB", (1, 1), "blue"), 32).size == (32, 32)
    assert fit_square(Image.new("RGB", (1, 500)), 32).size == (32, 32)
