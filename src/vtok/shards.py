"""Pre-tokenized datasets: a folder of images -> Parquet shards of token sequences, and back.

One row per image and view: ``key`` (the path relative to the input folder), ``label`` (the
first-level subfolder, ImageFolder's convention; null for images at the top), ``view``
(``original``, ``flip``, ``crop0``, ``crop1``, ...) and ``tokens`` (all K ids). The tokenizer's
name, weights id and the settings ride in every shard's metadata and in ``settings.json``.

The images are cut into shards of a fixed size in sorted order, so shard i always holds the
same images. Each shard is written atomically and a run skips the shards already present: a run
killed at any moment and started again finishes with every image exactly once. Under
``torchrun`` rank r takes shards r, r + W, ...; rank 0 writes ``manifest.json`` at the end
(shards, rows, labels, unreadable images). Crops are drawn from a seed made of the key, so a
shard's content does not depend on which process writes it or when.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, ImageError, OptionalDependencyError, VtokError
from .files import write_atomic
from .images import find_images, fit_square, load_image, pil_to_tensor

__all__ = ["ShardSettings", "TokenizeResult", "TokenShards", "TokenShardStream", "tokenize_images"]

FORMAT_NAME = "vtok-token-shards"
MANIFEST = "manifest.json"
SETTINGS = "settings.json"


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise OptionalDependencyError("pyarrow", "lm", "pre-tokenized Parquet shards") from e
    return pa, pq


@dataclass
class ShardSettings:
    flip: bool = False
    crops: int = 0
    min_crop: float = 0.35  # a crop's side, as a fraction of the image's shorter side, is drawn in [min_crop, 1]
    images_per_shard: int = 256


@dataclass
class TokenizeResult:
    out: Path
    images: int  # images tokenized (all views)
    rows: int
    unreadable: list[dict[str, str]]  # {"path", "reason"}
    shards_written: int  # by this process, in this run
    seconds: float


def _labels(files: list[Path], root: Path) -> list[str | None]:
    return [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]


def _views(im: Image.Image, key: str, size: int, settings: ShardSettings) -> list[tuple[str, torch.Tensor]]:
    """(view name, (3, S, S) tensor) for every view of one image."""
    im.thumbnail((8 * size, 8 * size))  # crops need at most ~3x the output size; decoding more is waste
    base = fit_square(im, size)
    views = [("original", pil_to_tensor(base))]
    if settings.flip:
        views.append(("flip", pil_to_tensor(base.transpose(Image.Transpose.FLIP_LEFT_RIGHT))))
    w, h = im.size
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    for i in range(settings.crops):
        side = max(1, int(min(w, h) * rng.uniform(settings.min_crop, 1.0)))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        views.append((f"crop{i}", pil_to_tensor(crop)))
    return views


def tokenize_images(
    images: str | os.PathLike,
    out: str | os.PathLike,
    tokenizer,
    settings: ShardSettings | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    tokenizer_ref: str | None = None,
) -> TokenizeResult:
    """Tokenize every image below `images` into Parquet shards in `out` (see the module docstring).

    `tokenizer` is a :class:`vtok.Tokenizer`. With several processes, give each its `rank`, the
    `world_size` and a `barrier` (``torch.distributed.barrier``). `tokenizer_ref` is how a reader
    loads the tokenizer again (a shipped name or a folder; default: the tokenizer's name)."""
    import time

    from .progress import Progress

    pa, pq = _pyarrow()
    settings = settings or ShardSettings()
    if settings.crops < 0 or settings.images_per_shard < 1 or not 0 < settings.min_crop <= 1:
        raise ConfigError("crops must be >= 0, images_per_shard >= 1 and min_crop in (0, 1]")
    root, out = Path(images), Path(out)
    if not root.is_dir():
        raise ImageError(f"{root}: not a folder of images")
    files = sorted(find_images(root), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ImageError(f"{root}: no image files found")
    labels = _labels(files, root)
    label_names = sorted({x for x in labels if x is not None})
    run = {
        "format": FORMAT_NAME,
        "tokenizer": {"name": tokenizer_ref or tokenizer.name, "weights_id": tokenizer.weights_id().hex()},
        "image_size": tokenizer.image_size,
        "num_tokens": tokenizer.num_tokens,
        "alphabets": list(tokenizer.model.quantizer.symbol_alphabets()),
        "settings": asdict(settings),
        "images": len(files),
        "labels": label_names,
    }
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    settings_path = out / SETTINGS
    if rank == 0:
        if settings_path.is_file():
            _check_same_run(settings_path, run)
        else:
            write_atomic(settings_path, (json.dumps(run, indent=2) + "\n").encode())
    if barrier is not None:
        barrier()
    _check_same_run(settings_path, run)

    n_shards = (len(files) + settings.images_per_shard - 1) // settings.images_per_shard
    mine = [i for i in range(n_shards) if i % world_size == rank and not (out / _shard_name(i)).is_file()]
    todo = sum(min(settings.images_per_shard, len(files) - i * settings.images_per_shard) for i in mine)
    bar = Progress(todo, "tokenize", unit="img", enabled=progress and todo > 0)
    written = 0
    k = tokenizer.num_tokens
    for index in mine:
        lo = index * settings.images_per_shard
        chunk = list(range(lo, min(len(files), lo + settings.images_per_shard)))
        rows: dict[str, list[Any]] = {"key": [], "label": [], "view": []}
        tensors: list[torch.Tensor] = []
        failed = []
        for i in chunk:
            key = files[i].relative_to(root).as_posix()
            try:
                views = _views(load_image(files[i]), key, tokenizer.image_size, settings)
            except (VtokError, OSError, ValueError) as e:
                failed.append({"path": key, "reason": str(e).splitlines()[0][:300] if str(e) else type(e).__name__})
                bar.update(1)
                continue
            for view, x in views:
                rows["key"].append(key)
                rows["label"].append(labels[i])
                rows["view"].append(view)
                tensors.append(x)
            bar.update(1)
        tokens = np.zeros((0, k), dtype=np.int32)
        if tensors:
            tokens = tokenizer.encode(torch.stack(tensors), batch_size=batch_size).cpu().numpy().astype(np.int32)
        table = pa.table(
            {
                "key": pa.array(rows["key"], pa.string()),
                "label": pa.array(rows["label"], pa.string()),
                "view": pa.array(rows["view"], pa.string()),
                "tokens": pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1), pa.int32()), k),
            }
        )
        meta = {"shard": index, "images": len(chunk) - len(failed), "unreadable": failed, "run": run}
        table = table.replace_schema_metadata({"vtok": json.dumps(meta)})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        write_atomic(out / _shard_name(index), sink.getvalue().to_pybytes())
        written += 1
    bar.close()
    if barrier is not None:
        barrier()
    manifest = _write_manifest(out, n_shards, run) if rank == 0 else json.loads((out / MANIFEST).read_text())
    return TokenizeResult(
        out=out,
        images=manifest["images_tokenized"],
        rows=manifest["rows"],
        unreadable=manifest["unreadable"],
        shards_written=written,
        seconds=time.time() - started,
    )


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def _check_same_run(path: Path, run: dict[str, Any]) -> None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e}); remove it or choose another --out") from e
    if saved != run:
        changed = sorted(k for k in run if saved.get(k) != run.get(k))
        raise ConfigError(
            f"{path.parent} holds shards of another run (differs in {', '.join(changed) or 'format'}): "
            "choose another --out, or empty it"
        )


