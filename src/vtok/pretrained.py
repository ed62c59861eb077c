"""Model folders on disk, one layer for every model family: tokenizers and token LMs.

A model folder holds config.json (what to build) and model.safetensors (its weights), perhaps more
(a tokenizer's prior.safetensors, a README.md model card). A :class:`ModelFamily` says what differs
between families (the package folder of shipped models, the format name in config.json, the noun
used in messages); everything else is here, once:

- :meth:`ModelFamily.resolve`: a shipped name, a local folder or a Hugging Face Hub id -> a folder;
- :meth:`ModelFamily.shipped`: the shipped names;
- :meth:`ModelFamily.read_config`: config.json of a sane size and nesting depth, of this family's format;
- :meth:`ModelFamily.load_weights`: the safetensors header's names and shapes checked against the model
  before any data is read, then strict loading and a finiteness check;
- :meth:`ModelFamily.save`: config.json + model.safetensors written atomically into a folder (other
  files in it, a model card, kept).

Only JSON and safetensors are ever read, never pickles. Lower layers only: this module imports
errors, files and hub, never a model family.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from .errors import ModelLoadError

__all__ = [
    "state_dict_mismatch",
    "ModelFamily",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "clean_state_dict",
    "hash_weights",
    "json_depth",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20  # a tokenizer's config.json is about 1 KB
MAX_CONFIG_DEPTH = 32  # a vtok config.json nests 4 levels deep (levels in quantizer in config)

_V = TypeVar("_V")


@dataclass(frozen=True)
class ModelFamily:
    """What one family of models (tokenizers, token LMs) keeps on disk, and how it is named.

    `noun` and `article` make the messages ("neither a model folder, a shipped model ...", "an LM
    folder holds ..."); `title` names the family in "not a vtok <title> config"; `shipped_dir` is the
    package folder with one folder per shipped name; `format_name` and `format_version` are what
    config.json declares; `files` are the files ``save`` defines (an old copy of one is dropped when a
    new save lacks it); `max_config_bytes` bounds config.json.
    """

    noun: str
    article: str
    title: str
    shipped_dir: Path
    format_name: str
    format_version: int = 1
    files: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)
    max_config_bytes: int = MAX_CONFIG_BYTES

    # -- names ----------------------------------------------------------------------------------
    def shipped(self) -> list[str]:
        """Names of the models of this family that ship inside the package."""
        if not self.shipped_dir.is_dir():
            return []
        return sorted(p.name for p in self.shipped_dir.iterdir() if (p / CONFIG_FILE).is_file())

    def resolve(self, name_or_path: str | os.PathLike, *, stacklevel: int = 3) -> Path:
        """The folder `name_or_path` names: a shipped name, then a local folder, then a Hub id.

        A bare shipped name always means the shipped model: a folder that happens to carry the same
        name in the working directory is loaded only as ``./name``, and the bare name warns while it
        exists. A local folder wins over a Hub id of the same spelling. `stacklevel` points that
        warning at the caller of the loader (resolve <- loader <- caller: 3).
        """
        from .hub import download, parse_hub_id

        path = Path(name_or_path)
        shipped = self.shipped()
        if isinstance(name_or_path, str) and name_or_path in shipped:
            if path.is_dir():
                warnings.warn(
                    f"loading the shipped {self.noun} {name_or_path!r}, not the folder ./{name_or_path}: "
                    f"pass './{name_or_path}' to load the folder",
                    stacklevel=stacklevel,
                )
            return self.shipped_dir / name_or_path
        if path.is_dir():
            return path
        if path.exists():
            raise ModelLoadError(
                f"{name_or_path}: a file, not {self.article} {self.noun} folder ({CONFIG_FILE} + {WEIGHTS_FILE})"
            )
        if isinstance(name_or_path, str) and (self.shipped_dir / name_or_path / CONFIG_FILE).is_file():
            return self.shipped_dir / name_or_path
        if isinstance(name_or_path, str) and parse_hub_id(name_or_path) is not None:
            return download(name_or_path, what=self.title)
        raise ModelLoadError(
            f"{name_or_path}: neither {self.article} {self.noun} folder, a shipped {self.noun} "
            f"(shipped: {', '.join(shipped) or 'none'}) nor a Hugging Face Hub id ('user/repo[@revision]')"
        )

    def model_files(self, folder: Path) -> tuple[Path, Path]:
        """(config.json, model.safetensors) of `folder`; a ModelLoadError naming the one missing."""
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for p in (config_path, weights_path):
            if not p.is_file():
                raise ModelLoadError(
                    f"{folder}: missing {p.name} ({self.article} {self.noun} folder holds {CONFIG_FILE} and {WEIGHTS_FILE})"
                )
        return config_path, weights_path

    # -- config.json ----------------------------------------------------------------------------
    def read_config(self, path: Path) -> dict[str, Any]:
        """config.json, checked as far as it can be without the model: readable, valid JSON of a
        sane size and depth (a tampered file must not exhaust memory or the recursion limit), of
        this family's format and format version. The family checks its own fields after."""
        limit = self.max_config_bytes
        try:
            size = path.stat().st_size
            if size > limit:
                raise ModelLoadError(f"{path}: {size} bytes is too large for a config (at most {limit})")
            meta = json.loads(path.read_bytes())
        except OSError as e:
            raise ModelLoadError(f"{path}: {e.strerror or e}") from e
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
            raise ModelLoadError(f"{path}: not valid JSON ({e})") from e
        except RecursionError as e:
            raise ModelLoadError(f"{path}: JSON nested too deeply (at most {MAX_CONFIG_DEPTH} levels)") from e
        if json_depth(meta) > MAX_CONFIG_DEPTH:
            raise ModelLoadError(f"{path}: JSON nested too deeply (at most {MAX_CONFIG_DEPTH} levels)")
        if not isinstance(meta, dict) or meta.get("format") != self.format_name:
            raise ModelLoadError(f"{path}: not a vtok {self.title} config")
        if meta.get("format_version") != self.format_version:
            raise ModelLoadError(f"{path}: format_version {meta.get('format_version')!r} is not supported")
        return meta

    # -- model.safetensors ----------------------------------------------------------------------
    def load_weights(self, path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Load `path` into `model` strictly and return the state read.

        The names and shapes in the safetensors header are checked against `model` first, so that
        a tampered file declaring other (perhaps huge) tensors is refused before its data is read;
        then the tensors are loaded (wrapper prefixes stripped), strictly, and refused if any holds
        NaN or infinity.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        check_weight_shapes(path, model)
        try:
            state = clean_state_dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: unreadable weights ({e})") from e
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ModelLoadError(f"{path}: weights do not match config.json ({' '.join(first[:3])[:400]})") from e
        check_finite(state, path)
        return state

    # -- writing ----------------------------------------------------------------------------------
    def save(
        self,
        folder: str | os.PathLike,
        meta: Mapping[str, Any],
        model: torch.nn.Module,
        extra: Mapping[str, bytes] | None = None,
    ) -> Path:
        """Write model.safetensors, config.json (`meta`) and the `extra` files into `folder`, atomically.

        They are written into a temporary sibling folder that then replaces `folder` whole
        (:class:`~vtok.files.atomic_folder`): `folder` holds the old model or the new one, never the
        weights of one beside the config of the other after a kill or a full disk. An old copy of a
        file in ``files`` that this save lacks is dropped; every other file (a README.md) is kept.
        """
        from safetensors.torch import save

        from .files import atomic_folder

        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        files = {
            WEIGHTS_FILE: save(state, metadata={"format": self.format_name}),
            CONFIG_FILE: (json.dumps(meta, indent=2) + "\n").encode(),
            **(extra or {}),
        }
        with atomic_folder(folder, owned=self.files) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
        return Path(folder)


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (so that depth itself cannot overflow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack += [(child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def check_weight_shapes(path: Path, model: torch.nn.Module) -> None:
    """The names and shapes in a safetensors file's header against `model`'s state, data unread."""
    from .files import safetensors_shapes

    try:
        found = {k: shape for k, (_, shape) in clean_state_dict(safetensors_shapes(path)).items()}
    except OSError as e:
        raise ModelLoadError(f"{path}: {e.strerror or e}") from e
    except ValueError as e:
        raise ModelLoadError(f"{path}: unreadable weights ({e})") from e
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    if wrong:
        k = wrong[0]
        raise ModelLoadError(
            f"{path}: weights do not match config.json ({len(wrong)} tensor(s) differ, e.g. {k!r}: "
            f"{found.get(k, 'missing')} in the file, {expected.get(k, 'none')} expected)"
        )


def check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Weights with NaN or infinity make garbage silently: refuse them on loading."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelLoadError(f"{path}: tensor {key!r} holds NaN or infinite values")


def clean_state_dict(state: dict[str, _V]) -> dict[str, _V]:
    """Strip the prefixes DistributedDataParallel ('module.') and torch.compile ('_orig_mod.') add."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def hash_weights(h: Any, model: torch.nn.Module) -> None:
    """Feed `model`'s state into the hash `h`, name then bytes, in name order: what weights ids hash."""
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())


def state_dict_mismatch(expected: dict, state: dict) -> str | None:
    """How `state` fails to fit a module whose state_dict is `expected`, in one line ("2 missing
    (first: a.b); 1 of another shape (first: c)"), or None when every name and shape fits."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = [
        f"{len(keys)} {label} (first: {keys[0]})"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong_shape))
        if keys
    ]
    return "; ".join(parts) or None
