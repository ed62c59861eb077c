"""Reading and validating user images, and the resize policy of every tokenizer.

Policy (``fit_square``): resize so the shorter side equals the model's resolution, then
centre-crop the longer side. EXIF orientation is honoured. Every mode is converted to 8-bit
RGB: transparency is composited on white, 16-bit and float images are scaled by their range,
CMYK goes through Pillow's conversion.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = ["MAX_PIXELS", "IMAGE_EXTENSIONS", "load_image", "to_rgb", "fit_square", "find_images"]

MAX_PIXELS = 100_000_000
"""Larger images are refused before they are decoded (decompression-bomb guard)."""

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".avif"}


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file as 8-bit RGB with EXIF orientation applied; ImageError otherwise."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{path}: {w}x{h} is over the limit of {max_pixels} pixels")
            im.load()
            return to_rgb(im)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from e
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
