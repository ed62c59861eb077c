"""vtok's image tokens inside a Hugging Face tokenizer's vocabulary.

As Chameleon and Emu3 do (both in transformers), an image becomes a run of ordinary vocabulary
entries between two boundary tokens, so any causal LM can read and write images beside text::

    from vtok.llm import add_image_tokens
    vocab = add_image_tokens(hf_tokenizer, "default")   # boundaries + image tokens added
    ids = vocab.encode_image(image, num_tokens=16)      # <|vtok_image|> ... <|/vtok_image|>, hf ids
    image = vocab.decode_image(ids)                     # PIL image; any prefix length decodes
    vocab.save_pretrained("my-tokenizer")               # the tokenizer + vtok_image_tokens.json
    vocab = ImageVocabulary.from_pretrained("my-tokenizer")

Two ways to spell an image token (``scheme``):

- ``"digit"`` (the default): one vocabulary entry per FSQ digit value and dimension
  (``<|vtok_d2_5|>``: dimension 2 has value 5), D entries per image token: 8+8+8+5+5+5 = 39 new
  entries for the default model, 6 ids per image token. A small LM sees each entry thousands of
  times; docs/measurements.md ("Image tokens in an LM's vocabulary") has the measurement behind
  this default. Open-MAGVIT2 splits its large codebook into sub-vocabularies the same way.
- ``"token"``: one entry per token id (``<|vtok_12345|>``), as Chameleon and Emu3 do: 64,000 new
  entries for the default model, 1 id per image token.

The mapping (model, its weights id, scheme, the id of the first image entry) is saved beside the
tokenizer (``vtok_image_tokens.json``) and checked against it on loading. ``write_interleaved``
turns `vtok tokenize` shards plus text into Parquet rows (``text``, ``input_ids``) that
``datasets.load_dataset("parquet", ...)`` and ``transformers.Trainer`` read as they are.

Needs the ``llm`` extra (transformers and tokenizers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import ModelLoadError, OptionalDependencyError, TokenError, VtokError
from .files import write_atomic
from .tokenizer import Tokenizer, load

__all__ = [
    "IMAGE_START",
    "IMAGE_END",
    "SCHEMES",
    "ImageVocabulary",
    "add_image_tokens",
    "word_tokenizer",
    "write_interleaved",
]

IMAGE_START = "<|vtok_image|>"
IMAGE_END = "<|/vtok_image|>"
SCHEMES = ("digit", "token")
MAPPING_FILE = "vtok_image_tokens.json"
FORMAT_NAME = "vtok-image-tokens"


def _require_transformers():
    try:
        import transformers
    except ImportError as e:
        raise OptionalDependencyError("transformers", "llm", "vtok.llm") from e
    return transformers


def _entries(scheme: str, alphabets: Sequence[int]) -> list[str]:
    """The vocabulary entries of one scheme, in id order."""
    if scheme == "token":
        return [f"<|vtok_{i}|>" for i in range(int(np.prod(alphabets)))]
    return [f"<|vtok_d{d}_{v}|>" for d, size in enumerate(alphabets) for v in range(size)]


@dataclass
class ImageVocabulary:
    """The image tokens of one vtok model inside `tokenizer`'s id space."""

    tokenizer: Any  # a transformers PreTrainedTokenizer(Fast)
    vtok: Tokenizer
    model: str  # what `vtok.load` was given (a shipped name or a folder)
    scheme: str
    first_id: int  # the hf id of the first image entry; the others follow in order
    start_id: int
    end_id: int

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def alphabets(self) -> tuple[int, ...]:
        return self.vtok.model.quantizer.digits.alphabets

    @property
    def num_entries(self) -> int:
        """New vocabulary entries for image tokens (boundaries not counted)."""
        return len(_entries(self.scheme, self.alphabets)) if self.scheme == "digit" else self.vtok.codebook_size

    @property
    def ids_per_token(self) -> int:
        return len(self.alphabets) if self.scheme == "digit" else 1

    def image_length(self, num_tokens: int) -> int:
        """hf ids of an image of `num_tokens` vtok tokens, boundaries included."""
        return num_tokens * self.ids_per_token + 2

    # -- vtok tokens <-> hf ids ----------------------------------------------------------------------
    def tokens_to_ids(self, tokens: Sequence[int] | np.ndarray | torch.Tensor) -> list[int]:
        """(k,) vtok token ids, 1 <= k <= K -> hf ids with the boundaries."""
        t = self.vtok.check_tokens(torch.as_tensor(np.asarray(tokens, dtype=np.int64)).reshape(1, -1))[0]
        if self.scheme == "token":
            body = t + self.first_id
        else:
            offsets = torch.tensor(np.cumsum((0, *self.alphabets[:-1])), dtype=torch.int64)
            body = (self.vtok.model.quantizer.digits.split(t) + offsets + self.first_id).reshape(-1)
        return [self.start_id, *body.tolist(), self.end_id]

    def ids_to_tokens(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """hf ids of one image (boundaries optional; a missing end is fine, as in a cut-off generation)
        -> (k,) vtok token ids. A partial last token (digit scheme) is dropped."""
        a = np.asarray(ids, dtype=np.int64).reshape(-1)
        if a.size and a[0] == self.start_id:
            a = a[1:]
        if a.size and a[-1] == self.end_id:
            a = a[:-1]
        body = a - self.first_id
        if body.size and (body.min() < 0 or body.max() >= self.num_entries):
            bad = int(a[(body < 0) | (body >= self.num_entries)][0])
            raise TokenError(
                f"id {bad} is not an image token of this vocabulary (image ids are {self.first_id}.."
                f"{self.first_id + self.num_entries - 1}, boundaries {self.start_id}/{self.end_id})"
            )
        if self.scheme == "token":
            tokens = body
        else:
            d = len(self.alphabets)
            groups = body[: body.size - body.size % d].reshape(-1, d)
            offsets = np.cumsum((0, *self.alphabets[:-1]))
            digits = groups - offsets
            if groups.size and ((digits < 0).any() or (digits >= np.asarray(self.alphabets)).any()):
                raise TokenError(
                    "the digit ids are out of order: each image token is one id per dimension, dimension 0 first"
                )
            tokens = self.vtok.model.quantizer.digits.join(digits)
        if tokens.size == 0:
            raise TokenError("no complete image token between the boundaries")
        if tokens.size > self.vtok.num_tokens:
            raise TokenError(f"{tokens.size} image tokens; this model decodes at most {self.vtok.num_tokens}")
        return tokens.astype(np.int64)

    def image_text(self, tokens: Sequence[int] | np.ndarray | torch.Tensor) -> str:
        """The string form of an image (its entries written out), to put inside ordinary text."""
        return "".join(self.tokenizer.convert_ids_to_tokens(self.tokens_to_ids(tokens)))

    # -- images ---------------------------------------------------------------------------------
    def encode_image(self, image: Any, num_tokens: int | None = None) -> list[int]:
        """A PIL image, array or file path -> hf ids (boundaries included) of its first `num_tokens`
        vtok tokens (all K by default)."""
        return self.tokens_to_ids(self.vtok.encode(image, num_tokens=num_tokens)[0])

    def decode_image(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> Image.Image:
        """hf ids of one image (any prefix length) -> a PIL image."""
        return self.vtok.decode_pil(torch.from_numpy(self.ids_to_tokens(ids))[None])[0]

    def find_images(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> list[tuple[int, int]]:
        """(start, end) index pairs of each image span (boundaries included) in a longer id sequence;
        an image left open at the end runs to the end."""
        a = np.asarray(ids, dtype=np.int64).reshape(-1)
        spans, start = [], None
        for i, v in enumerate(a.tolist()):
            if v == self.start_id:
                start = i
            elif v == self.end_id and start is not None:
                spans.append((start, i + 1))
                start = None
        if start is not None:
            spans.append((start, len(a)))
        return spans

    # -- saving --------------------------------------------------------------------------------------
    def mapping(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": 1,
            "model": self.model,
            "weights_id": self.vtok.weights_id().hex(),
            "scheme": self.scheme,
            "alphabets": list(self.alphabets),
            "num_tokens": self.vtok.num_tokens,
            "first_id": self.first_id,
            "num_entries": self.num_entries,
            "start": [IMAGE_START, self.start_id],
            "end": [IMAGE_END, self.end_id],
        }

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """The tokenizer (its own save_pretrained) and the mapping, in one folder."""
        folder = Path(folder)
        self.tokenizer.save_pretrained(str(folder))
        write_atomic(folder / MAPPING_FILE, json.dumps(self.mapping(), indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, tokenizer: Any = None, model: str | os.PathLike | None = None
    ) -> ImageVocabulary:
        """Reload what save_pretrained wrote. `tokenizer`: an already loaded tokenizer (default: the
        folder's, with AutoTokenizer, local files only); `model`: where the vtok model is now, if not
        where the mapping says (its weights must be the same)."""
        folder = Path(folder)
        path = folder / MAPPING_FILE
        if not path.is_file():
            raise ModelLoadError(f"{folder}: no {MAPPING_FILE} (save it with ImageVocabulary.save_pretrained)")
        try:
            m = json.loads(path.read_text())
            if m.get("format") != FORMAT_NAME:
                raise ValueError("not a vtok image-token mapping")
            scheme, first_id, start_id, end_id = m["scheme"], int(m["first_id"]), int(m["start"][1]), int(m["end"][1])
            ref, weights_id = str(model if model is not None else m["model"]), str(m["weights_id"])
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise ModelLoadError(f"{path}: unreadable ({e})") from e
        if scheme not in SCHEMES:
            raise ModelLoadError(f"{path}: unknown scheme {scheme!r}")
        if tokenizer is None:
            transformers = _require_transformers()
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        vtok = load(ref)
        if vtok.weights_id().hex() != weights_id:
            raise ModelLoadError(
                f"{path}: made for weights {weights_id}, but {ref} has weights {vtok.weights_id().hex()} "
                "(its tokens would decode to other pictures); pass model= the folder of the right weights"
            )
        vocab = cls(tokenizer, vtok, ref, scheme, first_id, start_id, end_id)
        _check_ids(vocab)
        return vocab


def _check_ids(vocab: ImageVocabulary) -> None:
    """Every entry of the mapping is in the tokenizer where the mapping says."""
    have = vocab.tokenizer.get_vocab()
    expected = {IMAGE_START: vocab.start_id, IMAGE_END: vocab.end_id}
    expected.update({e: vocab.first_id + i for i, e in enumerate(_entries(vocab.scheme, vocab.alphabets))})
    wrong = [e for e, i in expected.items() if have.get(e) != i]
    if wrong:
        raise ModelLoadError(
            f"the tokenizer does not hold the image tokens where the mapping says ({len(wrong)} differ, e.g. "
            f"{wrong[0]!r}: {have.get(wrong[0])} instead of {expected[wrong[0]]})"
        )


def add_image_tokens(
    tokenizer: Any, model: str | os.PathLike | Tokenizer = "default", scheme: str = "digit"
) -> ImageVocabulary:
    """Add the boundary tokens and `model`'s image tokens to a Hugging Face tokenizer (in place) and
    return the vocabulary that maps between them. Resize the LM's embeddings to ``len(tokenizer)``."""
    transformers = _require_transformers()
    if scheme not in SCHEMES:
        raise VtokError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    vtok = model if isinstance(model, Tokenizer) else load(model)
    ref = vtok.name if isinstance(model, Tokenizer) else str(model)
    if IMAGE_START in tokenizer.get_vocab():
        raise VtokError(f"the tokenizer already has {IMAGE_START}: reload it with ImageVocabulary.from_pretrained")
    added = transformers.AddedToken
    tokenizer.add_tokens(
        [added(t, special=True, normalized=False) for t in (IMAGE_START, IMAGE_END)], special_tokens=True
    )
    entries = _entries(scheme, vtok.model.quantizer.digits.alphabets)
    tokenizer.add_tokens([added(e, special=False, normalized=False) for e in entries])
    have = tokenizer.get_vocab()
    vocab = ImageVocabulary(tokenizer, vtok, ref, scheme, have[entries[0]], have[IMAGE_START], have[IMAGE_END])
    _check_ids(vocab)  # the new entries got consecutive ids
    return vocab


def word_tokenizer(texts: Iterable[str], lowercase: bool = True) -> Any:
    """A small word-level Hugging Face tokenizer over the words of `texts` (with [UNK], [PAD], [BOS]
    and [EOS]; BOS/EOS added around every encoded text), built on the spot with the `tokenizers`
    library: for experiments and tests that must not download a tokenizer."""
    transformers = _require_transformers()
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, normalizers, pre_tokenizers, processors

    specials = ["[UNK]", "[PAD]", "[BOS]", "[EOS]"]
    words: dict[str, int] = {w: i for i, w in enumerate(specials)}
    split = pre_tokenizers.Whitespace()
    for text in texts:
        for word, _ in split.pre_tokenize_str(text.lower() if lowercase else text):
            words.setdefault(word, len(words))
    raw = RawTokenizer(models.WordLevel(words, unk_token="[UNK]"))
    if lowercase:
        raw.normalizer = normalizers.Lowercase()
    raw.pre_tokenizer = split
    raw.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", words["[BOS]"]), ("[EOS]", words["[EOS]"])]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )


# -- interleaved training data -------------------------------------------------------------------
ORDERS = ("text-image", "image-text")


def write_interleaved(
    shards: str | os.PathLike,
    texts: Callable[[str, str | None], str | None] | dict[str, str],
    vocab: ImageVocabulary,
    out: str | os.PathLike,
    *,
    orders: Iterable[str] = ORDERS,
    num_tokens: int | None = None,
    views: Iterable[str] | None = ("original",),
    rows_per_file: int = 10_000,
) -> list[Path]:
    """`vtok tokenize` shards + a text per image -> Parquet files of training examples.

    `texts`: {shard key: text}, or a function (key, label) -> text (None: leave the image out).
    Each image gives one row per order: ``"text-image"`` is the text, then the image (generation),
    ``"image-text"`` the image, then the text (understanding). Columns: ``text`` (the example with
    the image written out as its entries), ``input_ids`` (the tokenizer's ids, with its BOS/EOS if it
    adds them), ``order`` and ``key``. `num_tokens`: keep a prefix of each image; `views`: which
    shard views to use (None: all)."""
    from .shards import TokenShards

    orders = tuple(orders)
    bad = [o for o in orders if o not in ORDERS]
    if bad or not orders:
        raise VtokError(f"orders must be from {', '.join(ORDERS)}, got {list(orders)}")
    data = TokenShards(shards)
    if data.tokenizer_id != vocab.vtok.weights_id().hex():
        raise VtokError(
            f"{shards}: tokenized by weights {data.tokenizer_id}, but the vocabulary's model has {vocab.vtok.weights_id().hex()}"
        )
    k = vocab.vtok._check_num_tokens(num_tokens)
    keep_views = None if views is None else set(views)
    lookup = texts.get if isinstance(texts, dict) else None
    rows: dict[str, list[Any]] = {"text": [], "input_ids": [], "order": [], "key": []}
    for i, key in enumerate(data.keys):
        if keep_views is not None and data.views[i] not in keep_views:
            continue
        label = data.label_names[data.labels[i]] if data.labels[i] >= 0 else None
        text = lookup(key) if lookup is not None else texts(key, label)  # type: ignore[operator]
        if text is None:
            continue
        image = vocab.image_text(data.tokens[i, :k])
        for order in orders:
            example = f"{text}{image}" if order == "text-image" else f"{image}{text}"
            rows["text"].append(example)
            rows["input_ids"].append(vocab.tokenizer(example)["input_ids"])
            rows["order"].append(order)
            rows["key"].append(key)
    if not rows["text"]:
        raise VtokError(f"{shards}: no image had a text (or a view in {sorted(keep_views or [])})")
    return _write_parquet(rows, Path(out), rows_per_file)


def _write_parquet(rows: dict[str, list[Any]], out: Path, rows_per_file: int) -> list[Path]:
    from .shards import _pyarrow

    pa, pq = _pyarrow()
    from .files import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    n, files = len(rows["text"]), []
    for j, start in enumerate(range(0, n, rows_per_file)):
        table = pa.table({name: values[start : start + rows_per_file] for name, values in rows.items()})
        path = out / f"part-{j:05d}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        files.append(path)
    return files
