"""Token LMs on disk: model.safetensors + config.json, loaded strictly, never unpickled.

config.json names the tokenizer the LM belongs to (how to load it, and its weights id), so a
sample is decoded, and a file coded, only with the tokenizer whose tokens the LM learned.
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
from .model import LMConfig, TokenLM

__all__ = ["save_pretrained", "load", "shipped_lms", "lm_id", "LM_WEIGHTS_DIR", "FORMAT_NAME"]

FORMAT_NAME = "vtok-lm"
LM_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "lm_weights"
LM_FILES = ("model.safetensors", "config.json")
MAX_CONFIG_BYTES = 1 << 22  # class names may take some room; a config is a few KB


def shipped_lms() -> list[str]:
    if not LM_WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in LM_WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())


def lm_id(model: TokenLM) -> bytes:
    """4 bytes naming the LM's weights and config: what an LM-coded .vtok file records."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()[:4]


def save_pretrained(model: TokenLM, folder: str | os.PathLike) -> Path:
    """Write the LM into `folder` atomically (the folder holds the old LM or the new one, never half)."""
    from safetensors.torch import save

    from ..files import atomic_folder

    meta = {
        "format": FORMAT_NAME,
        "format_version": 1,
        "name": model.name,
        "config": model.config.to_dict(),
        "tokenizer": {"name": model.tokenizer_name, "weights_id": model.tokenizer_id},
        "classes": list(model.classes),
        "vtok_version": __version__,
    }
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_folder(folder, owned=LM_FILES) as tmp:
        (tmp / "model.safetensors").write_bytes(save(state, metadata={"format": FORMAT_NAME}))
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(folder)


def _resolve(name_or_path: str | os.PathLike) -> Path:
    if isinstance(name_or_path, str) and name_or_path in shipped_lms():
        return LM_WEIGHTS_DIR / name_or_path
    path = Path(name_or_path)
    if path.is_dir():
        return path
    raise ModelLoadError(
        f"{name_or_path}: neither an LM folder (config.json + model.safetensors) nor a shipped LM "
        f"(shipped: {', '.join(shipped_lms()) or 'none'})"
    )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelLoadError(f"{path}: over {MAX_CONFIG_BYTES} bytes, not an LM config")
        meta = json.loads(path.read_text())
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read ({e.strerror or e})") from e
    except (ValueError, RecursionError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({str(e)[:200]})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or not isinstance(meta.get("config"), dict):
        raise ModelLoadError(f"{path}: not a vtok token-LM config (format {FORMAT_NAME!r} with a config mapping)")
    return meta


def load(name_or_path: str | os.PathLike = "default", device: str | torch.device = "cpu") -> TokenLM:
    """A token LM: ``vtok.lm.load("default")`` (shipped, offline) or a folder written by
    ``save_pretrained`` / ``vtok lm-train``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = _resolve(name_or_path)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    for p in (config_path, weights_path):
        if not p.is_file():
            raise ModelLoadError(f"{folder}: missing {p.name} (an LM folder holds config.json and model.safetensors)")
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
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{weights_path}: unreadable weights ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{weights_path}: weights do not match config.json ({str(e)[:300]})") from e
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelLoadError(f"{weights_path}: tensor {key!r} holds NaN or infinite values")
    tokenizer = meta.get("tokenizer") or {}
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
