"""Distilling searched tokens into the encoder: amortise the encoder-side search.

The encoder gives each image its tokens in one pass: an amortised guess at what the decoder would
decode best. ``vtok.codec.search`` finds better tokens per image by descending through the frozen
decoder (``effort``); the distance between the two is the amortisation gap (Cremer, Li, Duvenaud,
"Inference Suboptimality in Variational Autoencoders", ICML 2018, https://arxiv.org/abs/1801.03558).
Here the searched tokens of a fixed set of training crops become targets for the encoder, beside
its usual reconstruction loss, in the manner of iterative-inference distillation (Marino, Yue,
Mandt, "Iterative Amortized Inference", ICML 2018, https://arxiv.org/abs/1807.09356).

The targets are made once, before training, through the model the run starts from
(:func:`make_search_targets`: training crops, searched at an effort level for every prefix at
once, stored as uint8 crops and token ids in one safetensors file; written in parts so a killed
search resumes). Each step then adds ``batch`` target crops to the batch: they get the usual
reconstruction loss, and the encoder's bounded FSQ values are pulled to the centres of the
searched digits (mean squared error in quantization steps, times ``weight``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import ConfigError
from ..files import atomic_path

__all__ = ["DistillSettings", "SearchTargets", "make_search_targets"]

log = logging.getLogger("vtok.train")
PART = 64  # crops searched and written per part file


@dataclass
class DistillSettings:
    weight: float = 0.0  # 0: off
    count: int = 1024  # training crops searched once, before training
    effort: int = 2  # the search's effort level (vtok.codec.search.EFFORT_LEVELS)
    batch: int = 8  # target crops added to each step's batch
    targets: str | None = None  # the targets file; None: <out_dir>/search_targets.safetensors


class SearchTargets:
    """Crops (N, 3, S, S) uint8 and their searched tokens' bounded FSQ values (N, K, D)."""

    def __init__(self, images: torch.Tensor, bounded: torch.Tensor, seed: int = 0):
        self.images, self.bounded, self.seed = images, bounded, seed

    def __len__(self) -> int:
        return self.images.shape[0]

    @classmethod
    def load(cls, path: str | Path, tok, seed: int = 0) -> SearchTargets:
        """Read a targets file made through `tok` (its weights id is checked: targets searched
        through another decoder would teach the encoder that decoder's tokens)."""
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                images, indices = f.get_tensor("images"), f.get_tensor("indices")
        except (SafetensorError, OSError, KeyError) as e:
            raise ConfigError(f"{path}: not a search-targets file ({e})") from e
        if meta.get("weights_id") != tok.weights_id().hex():
            raise ConfigError(
                f"{path} was searched through the model with weights {meta.get('weights_id')}, but this run starts "
                f"from {tok.weights_id().hex()}: delete it (it is made again) or point distill.targets elsewhere"
            )
        s, k = tok.model.image_size, tok.model.num_tokens
        n = images.shape[0]
        if (
            images.dtype != torch.uint8
            or tuple(images.shape) != (n, 3, s, s)
            or tuple(indices.shape) != (n, k)
            or n < 1
        ):
            raise ConfigError(f"{path}: expected uint8 images (N, 3, {s}, {s}) and indices (N, {k})")
        if int(indices.min()) < 0 or int(indices.max()) >= tok.model.codebook_size:
            raise ConfigError(f"{path}: token ids outside the codebook")
        q = tok.model.quantizer
        with torch.no_grad():
            bounded = q.indices_to_codes(indices.long()) * q.half_width  # (N, K, D) digit centres
        return cls(images, bounded.float(), seed)

    def batch(self, step: int, size: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(size, 3, S, S) in [0, 1] and (size, K, D) targets, drawn with replacement, the same for a
        step whenever it runs (a resumed run draws what it would have drawn)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + rank)
        idx = torch.randint(len(self), (size,), generator=g)
        return self.images[idx].float() / 255, self.bounded[idx]


def _part_fits(part: Path, meta: dict[str, str], images: torch.Tensor) -> bool:
    """Whether a part left by a killed search is this search's: the same model and effort, and
    exactly these crops."""
    if not part.is_file():
        return False
    try:
        with safe_open(str(part), framework="pt") as f:
            return (f.metadata() or {}) == meta and torch.equal(f.get_tensor("images"), images)
    except (SafetensorError, OSError, KeyError):
        return False


def make_search_targets(tok, crops, count: int, effort: int, path: str | Path, progress: bool = True) -> Path:
    """Search `count` crops (crops[i]: (3, S, S) in [0, 1], e.g. a RandomCropDataset) through
    `tok` at `effort` for every prefix at once; write them with their token ids to `path`.
    Parts go to <path>.parts/ as they are done, so a killed search resumes where it stopped."""
    from ..codec.search import check_effort, search_tokens

    if check_effort(effort) < 1:
        raise ConfigError("distill.effort must be 1 or more (effort 0 is the encoder's own tokens)")
    if count < 1:
        raise ConfigError(f"distill.count must be >= 1, got {count}")
    path = Path(path)
    parts = path.with_name(path.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    done = 0
    meta = {"weights_id": tok.weights_id().hex(), "effort": str(effort)}
    for first in range(0, count, PART):
        part = parts / f"{first:07d}.safetensors"
        n = min(PART, count - first)
        images = torch.stack([(crops[i] * 255).round().clamp(0, 255).to(torch.uint8) for i in range(first, first + n)])
        if not _part_fits(part, meta, images):  # a part left by another search (model, effort, crops) is redone
            ids = search_tokens(tok, images.float() / 255, effort)  # what is stored is what was searched
            with atomic_path(part) as tmp:
                save_file({"images": images.contiguous(), "indices": ids.int().contiguous()}, str(tmp), metadata=meta)
            done += n
            if progress:
                rate = (time.monotonic() - start) / done
                log.info(
                    "searched %d of %d crops at effort %d (%.2f s each, %.0f min left)",
                    first + n,
                    count,
                    effort,
                    rate,
                    rate * (count - first - n) / 60,
                )
    loaded = [load_file(str(parts / f"{first:07d}.safetensors")) for first in range(0, count, PART)]
    meta = {**meta, "count": str(count)}
    with atomic_path(path) as tmp:
        save_file(
            {
                "images": torch.cat([p["images"] for p in loaded]).contiguous(),
                "indices": torch.cat([p["indices"] for p in loaded]).contiguous(),
            },
            str(tmp),
            metadata=meta,
        )
    for p in parts.iterdir():
        p.unlink()
    parts.rmdir()
    return path
