"""Reading and validating user images, and the resize policy of every tokenizer.

Policy (``fit_square``): resize so the shorter side equals the model's resolution, then
centre-crop the longer side. EXIF orientation is honoured. Every mode is converted to 8-bit
RGB: transparency is composited on white, 16-bit and float images are scaled by their range,
CMYK goes through Pillow's conversion.

Hostile files (a header that claims far more pixels than its data can hold) are refused from the
header, before any pixel is decoded, by :func:`image_size`:

- at most ``max_pixels`` pixels (100 MP by default; ``--max-pixels``, ``max_pixels=``);
- above 1 MP, at most ``MAX_PIXELS_PER_BYTE`` (1024) declared pixels per byte of file. Photos take
  0.05 to 1 byte per pixel (1 to 20 pixels per byte) and even a flat 8-bit RGB PNG cannot pass 344
  (deflate compresses 1032:1 at best); a 37-byte GIF or a 2 kB JPEG claiming 10000x10000 pixels
  takes over 50,000. What trips it is a bomb or a flat synthetic image, never a photograph;
- a Huffman-coded JPEG needs at least 2 bits per 8x8 block (1 when progressive), whatever its
  size: a header patched to more pixels than the scan holds is refused, not filled with grey;
- data that ends before the pixels it declares is an error (Pillow's truncation check is kept on),
  and so is a GIF whose first frame is far smaller than the screen it declares (the rest would be
  background fill).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = [
    "MAX_PIXELS",
    "MAX_PIXELS_PER_BYTE",
    "IMAGE_EXTENSIONS",
    "image_size",
    "open_image",
    "load_image",
    "to_rgb",
    "fit_square",
    "find_images",
]

MAX_PIXELS = 100_000_000
"""Larger images are refused before they are decoded (decompression-bomb guard)."""

MAX_PIXELS_PER_BYTE = 1024
"""Above RATIO_CHECKED_ABOVE pixels, more declared pixels per byte of file is a bomb (module docstring)."""
RATIO_CHECKED_ABOVE = 1 << 20

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".avif"}


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open (header only) and check what the header claims against the file (module docstring);
    the caller loads and closes it. Every reader of user images goes through here."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: file is empty")
    with warnings.catch_warnings():  # vtok applies its own limit, below, in one line
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    try:
        w, h = im.size
        if w * h > max_pixels:
            raise ImageError(
                f"{path}: {w}x{h} is over the limit of {max_pixels:,} pixels: raise it with --max-pixels N "
                "(max_pixels=N in Python) if you trust this image"
            )
        if w * h > RATIO_CHECKED_ABOVE and w * h > MAX_PIXELS_PER_BYTE * size:
            raise ImageError(
                f"{path}: declares {w}x{h} pixels in {size} bytes, over {MAX_PIXELS_PER_BYTE} pixels per byte: "
                "a decompression bomb or a truncated file, not a photo"
            )
        _check_format(path, im, size)
    except BaseException:
        im.close()
        raise
    return im


def _check_format(path: Path, im: Image.Image, size: int) -> None:
    """Per-format floors on the data a header's pixels need (module docstring)."""
    w, h = im.size
    if im.format == "JPEG":
        sof = _jpeg_frame_type(path)
        if sof is not None and sof < 8:  # Huffman-coded (SOF0-SOF7); arithmetic coding has no floor
            bits = 1 if sof in (2, 6) else 2  # progressive: a DC bit per block; sequential: DC and EOB codes
            blocks = -(-w // 8) * -(-h // 8)
            if blocks * bits > size * 8:
                raise ImageError(
                    f"{path}: a {w}x{h} JPEG needs at least {blocks * bits // 8} bytes of data, the file has {size}: "
                    "its header claims more pixels than it holds (patched or truncated)"
                )
    if im.format == "GIF":
        tile = getattr(im, "tile", None) or []
        if tile:
            x0, y0, x1, y1 = tile[0][1]
            if w * h > RATIO_CHECKED_ABOVE and (x1 - x0) * (y1 - y0) * 64 < w * h:
                raise ImageError(
                    f"{path}: a {w}x{h} GIF whose first frame is {x1 - x0}x{y1 - y0}: the rest would be fill"
                )


def _jpeg_frame_type(path: Path) -> int | None:
    """n of the SOFn marker (0 baseline, 2 progressive, 9+ arithmetic), read from the first 64 kB."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker - 0xC0
        if marker == 0xDA:  # start of scan before any frame header: not a JPEG Pillow would open
            return None
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None


def image_size(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from an image file's header, after the checks above; ImageError otherwise.
    Nothing is decoded: this is what a caller budgets the work by, before load_image."""
    path = Path(path)
    with _reading(path), open_image(path, max_pixels) as im:
        return im.size


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file as 8-bit RGB with EXIF orientation applied; ImageError otherwise
    (including a header that claims more than the file holds: see the module docstring)."""
    path = Path(path)
    with _reading(path), open_image(path, max_pixels) as im:
        im.load()
        return to_rgb(im)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Pillow's and the system's errors while reading `path` -> one ImageError naming it."""
    try:
        yield
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        why = str(e).replace(f" '{path}'", "").replace(str(path), "the file")  # PIL repeats the path
        raise ImageError(f"{path}: not a readable image ({why})") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from e


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB, EXIF orientation applied."""
    if im.width < 1 or im.height < 1:
        raise ImageError("image has no pixels")
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if im.mode.startswith("I;16") or a.max() > 255 else (0.0, 255.0)
        if im.mode == "F":
            lo, hi = float(a.min()), float(a.max()) or 1.0
        a = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        im = Image.fromarray(a, mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB")


def fit_square(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bicubic, antialiased) and centre-crop to size x size."""
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> RGB PIL."""
    a = (x.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a, mode="RGB")


def find_images(folder: str | os.PathLike, suffixes: Collection[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Files below `folder` with one of `suffixes` (images by default), recursively, hidden ones
    left out, in a stable (sorted) order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file() and not p.name.startswith(".")
    )
