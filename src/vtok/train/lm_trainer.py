"""Training a token LM on pre-tokenized shards (``vtok tokenize``): the only reader of LMTrainConfig.

Same loop as the tokenizer (CPU, CUDA, torchrun; checkpoints, resume, time limits, clean stops),
another task. The merged config is written as ``config.yaml`` into the run folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import ConfigError, VtokError
from ..files import atomic_path
from ..lm import create_lm
from ..lm.pretrained import load_tokenizer_for
from ..shards import TokenShards
from .config import OptimSection, config_to_dict, loop_settings
from .lm_task import LMTask
from .loop import Distributed, TrainLoop

__all__ = ["LMTrainConfig", "LMTrainer"]
log = logging.getLogger("vtok.train")


@dataclass
class LMModelSection:
    name: str = "lm-small"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # an LM folder (or shipped name) to warm-start from; strict
    # warm-start from an LM of other tokens too: after a fine-tune of the same tokenizer most
    # tokens of an image stay or move to near codes, and its LM is a better start than noise
    init_from_other_tokenizer: bool = False


@dataclass
class LMDataSection:
    train: str = ""  # a shard folder from `vtok tokenize`
    val: str | None = None  # held-out shards (bits per token, per position)
    conditional: bool = True  # learn the shards' labels as classes (when they have any)
    class_dropout: float = 0.1  # share of labelled rows trained as the null class (for guidance)


@dataclass
class LMTrainConfig:
    model: LMModelSection = field(default_factory=LMModelSection)
    data: LMDataSection = field(default_factory=LMDataSection)
    optim: OptimSection = field(default_factory=lambda: OptimSection(steps=3000, batch_size=64, lr=1e-3, beta2=0.95))
    tokenizer: str | None = None  # decodes sample sheets; default: the tokenizer the shards name
    samples: int = 8  # images in each sample sheet (0: none)
    out_dir: str = "runs/lm"
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    amp: bool = True
    ema_decay: float = 0.999
    log_every: int = 10
    eval_every: int = 500
    checkpoint_every: int = 200


class LMTrainer:
    def __init__(self, config: LMTrainConfig):
        self.config = c = config
        if not c.data.train:
            raise ConfigError("data.train is not set: give a shard folder written by `vtok tokenize`")
        if not 0 <= c.data.class_dropout <= 1:
            raise ConfigError("data.class_dropout must lie in 0..1")
        self.env = Distributed.setup(c.device, c.threads)
        self.out_dir = Path(c.out_dir)
        train = TokenShards(c.data.train)
        if len(train) == 0:
            raise VtokError(f"{c.data.train}: the shards hold no token rows")
        classes = train.label_names if c.data.conditional else []
        torch.manual_seed(c.seed)
        self.model = create_lm(
            c.model.name, train.alphabets, train.num_tokens, num_classes=len(classes), **c.model.overrides
        ).to(self.env.device)
        if c.model.init_from:
            self._warm_start(c.model.init_from, train.tokenizer_id)
        self.model.tokenizer_name, self.model.tokenizer_id = train.tokenizer_name, train.tokenizer_id
        self.model.classes = list(classes)
        labels = torch.from_numpy(train.labels) if classes else torch.full((len(train),), -1, dtype=torch.long)
        val_tokens, val_labels = torch.zeros(0, train.num_tokens, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        if c.data.val:
            val = TokenShards(c.data.val)
            if val.tokenizer_id != train.tokenizer_id:
                raise ConfigError(f"{c.data.val}: made with another tokenizer than {c.data.train}")
            val_tokens = torch.from_numpy(val.tokens)
            index = {name: i for i, name in enumerate(classes)}
            names = [val.label_names[i] if i >= 0 else None for i in val.labels]
            val_labels = torch.tensor([index.get(n, -1) if n is not None else -1 for n in names], dtype=torch.long)
        tokenizer = None
        if c.samples > 0 and self.env.is_main:
            try:
                tokenizer = load_tokenizer_for(self.model, c.tokenizer)
            except VtokError as e:
                log.warning("no sample sheets: %s", e)
        self.task = LMTask(
            self.model,
            self.env,
            torch.from_numpy(train.tokens),
            labels,
            steps=c.optim.steps,
            batch_size=c.optim.batch_size,
            seed=c.seed,
            class_dropout=c.data.class_dropout,
            val_tokens=val_tokens,
            val_labels=val_labels,
            out_dir=self.out_dir,
            tokenizer=tokenizer,
            samples=c.samples,
        )
        self.loop = TrainLoop(
            self.task,
            loop_settings(c),
            self.env,
            config_to_dict(c),
        )

    def _warm_start(self, name_or_path: str, tokenizer_id: str) -> None:
        from ..lm import load

        source = load(name_or_path)
        if (
            source.tokenizer_id
            and source.tokenizer_id != tokenizer_id
            and not self.config.model.init_from_other_tokenizer
        ):
            raise ConfigError(
                f"model.init_from {name_or_path}: learned another tokenizer's tokens ({source.tokenizer_id}); "
                "set model.init_from_other_tokenizer: true to start from it anyway"
            )
        try:
            self.model.load_state_dict(source.state_dict(), strict=True)
        except RuntimeError as e:
            raise ConfigError(
                f"model.init_from {name_or_path}: its weights do not fit {self.config.model.name} ({str(e)[:200]})"
            ) from e

    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def stop_reason(self) -> str | None:
        return self.loop.stop_reason

    @property
    def checkpoint_path(self) -> Path:
        return self.loop.checkpoint_path

    def fit(self, resume: bool = False, max_seconds: float | None = None) -> Path:
        """Train to ``optim.steps`` (or a time limit / signal: then checkpoint, export, ``stop_reason``);
        returns the folder of the exported (EMA) LM."""
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            saved = self.out_dir / "config.yaml"
            data = config_to_dict(self.config)
            if resume and saved.is_file():
                data["out_dir"] = (yaml.safe_load(saved.read_text()) or {}).get("out_dir", data["out_dir"])
            with atomic_path(saved) as tmp:
                tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        self.loop.run(resume=resume, max_seconds=max_seconds)
        if self.env.is_main and not (self.out_dir / "model" / "config.json").is_file():
            self.task.evaluate_and_export(self.loop.ema, self.loop.step, self.loop.elapsed)
        return self.out_dir / "model"
