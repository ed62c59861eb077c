"""Token LMs on disk: model.safetensors + config.json, loaded strictly, never unpickled.

config.json names the tokenizer the LM belongs to (how to load it, and its weights id), so a
sample is decoded, and a file coded, only with the tokenizer whose tokens the LM learned. Resolving
names, reading config.json, checking and loading the weights and writing the folder are the layer
tokenizers share (:mod:`vtok.pretrained`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import ConfigError, ModelLoadError, VtokError
from ..pretrained import ModelFamily, hash_weights
from .model import LMConfig, TokenLM

__all__ = ["save_pretrained", "load", "shipped_lms", "lm_id", "LM_WEIGHTS_DIR", "FORMAT_NAME"]

FORMAT_NAME = "vtok-lm"
FORMAT_VERSION = 1
LM_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "lm_weights"
LM_FILES = ("model.safetensors", "config.json")
MAX_CONFIG_BYTES = 1 << 22  # class names may take some room; a config is a few KB
FAMILY = ModelFamily(
    noun="LM",
    article="an",
    title="token LM",
    shipped_dir=LM_WEIGHTS_DIR,
    format_name=FORMAT_NAME,
    format_version=FORMAT_VERSION,
    files=LM_FILES,
    max_config_bytes=MAX_CONFIG_BYTES,
)


def shipped_lms() -> list[str]:
    """Names of the token LMs that ship inside the package."""
    return FAMILY.shipped()


def lm_id(model: TokenLM) -> bytes:
    """4 bytes naming the LM's weights and config: what an LM-coded .vtok file records."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    hash_weights(h, model)
    return h.digest()[:4]


def save_pretrained(model: TokenLM, folder: str | os.PathLike) -> Path:
    """Write the LM into `folder` atomically (the folder holds the old LM or the new one, never half;
    other files in it, a README.md model card, are kept)."""
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": model.name,
        "config": model.config.to_dict(),
        "tokenizer": {"name": model.tokenizer_name, "weights_id": model.tokenizer_id},
        "classes": list(model.classes),
        "vtok_version": __version__,
    }
    return FAMILY.save(folder, meta, model)


def _read_meta(path: Path) -> dict[str, Any]:
    """config.json (size, JSON, depth, format: :meth:`~vtok.pretrained.ModelFamily.read_config`)
    with a config mapping."""
    meta = FAMILY.read_config(path)
    if not isinstance(meta.get("config"), dict):
        raise ModelLoadError(f"{path}: needs 'config'")
    return meta


def load(name_or_path: str | os.PathLike = "default", device: str | torch.device = "cpu") -> TokenLM:
    """A token LM: ``vtok.lm.load("default")`` (shipped, offline), a folder written by
    ``save_pretrained`` / ``vtok lm-train``, or a Hugging Face Hub id ``"user/repo[@revision]"``
    (needs ``vtok[hub]``), resolved as :meth:`vtok.Tokenizer.from_pretrained` resolves tokenizers."""
    folder = FAMILY.resolve(name_or_path)
    config_path, weights_path = FAMILY.model_files(folder)
    meta = _read_meta(config_path)
    try:
        values = dict(meta["config"])
        if isinstance(values.get("alphabets"), list):
            values["alphabets"] = list(values["alphabets"])
        model = TokenLM(LMConfig(**values))
    except TypeError as e:
        raise ModelLoadError(f"{config_path}: unknown or missing LM config keys ({e})") from e
    except VtokError as e:
        raise ModelLoadError(f"{config_path}: {e}") from e
    FAMILY.load_weights(weights_path, model)  # shapes from the header first: a tampered file is not read whole
    tokenizer = meta["tokenizer"] if isinstance(meta.get("tokenizer"), dict) else {}
    classes = meta.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ModelLoadError(f"{config_path}: classes must be a list of names")
    if classes and len(classes) != model.config.num_classes:
        raise ModelLoadError(f"{config_path}: {len(classes)} class names for num_classes {model.config.num_classes}")
    model.name = str(meta.get("name") or folder.name)
    model.tokenizer_name = tokenizer.get("name") if isinstance(tokenizer.get("name"), str) else None
    model.tokenizer_id = tokenizer.get("weights_id") if isinstance(tokenizer.get("weights_id"), str) else None
    model.classes = classes
    return model.to(device).eval()


def load_tokenizer_for(model: TokenLM, tokenizer: Any = None):
    """The tokenizer whose tokens `model` learned: `tokenizer` (a Tokenizer, name or folder) or the
    one its config names; refused when its weights id is not the one the LM was trained on."""
    from ..tokenizer import Tokenizer
    from ..tokenizer import load as load_tokenizer

    if tokenizer is None:
        if not model.tokenizer_name:
            raise ConfigError(f"LM {model.name!r} does not name its tokenizer: give one (--model)")
        tokenizer = model.tokenizer_name
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    problem = tokenizer_mismatch(model, tok)
    if problem:
        raise ModelLoadError(problem)
    return tok


def tokenizer_mismatch(model: TokenLM, tok) -> str | None:
    """Why `model` cannot stand for `tok`'s token sequences (another tokenizer's weights, another
    codebook or length), or None: one rule for decoding samples and for coding files."""
    if model.tokenizer_id and tok.weights_id().hex() != model.tokenizer_id:
        return (
            f"LM {model.name!r} was trained on the tokens of tokenizer {model.tokenizer_id}, "
            f"not of {tok.name} ({tok.weights_id().hex()})"
        )
    if list(tok.model.quantizer.symbol_alphabets()) != model.alphabets or tok.num_tokens != model.num_positions:
        return f"LM {model.name!r} does not fit tokenizer {tok.name} (codebook or length differ)"
    return None
