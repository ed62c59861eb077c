"""The user-facing tokenizer: preprocessing + model, safe saving and strict loading."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._version import __version__
from .errors import ImageError, ModelLoadError, TokenError, VtokError
from .images import fit_square, load_image, pil_to_tensor, tensor_to_pil, to_rgb
from .models import TokenizerModel
from .pretrained import ModelFamily, clean_state_dict, hash_weights
from .registry import build_model, create_model

__all__ = ["Tokenizer", "load", "create_tokenizer", "shipped_models", "clean_state_dict", "ImageInput"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor | Sequence[Any]
WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT_NAME = "vtok-tokenizer"
FORMAT_VERSION = 1
MODEL_FILES = ("config.json", "model.safetensors", "prior.safetensors")  # what save_pretrained defines
FAMILY = ModelFamily(
    noun="model",
    article="a",
    title="tokenizer",
    shipped_dir=WEIGHTS_DIR,
    format_name=FORMAT_NAME,
    format_version=FORMAT_VERSION,
    files=MODEL_FILES,
)


class Tokenizer:
    """Turns images into ordered token sequences and any prefix of them back into images.

    Images in: file paths, PIL images, uint8 numpy arrays (H, W[, C]) or float tensors in
    [0, 1] of shape (3, H, W) / (B, 3, H, W); any size, resized by the documented policy
    (shorter side to ``image_size``, centre crop). Tokens out: int64 (B, k).
    """

    def __init__(self, model: TokenizerModel, name: str | None = None):
        self.model = model.eval()
        self.name = name or model.architecture
        self._prior = None
        self._fingerprint: bytes | None = None
        self._weights_id: bytes | None = None

    @property
    def prior(self):
        """The codec.TokenPrior used for entropy coding, if fitted or loaded; None otherwise."""
        return self._prior

    @prior.setter
    def prior(self, value) -> None:
        self._prior = value
        self._fingerprint = None

    def fingerprint(self) -> bytes:
        """SHA-256 over the weights and the token prior (what version-1 .vtok files name)."""
        if self._fingerprint is None:
            import hashlib

            h = hashlib.sha256()
            hash_weights(h, self.model)
            for p in self.prior.probs if self.prior is not None else []:
                h.update(p.tobytes())
            self._fingerprint = h.digest()
        return self._fingerprint

    def weights_id(self) -> bytes:
        """The first 4 bytes of the SHA-256 over the weights alone: what a .vtok file names, so
        that refitting the prior does not orphan bit-packed files."""
        if self._weights_id is None:
            import hashlib

            h = hashlib.sha256()
            hash_weights(h, self.model)
            self._weights_id = h.digest()[:4]
        return self._weights_id

    # -- description -------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def num_tokens(self) -> int:
        """K, the longest sequence this tokenizer makes."""
        return self.model.num_tokens

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def bytes_for(self, num_tokens: int) -> float:
        """Bytes that `num_tokens` tokens take at log2(codebook size) bits each."""
        return num_tokens * self.bits_per_token / 8

    def prefix_lengths(self) -> list[int]:
        """1, 2, 4, ... up to K (K included even when it is not a power of two)."""
        ks, k = [], 1
        while k < self.num_tokens:
            ks.append(k)
            k *= 2
        return ks + [self.num_tokens]

    def to(self, device: str | torch.device) -> Tokenizer:
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name={self.name!r}, architecture={self.model.architecture!r}, "
            f"image_size={self.image_size}, num_tokens={self.num_tokens}, codebook_size={self.codebook_size})"
        )

    # -- images in and out ---------------------------------------------------------------
    def preprocess(self, images: ImageInput) -> torch.Tensor:
        """Any supported input -> (B, 3, S, S) float32 in [0, 1] on the model's device."""
        if isinstance(images, torch.Tensor):
            batch = self._tensor_batch(images)
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            batch = torch.stack([self._one(a) for a in images])
        elif isinstance(images, (list, tuple)):
            if not images:
                raise ImageError("no images given")
            batch = torch.stack([self._one(item) for item in images])
        else:
            batch = self._one(images).unsqueeze(0)
        return batch.to(self.device)

    def _one(self, item: Any) -> torch.Tensor:
        if isinstance(item, (str, os.PathLike)):
            item = load_image(item)
        if isinstance(item, Image.Image):
            return pil_to_tensor(fit_square(to_rgb(item), self.image_size))
        if isinstance(item, np.ndarray):
            return pil_to_tensor(fit_square(to_rgb(_array_to_pil(item)), self.image_size))
        if isinstance(item, torch.Tensor):
            return self._tensor_batch(item)[0]
        raise ImageError(f"unsupported image input of type {type(item).__name__}")

    def _tensor_batch(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
            raise ImageError(f"image tensors must be (3, H, W) or (B, 3, H, W) with B >= 1, got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise ImageError(f"image tensors must be float in [0, 1] or uint8, got {x.dtype}")
        x = x.detach().float().cpu()
        if not torch.isfinite(x).all():
            raise ImageError("image tensor contains NaN or infinity")
        if x.min() < -1e-3 or x.max() > 1 + 1e-3:
            raise ImageError(
                f"image tensor values must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}] (vtok takes [0, 1], not [-1, 1])"
            )
        h, w = x.shape[-2:]
        s = self.image_size
        if (h, w) != (s, s):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[..., top : top + s, left : left + s]
        return x.clamp(0, 1)

    # -- tokens ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: ImageInput, num_tokens: int | None = None, batch_size: int = 64) -> torch.Tensor:
        """Images -> int64 tokens (B, k), k = num_tokens or K. ``encode(x, num_tokens=k)`` is
        exactly ``encode(x)[:, :k]``: the sequence is ordered, a shorter one is its prefix."""
        k = self._check_num_tokens(num_tokens)
        x = self.preprocess(images) * 2 - 1
        out = [self.model.encode(chunk).indices for chunk in x.split(batch_size)]
        return torch.cat(out)[:, :k]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor | Sequence[Any] | np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """Tokens (B, k) or (k,), any 1 <= k <= K -> images (B, 3, S, S) float32 in [0, 1]."""
        tokens = self.check_tokens(tokens)
        out = [self.model.decode(chunk) for chunk in tokens.split(batch_size)]
        return ((torch.cat(out) + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def decode_prefixes(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Full-length tokens (B, K) with a prefix length per image (B,) -> images (B, 3, S, S) in [0, 1]."""
        tokens = self.check_tokens(tokens)
        if tokens.shape[1] != self.num_tokens:
            raise TokenError(f"decode_prefixes needs all {self.num_tokens} token positions, got {tokens.shape[1]}")
        lengths = torch.as_tensor(lengths, dtype=torch.long).to(self.device)
        if lengths.shape != (tokens.shape[0],) or lengths.min() < 1 or lengths.max() > self.num_tokens:
            raise TokenError(f"lengths must be (B,) in 1..{self.num_tokens}")
        codes = self.model.quantizer.indices_to_codes(tokens)
        return ((self.model.decode_codes(codes, lengths) + 1) / 2).clamp(0, 1)

    def decode_pil(self, tokens: torch.Tensor | Sequence[Any] | np.ndarray) -> list[Image.Image]:
        return [tensor_to_pil(x) for x in self.decode(tokens)]

    @torch.no_grad()
    def reconstruct(self, images: ImageInput, num_tokens: int | None = None) -> torch.Tensor:
        return self.decode(self.encode(images, num_tokens=num_tokens))

    def check_tokens(self, tokens: Any) -> torch.Tensor:
        """Validate token ids and return them as an int64 (B, k) tensor on the model's device."""
        if isinstance(tokens, np.ndarray) or isinstance(tokens, (list, tuple)):
            try:
                tokens = torch.as_tensor(np.asarray(tokens))
            except (TypeError, ValueError) as e:
                raise TokenError(f"tokens must be a rectangular array of integers ({e})") from e
        if not isinstance(tokens, torch.Tensor):
            raise TokenError(f"tokens must be a tensor of integer ids, got {type(tokens).__name__}")
        if tokens.numel() == 0:
            raise TokenError("no tokens given: an image needs at least 1 token")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TokenError(f"tokens must have an integer dtype, got {tokens.dtype}")
        if tokens.ndim == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.ndim != 2 or tokens.shape[0] == 0:
            raise TokenError(f"tokens must have shape (B, k) with B >= 1, got {tuple(tokens.shape)}")
        self._check_num_tokens(tokens.shape[1])
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.codebook_size):
            raise TokenError(
                f"token ids must lie in [0, {self.codebook_size}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.long().to(self.device)

    def _check_num_tokens(self, k: int | None) -> int:
        if k is None:
            return self.num_tokens
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TokenError(f"num_tokens must be an integer, got {k!r}")
        if not 1 <= k <= self.num_tokens:
            raise TokenError(f"num_tokens (tokens per tile) must lie in 1..{self.num_tokens} for this model, got {k}")
        return int(k)

    # -- saving and loading ----------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "architecture": self.model.architecture,
            "config": asdict(self.model.config),
            "vtok_version": __version__,
        }

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write model.safetensors, config.json and, when there is a prior, prior.safetensors into `folder`.

        They are written into a temporary sibling folder that then replaces `folder` whole
        (:class:`~vtok.files.atomic_folder`), so that `folder` always holds one model, the old one or
        the new one: never the weights of one beside the config of the other after a kill or a full
        disk mid-export, nor a prior fitted for weights that are gone. Other files in `folder` (a
        README.md model card) are kept.
        """
        extra = {"prior.safetensors": self.prior.to_bytes()} if self.prior is not None else {}
        return FAMILY.save(folder, self.config_dict(), self.model, extra)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        model_card: str | None = None,
    ) -> Any:
        """Upload this tokenizer to the Hugging Face Hub as ``repo_id`` ("user/name"), creating it if needed.

        Uploads exactly what ``save_pretrained`` writes (model.safetensors, config.json, the prior
        if any) plus a README.md model card (`model_card`, or a generated one), so that
        ``vtok.load(repo_id)`` gets it back. Needs ``pip install 'vtok[hub]'`` and a Hub login
        (``hf auth login``) or `token`. Returns the commit info from ``HfApi.upload_folder``.
        """
        from .hub import push

        return push(
            self,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
            card=model_card,
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> Tokenizer:
        """Load a tokenizer from the first of these that `name_or_path` names:

        - a shipped model by name (``vtok.shipped_models()``, e.g. ``"default"``), offline; a folder
          of the same name in the working directory is loaded only as ``"./default"`` (with a warning);
        - a local folder written by ``save_pretrained`` (a local folder wins over a Hub id of the same name);
        - a Hugging Face Hub id, ``"user/repo"`` or ``"user/repo@revision"`` (branch, tag or commit),
          through ``huggingface_hub.snapshot_download`` and its cache (needs ``vtok[hub]``).

        Only config.json and safetensors files are read, never pickles; loading is strict.
        """
        folder = FAMILY.resolve(name_or_path)
        config_path, weights_path = FAMILY.model_files(folder)
        meta = _read_config(config_path)
        try:
            model = build_model(meta["architecture"], meta["config"])  # the config is checked before allocating
        except VtokError as e:
            raise ModelLoadError(f"{config_path}: {e}") from e
        FAMILY.load_weights(weights_path, model)  # shapes from the header first: a tampered file is not read whole
        tok = cls(model.to(device), name=meta.get("name") or folder.name)
        if (folder / "prior.safetensors").is_file():
            from .codec.prior import TokenPrior, symbol_alphabets

            tok.prior = TokenPrior.load(
                folder / "prior.safetensors", model.num_tokens, symbol_alphabets(model.quantizer)
            )
        return tok


def _read_config(path: Path) -> dict[str, Any]:
    """config.json (size, JSON, depth, format: :meth:`ModelFamily.read_config`) and the fields
    from_pretrained uses, of the right types."""
    meta = FAMILY.read_config(path)
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("architecture"), str):
        raise ModelLoadError(f"{path}: needs 'architecture' and 'config'")
    if meta.get("name") is not None and not isinstance(meta["name"], str):
        raise ModelLoadError(f"{path}: 'name' must be a string, got {type(meta['name']).__name__}")
    return meta


def shipped_models() -> list[str]:
    """Names of the pretrained models that ship inside the package."""
    return FAMILY.shipped()


def _array_to_pil(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or a.size == 0:
        raise ImageError(f"numpy images must be (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.dtype == np.uint8:
        return Image.fromarray(a)
    if a.dtype == np.uint16:
        return Image.fromarray((a.astype(np.float64) / 257.0 + 0.5).astype(np.uint8))
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < -1e-3 or a.max() > 1 + 1e-3:
            raise ImageError("float numpy images must be finite and lie in [0, 1]")
        return Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))
    raise ImageError(f"unsupported numpy dtype {a.dtype}: use uint8, uint16 or float in [0, 1]")


def load(name_or_path: str | os.PathLike = "default", device: str | torch.device = "cpu") -> Tokenizer:
    """Load a tokenizer: ``vtok.load("default")`` (shipped, offline), ``vtok.load("path/to/folder")``
    or ``vtok.load("user/repo")`` (Hugging Face Hub); see :meth:`Tokenizer.from_pretrained`."""
    return Tokenizer.from_pretrained(name_or_path, device=device)


def create_tokenizer(name: str, **overrides: Any) -> Tokenizer:
    """Build a new tokenizer of a registered variant, to train or to test with; not to load weights.

    Args:
        name: a variant from ``vtok.list_tokenizers()``, e.g. ``"ordered1d-small"``.
        **overrides: model config keys to change (e.g. ``num_tokens=32``); an unknown variant or
            key raises :class:`~vtok.errors.ConfigError`.

    Returns:
        An untrained :class:`Tokenizer`: randomly initialised weights and no token prior, so its
        reconstructions mean nothing until it is trained (``vtok train`` with ``model.name``).
        Use :func:`load` for trained weights.
    """
    return Tokenizer(create_model(name, **overrides), name=name)
