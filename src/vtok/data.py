"""Image folders: listing, fixed evaluation sets, and random-resized square crops.

The one place that turns a folder of images into tensors, for training, evaluation, the codec's
prior and the bench alike. Item i of :class:`RandomCropDataset` is a function of (seed, i) alone,
so a run that resumes at step s continues with exactly the batches it would have seen, with or
without worker processes and on any number of ranks.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import ImageError
from .images import find_images, fit_square, load_image, open_image, pil_to_tensor

__all__ = [
    "InMemoryCropSampler",
    "RandomCropDataset",
    "load_folder",
    "load_images",
    "scan_images",
    "source_weights",
    "synthetic_flat",
]


def source_weights(files: list[Path], root: str | Path, balance: float = 1.0) -> torch.Tensor:
    """Sampling weight per file so that a source (the first folder below `root`) is drawn with
    total mass proportional to (its number of files) ** `balance`: 1 draws every file equally,
    0 every source equally, 0.5 in between, so one big source cannot dominate a batch."""
    root = Path(root)
    sources = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "." for p in files]
    counts: dict[str, int] = {}
    for s in sources:
        counts[s] = counts.get(s, 0) + 1
    w = torch.tensor([counts[s] ** (balance - 1.0) for s in sources], dtype=torch.float64)
    return w / w.sum()


def scan_images(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """(readable, unreadable) image files below `folder`; reads headers only."""
    good, bad = [], []
    for path in find_images(folder):
        try:
            with open_image(path):  # the header, checked against the file (a bomb is unreadable)
                pass
            good.append(path)
        except Exception:  # noqa: BLE001 - any failure means "skip and count"
            bad.append(path)
    return good, bad


class RandomCropDataset(torch.utils.data.Dataset):
    """Square crops of random scale and position, resized to `image_size`; (3, S, S) in [0, 1]."""

    def __init__(
        self,
        files: list[Path],
        image_size: int,
        seed: int,
        length: int,
        min_scale: float = 0.1,
        max_side: int = 768,
        hflip: bool = True,
        color_jitter: float = 0.0,
        cache_size: int = 256,
        flat_fraction: float = 0.0,
        weights: torch.Tensor | None = None,
        flat_extremes: float = 0.0,
    ):
        if not files:
            raise ImageError("no readable training images")
        self.files = list(files)
        self.weights = weights
        self.image_size = image_size
        self.seed = seed
        self.length = length
        self.min_scale = min_scale
        self.max_side = max(max_side, image_size)
        self.hflip = hflip
        self.color_jitter = color_jitter
        self.flat_fraction, self.flat_extremes = flat_fraction, flat_extremes
        self.cache_size = cache_size
        self._cache: OrderedDict[Path, Image.Image] = OrderedDict()
        self.failed: set[Path] = set()

    def __len__(self) -> int:
        return self.length

    def _image(self, path: Path) -> Image.Image:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        with open_image(path) as raw:
            raw.draft("RGB", (self.max_side, self.max_side))  # JPEG: decode at reduced scale
            im = load_image_from_open(raw, path)
        short = min(im.size)
        if short > self.max_side:
            scale = self.max_side / short
            im = im.resize(
                (round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC, reducing_gap=3.0
            )
        self._cache[path] = im
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return im

    def __getitem__(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        if self.flat_fraction > 0 and float(torch.rand(1, generator=g)) < self.flat_fraction:
            return synthetic_flat(self.image_size, g, self.flat_extremes)
        for _ in range(100):
            path = self.files[_draw_file(len(self.files), self.weights, g)]
            if path in self.failed:
                continue
            try:
                im = self._image(path)
            except ImageError:
                self.failed.add(path)
                continue
            return self._crop(im, g)
        raise ImageError("could not read any training image")

    def _crop(self, im: Image.Image, g: torch.Generator) -> torch.Tensor:
        left, top, side, flip = _crop_box(im.width, im.height, self.min_scale, self.image_size, g)
        crop = im.crop((left, top, left + side, top + side))
        crop = crop.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        x = pil_to_tensor(crop)
        if self.hflip and flip:
            x = x.flip(-1)
        return _jitter(x, self.color_jitter, g)


def _draw_file(count: int, weights: torch.Tensor | None, g: torch.Generator) -> int:
    if weights is None:
        return int(torch.randint(count, (1,), generator=g))
    return int(torch.multinomial(weights, 1, generator=g))


def _crop_box(width: int, height: int, min_scale: float, image_size: int, g: torch.Generator):
    """(left, top, side, flip) of a square crop whose area is a random fraction in
    [min_scale, 1] of the shorter side squared; never smaller than `image_size` pixels when the
    image allows, so crops are not upscaled (upscaled crops would teach the model blur)."""
    u = torch.rand(4, generator=g).tolist()
    short = min(width, height)
    lowest = max(min_scale, min(1.0, (image_size / short) ** 2))
    scale = lowest + (1 - lowest) * u[0]
    side = max(1, round(short * scale**0.5))
    left = int(u[1] * (width - side + 1))
    top = int(u[2] * (height - side + 1))
    return left, top, side, u[3] < 0.5


def _jitter(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    """Mild contrast, brightness and saturation jitter of a (3, H, W) image in [0, 1]."""
    if amount > 0:
        j = ((torch.rand(3, generator=g) * 2 - 1) * amount).to(x.device)
        mean = x.mean()
        x = (x - mean) * (1 + j[0]) + mean + j[1]  # contrast, brightness
        grey = x.mean(0, keepdim=True)
        x = grey + (x - grey) * (1 + 2 * j[2])  # saturation
    return x.clamp(0, 1)


class InMemoryCropSampler:
    """The same crops as :class:`RandomCropDataset`, cut from images decoded once and kept on
    `device` as uint8: on a GPU, data loading stops being the bottleneck.

    ``batch(step, rank, batch_size)`` is a function of (seed, step, rank) alone, so a resumed run
    sees the batches it would have seen.
    """

    def __init__(
        self,
        files: list[Path],
        image_size: int,
        seed: int,
        device: torch.device,
        min_scale: float = 0.1,
        max_side: int = 768,
        hflip: bool = True,
        color_jitter: float = 0.0,
        weights: torch.Tensor | None = None,
        progress: bool = False,
        flat_fraction: float = 0.0,
        flat_extremes: float = 0.0,
    ):
        self.image_size, self.seed, self.device = image_size, seed, device
        self.min_scale, self.hflip, self.color_jitter = min_scale, hflip, color_jitter
        self.flat_fraction, self.flat_extremes = flat_fraction, flat_extremes
        self.images: list[torch.Tensor] = []  # (3, H, W) uint8 each
        self.failed: list[Path] = []
        kept_weights = []
        decoder = RandomCropDataset(files, image_size, seed, 0, max_side=max_side, cache_size=0)
        for i, path in enumerate(files):
            try:
                im = decoder._image(path)
            except ImageError:
                self.failed.append(path)
                continue
            t = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
            self.images.append(t.to(device))
            kept_weights.append(1.0 if weights is None else float(weights[i]))
            if progress and (i + 1) % 200 == 0:
                print(f"decoded {i + 1}/{len(files)} training images", flush=True)
        if not self.images:
            raise ImageError("could not read any training image")
        w = torch.tensor(kept_weights, dtype=torch.float64)
        self.weights = w / w.sum()

    def batch(self, step: int, rank: int, batch_size: int) -> torch.Tensor:
        import torch.nn.functional as F

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 9_973 + rank)
        picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=g).tolist()
        out = []
        for i in picks:
            if self.flat_fraction > 0 and float(torch.rand(1, generator=g)) < self.flat_fraction:
                out.append(synthetic_flat(self.image_size, g, self.flat_extremes).to(self.device))
                continue
            im = self.images[i]
            left, top, side, flip = _crop_box(im.shape[2], im.shape[1], self.min_scale, self.image_size, g)
            crop = im[:, top : top + side, left : left + side].float().div_(255).unsqueeze(0)
            crop = F.interpolate(crop, size=(self.image_size, self.image_size), mode="bicubic", antialias=True)[0]
            if self.hflip and flip:
                crop = crop.flip(-1)
            out.append(_jitter(crop, self.color_jitter, g))
        return torch.stack(out)  # (B, 3, S, S) in [0, 1]


def synthetic_flat(size: int, g: torch.Generator, extremes: float = 0.0) -> torch.Tensor:
    """A flat colour or a linear gradient between two colours, uniform over the RGB cube: (3, S, S).

    Photos seldom hold large flat areas of saturated colour, so a tokenizer trained on photos
    alone returns them shifted; a few of these per batch teach it the whole cube. With
    `extremes` > 0 each channel of each colour is pinned to 0 or 1 with that probability: a
    uniform draw almost never lands on the cube's faces, where the worst shifts are (pure
    magenta, green, blue)."""
    a, b = torch.rand(3, generator=g), torch.rand(3, generator=g)
    if extremes > 0:
        for colour in (a, b):
            pinned = torch.rand(3, generator=g) < extremes
            ends = (torch.rand(3, generator=g) < 0.5).float()
            colour[pinned] = ends[pinned]
    if float(torch.rand(1, generator=g)) < 0.5:
        return a[:, None, None].expand(3, size, size).clone()
    angle = float(torch.rand(1, generator=g)) * 2 * torch.pi
    ramp = torch.linspace(0, 1, size)
    t = (ramp[None, :] * torch.cos(torch.tensor(angle)) + ramp[:, None] * torch.sin(torch.tensor(angle))).abs()
    t = (t - t.min()) / (t.max() - t.min()).clamp(min=1e-6)
    return a[:, None, None] + (b - a)[:, None, None] * t[None]


def load_image_from_open(raw: Image.Image, path: Path) -> Image.Image:
    from .images import to_rgb

    try:
        raw.load()
        return to_rgb(raw)
    except Exception as e:  # noqa: BLE001 - corrupt data of any kind
        raise ImageError(f"{path}: unreadable ({e})") from e


def load_images(
    files: list[Path], image_size: int, limit: int | None = None
) -> tuple[torch.Tensor, list[Path], list[str]]:
    """Up to `limit` readable files, each by the tokenizer's policy (shorter side to S, centre
    crop): (N, 3, S, S) in [0, 1], their paths, and the skipped files with reasons."""
    tensors: list[torch.Tensor] = []
    paths: list[Path] = []
    skipped: list[str] = []
    for path in files:
        if limit is not None and len(tensors) >= limit:
            break
        try:
            tensors.append(pil_to_tensor(fit_square(load_image(path), image_size)))
            paths.append(path)
        except ImageError as e:
            skipped.append(str(e))
    if not tensors:
        return torch.empty(0, 3, image_size, image_size), paths, skipped
    return torch.stack(tensors), paths, skipped


def load_folder(
    folder: str | os.PathLike, size: int, limit: int | None = None
) -> tuple[torch.Tensor, list[Path], list[str]]:
    """Every image below `folder` as in :func:`load_images`; ImageError when none can be read."""
    files = find_images(folder)
    if not files:
        raise ImageError(f"{folder}: no image files found (looked for .jpg, .png, .webp, ...)")
    images, paths, skipped = load_images(files, size, limit)
    if not paths:
        raise ImageError(f"{folder}: none of the {len(files)} image files could be read ({skipped[0]})")
    return images, paths, skipped
