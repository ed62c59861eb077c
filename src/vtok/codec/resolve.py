"""Which model, and which prior or token LM, an encode uses or a file names: loaded once and cached.

A model or LM named by a folder is cached under the folder's files' modification times, so a
refitted prior or retrained LM in the same folder is loaded again; a shipped name or an object
passes through. A file names its weights (and its prior or LM) by id: the shipped models and LMs
are searched for them unless the caller gives one, which must then match.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ..errors import FormatError
from ..tokenizer import Tokenizer, load
from .format import VtokFile, peek_header

__all__ = ["find_lm", "find_model", "lm_id_of", "token_lm", "tokenizer_for"]


def _stamp(folder: Path, names: tuple[str, ...]) -> tuple[int, ...]:
    """Modification times of a model folder's files: part of the cache key, so a changed file
    reloads (read on every call: a stat is cheap, a stale model is not)."""
    return tuple((folder / name).stat().st_mtime_ns if (folder / name).is_file() else 0 for name in names)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, stamp: tuple[int, ...]) -> Tokenizer:
    return load(name)


def tokenizer_for(model: str | os.PathLike | Tokenizer) -> Tokenizer:
    if isinstance(model, Tokenizer):
        return model
    # A folder's files may change (a refitted prior): their modification times are part of the key.
    return _load_cached(str(model), _stamp(Path(model), ("config.json", "model.safetensors", "prior.safetensors")))


@functools.lru_cache(maxsize=4)
def _load_lm_cached(name: str, stamp: tuple[int, ...]):
    from ..lm import load as load_lm

    return load_lm(name)


def token_lm(lm):
    """A TokenLM from a TokenLM, a shipped LM name or an LM folder (cached like tokenizers)."""
    from ..lm import TokenLM

    if isinstance(lm, TokenLM):
        return lm
    return _load_lm_cached(str(lm), _stamp(Path(lm), ("config.json", "model.safetensors")))


def lm_id_of(lm) -> bytes:
    """The LM's 4-byte id, computed once per LM object (it hashes every weight)."""
    from ..lm import lm_id

    cached = getattr(lm, "_vtok_lm_id", None)
    if cached is None:
        cached = lm_id(lm)
        lm._vtok_lm_id = cached
    return cached


def find_model(data: bytes, model: str | os.PathLike | Tokenizer | None) -> Tokenizer:
    """The tokenizer a file names: `model` when given (and it must match), else the shipped one
    whose weights the file names."""
    from ..tokenizer import shipped_models

    header = peek_header(data)
    if model is not None:
        tok = tokenizer_for(model)
        if header.version >= 2 and header.model_id != tok.weights_id():
            raise FormatError(
                f"this file was made by another model (weights id {header.model_id.hex()}); "
                f"{tok.name} has weights id {tok.weights_id().hex()}"
            )
        if header.version == 1 and header.model_id != tok.fingerprint()[:4]:
            raise FormatError(
                f"this version-1 file was made by another model or prior (id {header.model_id.hex()}); "
                f"{tok.name} with its prior has id {tok.fingerprint()[:4].hex()}"
            )
        return tok
    for name in shipped_models():
        tok = tokenizer_for(name)
        if header.model_id in (tok.weights_id(), tok.fingerprint()[:4]):
            return tok
    raise FormatError(
        f"this file was made by a model that does not ship with vtok (weights id {header.model_id.hex()}): "
        "give that model's folder (--model FOLDER, or model=...)"
    )


def find_lm(f: VtokFile, tok: Tokenizer, lm):
    """The token LM an LM-coded file names: `lm` when given (and it must match), else a shipped one."""
    from ..lm import shipped_lms

    assert f.prior_id is not None  # read_file reads the LM id of every LM-coded file
    if lm is not None:
        lm = token_lm(lm)
        if lm_id_of(lm) != f.prior_id:
            raise FormatError(
                f"this file is coded under token LM {f.prior_id.hex()}; {lm.name} is LM {lm_id_of(lm).hex()}"
            )
        return lm
    for name in shipped_lms():
        candidate = token_lm(name)
        if lm_id_of(candidate) == f.prior_id:
            return candidate
    raise FormatError(
        f"this file is coded under token LM {f.prior_id.hex()}, which does not ship with vtok: "
        "give that LM's folder (--lm FOLDER, or lm=...)"
    )
