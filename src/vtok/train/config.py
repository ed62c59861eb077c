"""Training configuration: defaults, then a YAML file, then ``key=value`` overrides.

Only the trainer reads this object; models get explicit arguments from the registry. The
merged result is written as ``config.yaml`` into every run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .adversarial import AdversarialSettings
from .distill import DistillSettings

__all__ = ["TrainConfig", "load_config", "load_run_config", "config_to_dict", "RESOURCE_KEYS"]

# Keys that say how a run is carried out, not what it computes: --resume may change them.
RESOURCE_KEYS = frozenset(
    {"out_dir", "device", "threads", "data.workers", "log_every", "eval_every", "checkpoint_every"}
)


@dataclass
class ModelSection:
    name: str = "ordered1d-small"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a tokenizer folder (or shipped name) to warm-start from; strict
    # "all"; "decoder": the encoder and quantizer stay as init_from left them, so every image
    # keeps its tokens (and the token prior and token LMs made for them stay valid); "encoder": the
    # decoder stays as init_from left it and the encoder learns to say more through it
    trainable: str = "all"


@dataclass
class DataSection:
    train_dir: str = ""
    val_dir: str | None = None
    val_images: int = 64
    min_scale: float = 0.1  # smallest crop, as a fraction of the (reduced) image's shorter side squared
    max_side: int = 768  # images are first reduced so that their shorter side is at most this
    hflip: bool = True
    color_jitter: float = 0.05
    workers: int = 0
    # sources (first sub-folders of train_dir) left out of training, to hold out whole sources
    exclude_sources: list[str] = field(default_factory=list)
    source_balance: float = 0.5  # a source (first sub-folder) is drawn ~ count**balance: 1 = per photo, 0 = per source
    flat_fraction: float = 0.0  # share of training images replaced by flat colours / gradients (colour fidelity)
    flat_extremes: float = 0.0  # chance each channel of those colours is pinned to 0 or 1 (the cube's faces)
    in_memory: bool = False  # decode every image once and cut crops on the training device (for GPUs)


@dataclass
class OptimSection:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0


@dataclass
class LossSection:
    l1: float = 1.0
    l2: float = 0.0
    ssim: float = 0.2
    perceptual: float = 0.0
    perceptual_backbone: str = "efficientnet-lite0"
    perceptual_prefix_power: float = 2.0  # an image decoded from k of K tokens gets perceptual weight (k/K)**power
    perceptual_weights: str | None = None  # a local weight file for the backbone; None: the installed one
    full_length_prob: float = 0.25  # share of images trained with all K tokens; the rest get a random prefix
    # semantic alignment (train/alignment.py): weight of 1 - cos between an MLP of the first k tokens'
    # codes and EfficientNet-Lite0's pooled features of the photo, over k = 1, 2, 4, ..., align_max_prefix
    align: float = 0.0
    align_max_prefix: int = 16


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    gan: AdversarialSettings = field(default_factory=AdversarialSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)  # searched tokens as the encoder's targets
    out_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    amp: bool = True  # bf16 autocast on CUDA
    amp_cpu: bool = False  # bf16 autocast on the CPU too (1.6-2x faster steps on cores with AVX-512 BF16)
    ema_decay: float = 0.999
    log_every: int = 10
    eval_every: int = 250
    checkpoint_every: int = 100


def loop_settings(config: Any) -> Any:
    """The generic loop's settings from a run config (TrainConfig, LMTrainConfig: both carry these keys)."""
    from .loop import LoopSettings

    o = config.optim
    return LoopSettings(
        out_dir=Path(config.out_dir),
        steps=o.steps,
        lr=o.lr,
        warmup_steps=o.warmup_steps,
        min_lr_ratio=o.min_lr_ratio,
        weight_decay=o.weight_decay,
        beta1=o.beta1,
        beta2=o.beta2,
        grad_clip=o.grad_clip,
        ema_decay=config.ema_decay,
        amp=config.amp,
        amp_cpu=getattr(config, "amp_cpu", False),
        log_every=config.log_every,
        eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every,
    )


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), schema: type = TrainConfig
) -> Any:
    """Defaults <- YAML file <- ``section.key=value`` overrides (values parsed as YAML), checked
    against `schema`, a dataclass whose dataclass-typed fields are sections and whose dict-typed
    fields are free mappings (merged key by key)."""
    data = _as_data(schema())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        _merge(data, loaded, prefix="")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        nested: dict[str, Any] = {}
        cursor = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        _merge(data, nested, prefix="")
    return _build(schema, data, "")


def _merge(base: dict[str, Any], new: dict[str, Any], prefix: str) -> None:
    """Merge `new` into `base` (both from the schema's shape): sections recurse, mappings merge."""
    for key, value in new.items():
        if key not in base:
            known = ", ".join(sorted(base))
            import difflib

            close = difflib.get_close_matches(str(key), list(base), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint} (known here: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {prefix}{key} is a section or mapping, not a value")
            if _is_section(base[key]):
                _merge(base[key], value, prefix=f"{prefix}{key}.")
            else:
                base[key] = {**base[key], **value}
        else:
            base[key] = value


def _is_section(value: dict[str, Any]) -> bool:
    return isinstance(value, _Section)


class _Section(dict):
    """A dataclass section in the dict form of a config (mappings stay plain dicts)."""


def _as_data(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _Section({f.name: _as_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    return obj


def _build(cls: type, data: dict[str, Any], prefix: str):
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = data[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[f.name] = _build(type(default), value, f"{prefix}{f.name}.")
            continue
        if isinstance(default, list) and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{prefix}{f.name} must be a list of names, got {value!r}")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{prefix}{f.name} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
                try:
                    value = float(value)
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{prefix}{f.name} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
                if not value.is_integer():
                    raise ConfigError(f"{prefix}{f.name} must be a whole number, got {value!r}")
                value = int(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def load_run_config(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    schema: type = TrainConfig,
    command: str = "vtok train",
) -> Any:
    """The config of a run (of `schema`, started by `command`). `path` is a YAML file or a run folder (its ``config.yaml``). With
    `resume`, a run folder that already holds a ``config.yaml`` keeps it: the file and overrides
    given now may only change RESOURCE_KEYS; anything else would silently change the run, so it
    is refused."""
    run_folder = None
    if path is not None and Path(path).is_dir():
        run_folder = Path(path)
        path = run_folder / "config.yaml"
        if not path.is_file():
            raise ConfigError(f"{run_folder}: a folder without config.yaml is not a run folder")
    config = load_config(path, overrides, schema=schema)
    if run_folder is not None:  # the run folder is the out_dir, wherever the command runs from
        config.out_dir = str(run_folder)
    saved_path = Path(config.out_dir) / "config.yaml"
    if not resume or not saved_path.is_file():
        return config
    saved = load_config(saved_path, schema=schema)
    new_flat, old_flat = _flatten(_as_data(config)), _flatten(_as_data(saved))
    changed = sorted(k for k in new_flat.keys() | old_flat.keys() if new_flat.get(k) != old_flat.get(k))
    refused = [k for k in changed if k not in RESOURCE_KEYS]
    if refused:
        shown = ", ".join(f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}" for k in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        raise ConfigError(
            f"--resume would change the run in {saved_path.parent} ({shown}{more}); resume with "
            f"`{command} {saved_path.parent} --resume`, or start a new out_dir"
        )
    for key in changed:  # resource keys only
        section, _, name = key.rpartition(".")
        target = getattr(saved, section) if section else saved
        setattr(target, name, getattr(getattr(config, section) if section else config, name))
    return saved


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, _Section):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
