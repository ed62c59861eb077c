"""Training data: random-resized square crops from any folder of images.

Item i of :class:`RandomCropDataset` is a function of (seed, i) alone, so a run that resumes at
step s continues with exactly the batches it would have seen, with or without worker
processes and on any number of ranks.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from PIL import Image

from ..errors import ImageError
from ..images import find_images, fit_square, load_image, pil_to_tensor

__all__ = ["RandomCropDataset", "StepBatchSampler", "scan_images", "load_fixed_images"]


def scan_images(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """(readable, unreadable) image files below `folder`; reads headers only."""
    good, bad = [], []
    for path in find_images(folder):
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 - opening parses the header
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
    ):
        if not files:
            raise ImageError("no readable training images")
        self.files = list(files)
        self.image_size = image_size
        self.seed = seed
        self.length = length
        self.min_scale = min_scale
        self.max_side = max(max_side, image_size)
        self.hflip = hflip
        self.color_jitter = color_jitter
        self.cache_size = cache_size
        self._cache: OrderedDict[Path, Image.Image] = OrderedDict()
        self.failed: set[Path] = set()

    def __len__(self) -> int:
        return self.length

    def _image(self, path: Path) -> Image.Image:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        with Image.open(path) as raw:
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
        for _ in range(100):
            path = self.files[int(torch.randint(len(self.files), (1,), generator=g))]
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
        u = torch.rand(5, generator=g).tolist()
        short = min(im.size)
        scale = self.min_scale + (1 - self.min_scale) * u[0]
        side = max(1, round(short * scale**0.5))
        left = int(u[1] * (im.width - side + 1))
        top = int(u[2] * (im.height - side + 1))
        crop = im.crop((left, top, left + side, top + side))
        crop = crop.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        x = pil_to_tensor(crop)
        if self.hflip and u[3] < 0.5:
            x = x.flip(-1)
        if self.color_jitter > 0:
            j = (torch.rand(3, generator=g) * 2 - 1) * self.color_jitter
            mean = x.mean()
            x = (x - mean) * (1 + j[0]) + mean + j[1]  # contrast, brightness
            grey = x.mean(0, keepdim=True)
            x = grey + (x - grey) * (1 + 2 * j[2])  # saturation
        return x.clamp(0, 1)


def load_image_from_open(raw: Image.Image, path: Path) -> Image.Image:
    from ..images import to_rgb

    try:
        raw.load()
        return to_rgb(raw)
    except Exception as e:  # noqa: BLE001 - corrupt data of any kind
        raise ImageError(f"{path}: unreadable ({e})") from e


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields the dataset indices of steps start..steps-1 for one rank."""

    def __init__(self, start_step: int, steps: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start_step, self.steps = start_step, steps
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self):
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps):
            first = step * global_batch + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))


def load_fixed_images(files: list[Path], image_size: int, limit: int) -> tuple[torch.Tensor, list[Path]]:
    """The first `limit` readable files, each by the tokenizer's policy: (N, 3, S, S) and the bad ones."""
    tensors, bad = [], []
    for path in files:
        if len(tensors) >= limit:
            break
        try:
            tensors.append(pil_to_tensor(fit_square(load_image(path), image_size)))
        except ImageError:
            bad.append(path)
    if not tensors:
        return torch.empty(0, 3, image_size, image_size), bad
    return torch.stack(tensors), bad