def _write_manifest(out: Path, n_shards: int, run: dict[str, Any]) -> dict[str, Any]:
    _, pq = _pyarrow()
    shards, unreadable, images, rows = [], [], 0, 0
    for index in range(n_shards):
        path = out / _shard_name(index)
        if not path.is_file():
            raise VtokError(f"{path}: missing after every process finished; run the same command again")
        meta = json.loads(pq.read_schema(path).metadata[b"vtok"])
        n = pq.read_metadata(path).num_rows
        shards.append({"file": path.name, "rows": n, "images": meta["images"]})
        unreadable += meta["unreadable"]
        images += meta["images"]
        rows += n
    manifest = {**run, "shards": shards, "rows": rows, "images_tokenized": images, "unreadable": unreadable}
    write_atomic(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


class TokenShards:
    """A finished shard folder read into memory (tokens are small: 64 int32 per row).

    ``tokens`` (N, K) int64, ``labels`` (N,) int64 (-1 where an image has none), ``keys``,
    ``views``, ``label_names``, and the tokenizer it was made with (``tokenizer_name``,
    ``tokenizer_id``)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        manifest_path = self.folder / MANIFEST
        self.manifest = _read_manifest(self.folder)
        try:  # a manifest is input too: a field of the wrong kind is a bad folder, not a traceback
            self.label_names: list[str] = list(self.manifest["labels"])
            self.num_tokens = int(self.manifest["num_tokens"])
            self.alphabets = list(self.manifest["alphabets"])
            self.tokenizer_name: str = self.manifest["tokenizer"]["name"]
            self.tokenizer_id: str = self.manifest["tokenizer"]["weights_id"]
            tokens, labels, keys, views = [], [], [], []
            index = {name: i for i, name in enumerate(self.label_names)}
            for shard in self.manifest["shards"]:
                if Path(shard["file"]).name != shard["file"]:  # shards live in the folder, nowhere else
                    raise VtokError(f"{manifest_path}: shard {shard['file']!r} is not a file name in the folder")
                table = _read_shard(self.folder / shard["file"], self.num_tokens)
                tokens.append(_tokens_of(table, self.num_tokens))
                names = table.column("label").to_pylist()
                labels.append(np.array([index.get(x, -1) if x is not None else -1 for x in names], dtype=np.int64))
                keys += table.column("key").to_pylist()
                views += table.column("view").to_pylist()
            self.tokens = np.concatenate(tokens) if tokens else np.zeros((0, self.num_tokens), dtype=np.int64)
            self.labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise VtokError(f"{self.folder}: a shard or manifest.json does not hold what it should ({e!r:.200})") from e
        self.keys, self.views = keys, views

    def __len__(self) -> int:
        return len(self.tokens)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise VtokError(f"{folder}: no {MANIFEST} (not a shard folder, or its `vtok tokenize` has not finished)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise VtokError(f"{path}: unreadable ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise VtokError(f"{path}: not a vtok token-shard manifest")
    return manifest


def _read_shard(path: Path, num_tokens: int):
    _, pq = _pyarrow()
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise VtokError(f"{path}: unreadable shard ({e})") from e
    if table.column_names != ["key", "label", "view", "tokens"]:
        raise VtokError(f"{path}: not a vtok token shard (columns {table.column_names})")
    return table


def _tokens_of(table, num_tokens: int) -> np.ndarray:
    flat = table.column("tokens").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if num_tokens < 1 or flat.size % num_tokens or flat.size // num_tokens != table.num_rows:
        raise VtokError(f"a shard holds {flat.size} token ids for {table.num_rows} rows of {num_tokens}")
    return flat.astype(np.int64).reshape(-1, num_tokens)


class TokenShardStream(torch.utils.data.IterableDataset):
    """Streams (tokens (K,) int64, label int64) rows shard by shard, in a shuffled shard and row
    order per epoch, holding one shard in memory; worker processes split the shards."""

    def __init__(self, folder: str | os.PathLike, seed: int = 0, epoch: int = 0):
        self.folder = Path(folder)
        self.manifest = _read_manifest(self.folder)
        self.seed, self.epoch = seed, epoch
        self.num_tokens = int(self.manifest["num_tokens"])
        self.label_index = {name: i for i, name in enumerate(self.manifest["labels"])}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(len(self.manifest["shards"]))
        info = torch.utils.data.get_worker_info()
        if info is not None:
            order = order[info.id :: info.num_workers]
        for i in order:
            table = _read_shard(self.folder / self.manifest["shards"][i]["file"], self.num_tokens)
            tokens = torch.from_numpy(_tokens_of(table, self.num_tokens))
            labels = [self.label_index.get(x, -1) if x is not None else -1 for x in table.column("label").to_pylist()]
            for j in rng.permutation(len(tokens)):
                yield tokens[j], labels[j]
