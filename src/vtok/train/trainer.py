"""The trainer: the only reader of TrainConfig.

It turns the config into explicit settings for the generic :class:`~vtok.train.loop.TrainLoop`
and the :class:`~vtok.train.tokenizer_task.TokenizerTask`, and writes the merged config as
``config.yaml`` into the run folder. Runs on CPU by default, on CUDA when present, and
data-parallel under ``torchrun``. Everything needed to continue after a kill is in
``checkpoint.pt``, written atomically.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data import RandomCropDataset, load_images, scan_images, source_weights
from ..errors import ConfigError, ImageError, ModelLoadError
from ..files import atomic_path
from ..pretrained import state_dict_mismatch
from ..registry import build_model, create_model, variant_config
from ..tokenizer import Tokenizer
from .alignment import AlignmentSettings, SemanticAlignment
from .config import TrainConfig, config_to_dict, loop_settings
from .distill import SearchTargets, make_search_targets
from .loop import Distributed, TrainLoop
from .losses import ReconstructionLoss
from .tokenizer_task import DataSettings, TokenizerTask, sample_prefix_lengths

__all__ = ["Trainer", "sample_prefix_lengths"]
log = logging.getLogger("vtok.train")


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = c = config
        if not c.data.train_dir:
            raise ConfigError("data.train_dir is not set: give the folder of training images")
        if c.optim.steps < 1 or c.optim.batch_size < 1:
            raise ConfigError("optim.steps and optim.batch_size must be >= 1")
        for name in ("flat_fraction", "flat_extremes"):
            if not 0.0 <= getattr(c.data, name) <= 1.0:
                raise ConfigError(f"data.{name} must lie in 0..1, got {getattr(c.data, name)!r}")
        self.env = Distributed.setup(c.device, c.threads)
        self.out_dir = Path(c.out_dir)

        torch.manual_seed(c.seed)  # same init on every rank; DDP also broadcasts it
        source = None
        if c.model.init_from:
            source = _load_init_from(c.model.init_from)
            self.model = self._model_like(source).to(self.env.device)
            self._warm_start(source)
        else:
            self.model = create_model(c.model.name, **c.model.overrides).to(self.env.device)
        if c.model.trainable not in ("all", "decoder", "encoder"):
            raise ConfigError(f"model.trainable must be 'all', 'decoder' or 'encoder', got {c.model.trainable!r}")
        if c.model.trainable != "all" and not c.model.init_from:
            raise ConfigError(f"model.trainable: {c.model.trainable} needs model.init_from (the other half to keep)")
        if c.model.trainable == "decoder":
            self.model.freeze_encoder()
        elif c.model.trainable == "encoder":
            self.model.freeze_decoder()

        for key, folder in (("data.train_dir", c.data.train_dir), ("data.val_dir", c.data.val_dir)):
            if folder and not Path(folder).is_dir():
                make = " (make it with: python scripts/gather_photos.py data/photos)" if "photos" in str(folder) else ""
                raise ImageError(f"{key} {folder}: no such folder{make}; or point {key} at your own images")
        files, bad_train = scan_images(c.data.train_dir)
        if c.data.exclude_sources:
            root, excluded = Path(c.data.train_dir), set(c.data.exclude_sources)
            sources = {p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1}
            unknown = sorted(excluded - sources)
            if unknown:  # a misspelt source would silently train on what it meant to hold out
                raise ConfigError(
                    f"data.exclude_sources: no source {', '.join(unknown)} in {root} "
                    f"(its sources: {', '.join(sorted(sources)) or 'none, the images are not in sub-folders'})"
                )
            files = [p for p in files if p.relative_to(root).parts[0] not in excluded]
            bad_train = [p for p in bad_train if p.relative_to(root).parts[0] not in excluded]
        if not files:
            raise ImageError(f"{c.data.train_dir}: no readable images found")
        self.train_files = files
        self.unreadable: list[str] = [str(p) for p in bad_train]  # skipped files, with reasons where known
        val_images = torch.empty(0)
        if c.data.val_dir:
            val_files, bad = scan_images(c.data.val_dir)
            if len(val_files) > c.data.val_images > 0:  # spread over the folder (its sources), not its first files
                stride = len(val_files) / c.data.val_images
                val_files = [val_files[int(i * stride)] for i in range(c.data.val_images)]
            val_images, _, bad_decode = load_images(val_files, self.model.image_size, c.data.val_images)
            self.unreadable += [str(p) for p in bad] + bad_decode

        self.task = TokenizerTask(
            self.model,
            name=c.model.name,
            env=self.env,
            data=DataSettings(
                files=files,
                weights=source_weights(files, c.data.train_dir, c.data.source_balance),
                steps=c.optim.steps,
                batch_size=c.optim.batch_size,
                seed=c.seed,
                min_scale=c.data.min_scale,
                max_side=c.data.max_side,
                hflip=c.data.hflip,
                color_jitter=c.data.color_jitter,
                workers=c.data.workers,
                in_memory=c.data.in_memory,
                flat_fraction=c.data.flat_fraction,
                flat_extremes=c.data.flat_extremes,
            ),
            loss=ReconstructionLoss(
                l1=c.loss.l1,
                l2=c.loss.l2,
                ssim_weight=c.loss.ssim,
                perceptual=c.loss.perceptual,
                backbone=self._backbone(),
            ),
            full_length_prob=c.loss.full_length_prob,
            perceptual_prefix_power=c.loss.perceptual_prefix_power,
            alignment=self._alignment(),
            distill=self._distill(source, files),
            distill_batch=c.distill.batch,
            distill_weight=c.distill.weight,
            adversarial=c.gan,
            val_images=val_images,
            out_dir=self.out_dir,
        )
        self.loop = TrainLoop(
            self.task,
            loop_settings(c),
            self.env,
            config_to_dict(c),
        )

    # -- what callers read -----------------------------------------------------------------------
    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def ema(self) -> torch.nn.Module:
        return self.loop.ema

    @property
    def checkpoint_path(self) -> Path:
        return self.loop.checkpoint_path

    @property
    def stop_reason(self) -> str | None:
        return self.loop.stop_reason

    def save_checkpoint(self) -> None:
        self.loop.save_checkpoint()

    def load_checkpoint(self, path: Path | None = None) -> None:
        self.loop.load_checkpoint(path)

    def evaluate_and_export(self) -> dict[str, Any]:
        row = self.task.evaluate_and_export(self.loop.ema, self.loop.step, self.loop.elapsed)
        self.loop.ema.eval()
        return row

    # -- setup helpers -------------------------------------------------------------------------
    def _backbone(self):
        if self.config.loss.perceptual <= 0:
            return None
        from ..metrics.perceptual import create_feature_distance

        return create_feature_distance(self.config.loss.perceptual_backbone, self.config.loss.perceptual_weights)

    def _alignment(self) -> SemanticAlignment | None:
        loss = self.config.loss
        if loss.align <= 0:
            return None
        if loss.align_max_prefix < 1:
            raise ConfigError(f"loss.align_max_prefix must be >= 1, got {loss.align_max_prefix}")
        settings = AlignmentSettings(weight=loss.align, max_prefix=loss.align_max_prefix)
        return SemanticAlignment(self.model.num_tokens, self.model.quantizer.dim, settings)

    def _distill(self, source: Tokenizer | None, files: list[Path]) -> SearchTargets | None:
        """The searched targets (train/distill.py), made first through the starting model if missing."""
        c = self.config
        if c.distill.weight <= 0:
            return None
        if source is None:
            raise ConfigError("distill needs model.init_from: tokens are searched through a trained decoder")
        if not hasattr(source.model.quantizer, "bound"):
            raise ConfigError("distill needs an FSQ model (the encoder's bounded values are its targets)")
        if c.distill.batch < 1:
            raise ConfigError(f"distill.batch must be >= 1, got {c.distill.batch}")
        path = Path(c.distill.targets) if c.distill.targets else self.out_dir / "search_targets.safetensors"
        if not path.is_file():
            if self.env.world_size > 1:
                raise ConfigError(f"{path}: make the search targets first with one process (vtok train, not torchrun)")
            crops = RandomCropDataset(
                files,
                source.model.image_size,
                seed=c.seed + 7777,
                length=c.distill.count,
                min_scale=c.data.min_scale,
                max_side=c.data.max_side,
                hflip=c.data.hflip,
                weights=source_weights(files, c.data.train_dir, c.data.source_balance),
            )
            log.info("searching %d training crops at effort %d for distill targets", c.distill.count, c.distill.effort)
            make_search_targets(source, crops, c.distill.count, c.distill.effort, path, progress=self.env.is_main)
        return SearchTargets.load(path, source, seed=c.seed)

    def _model_like(self, source: Tokenizer):
        """A warm start builds the model it starts from: the source's config, with the run's
        model.overrides on top (a new part such as refine), whatever model.name's variant says."""
        c = self.config.model
        architecture, _ = variant_config(c.name)
        if architecture != source.model.architecture:
            raise ConfigError(
                f"model.init_from {c.init_from} is a {source.model.architecture} model, but model.name "
                f"{c.name} is a {architecture}: name a {source.model.architecture} variant"
            )
        config = {**dataclasses.asdict(source.model.config), **c.overrides}
        return build_model(architecture, config)

    def _warm_start(self, source: Tokenizer) -> None:
        name_or_path = self.config.model.init_from
        weights = self.model.grown_from(source.model.state_dict())  # parts it lacks start as the identity
        problem = state_dict_mismatch(self.model.state_dict(), weights)
        if problem:
            raise ConfigError(
                f"model.init_from {name_or_path}: its weights do not fit the model this config builds: "
                f"{problem}. Leave out the model.overrides that change its shape"
            )
        self.model.load_state_dict(weights, strict=True)

    # -- the run -----------------------------------------------------------------------------------
    def fit(self, resume: bool = False, max_seconds: float | None = None) -> Path:
        """Train to ``optim.steps``, or until `max_seconds` of wall time pass or SIGINT/SIGTERM
        arrives (then a checkpoint and an export are written, ``stop_reason`` says why, and
        ``fit(resume=True)`` continues); returns the folder of the exported (EMA) tokenizer."""
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            saved = self.out_dir / "config.yaml"
            data = config_to_dict(self.config)
            if resume and saved.is_file():  # keep the out_dir as first written (relative or not)
                data["out_dir"] = (yaml.safe_load(saved.read_text()) or {}).get("out_dir", data["out_dir"])
            with atomic_path(saved) as tmp:
                tmp.write_text(yaml.safe_dump(data, sort_keys=False))
            if self.unreadable:
                log.warning("skipped %d unreadable image file(s), e.g. %s", len(self.unreadable), self.unreadable[0])
        if self.config.model.init_from and self.env.is_main and self.task.start_psnr is None:  # to warn if worse
            self.task.start_psnr = self.task.held_out_psnr(self.model)
        self.loop.run(resume=resume, max_seconds=max_seconds)
        if self.task.failed and self.env.is_main:
            self.unreadable += [str(p) for p in sorted(self.task.failed)]
            log.warning(
                "%d training image(s) failed to decode and were skipped, e.g. %s",
                len(self.task.failed),
                min(self.task.failed),
            )
        done = self.loop.step >= self.config.optim.steps
        if done and self.env.is_main and not (self.out_dir / "model" / "config.json").is_file():
            self.evaluate_and_export()
        return self.out_dir / "model"


def _load_init_from(name_or_path: str) -> Tokenizer:
    """The tokenizer a run warm-starts from; a missing run folder says which run makes it."""
    try:
        return Tokenizer.from_pretrained(name_or_path)
    except ModelLoadError as e:
        hint = ""
        if "previous_default" not in str(e) and str(name_or_path).startswith("data/default-v"):
            version = str(name_or_path).rstrip("/").split("default-")[-1]
            hint = f" (make it with: python scripts/previous_default.py {name_or_path} --version {version})"
        raise ConfigError(f"model.init_from {name_or_path}: {e}{hint}") from e
