"""The token LM as a training task on the shared loop: batches of token rows, next-token loss,
held-out bits per token (overall and per position), sample sheets and the export.

Batches are a function of the step alone (a seeded draw of rows), so a resume continues with
exactly the batches the run would have seen. A labelled row keeps its class with probability
1 - class_dropout; otherwise, and for unlabelled rows, it trains the null class, which is what
classifier-free guidance subtracts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..lm.model import TokenLM
from ..lm.pretrained import save_pretrained
from ..viz import save_image_atomic
from .loop import Distributed, append_csv

__all__ = ["LMTask", "bits_per_position"]
log = logging.getLogger("vtok.train")


@torch.no_grad()
def bits_per_position(
    model: TokenLM, tokens: torch.Tensor, classes: torch.Tensor | None = None, batch_size: int = 256
) -> np.ndarray:
    """(K,) mean bits each position's token costs under `model` (held-out tokens (N, K))."""
    total = torch.zeros(tokens.shape[1], dtype=torch.float64)
    for start in range(0, len(tokens), batch_size):
        part = tokens[start : start + batch_size].to(model.pos_embed.device)
        cls = None if classes is None else classes[start : start + batch_size].to(part.device)
        total += (-model.log_prob(part, cls)).double().sum(0).cpu()
    return (total / max(1, len(tokens))).numpy()


class LMTask:
    def __init__(
        self,
        model: TokenLM,
        env: Distributed,
        tokens: torch.Tensor,
        labels: torch.Tensor,
        steps: int,
        batch_size: int,
        seed: int,
        class_dropout: float,
        val_tokens: torch.Tensor,
        val_labels: torch.Tensor,
        out_dir: Path,
        tokenizer=None,
        samples: int = 8,
    ):
        self._model, self.env = model, env
        self.train_model = env.wrap(model)
        self.tokens, self.labels = tokens, labels  # (N, K) int64, (N,) int64 with -1 = no class
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        self.class_dropout = class_dropout
        self.val_tokens, self.val_labels = val_tokens, val_labels
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.samples = samples

    @property
    def model(self) -> nn.Module:
        return self._model

    def _classes(self, labels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        null = self._model.null_class
        classes = torch.where(labels < 0, torch.full_like(labels, null), labels)
        if generator is not None and self.class_dropout > 0 and null > 0:
            drop = torch.rand(len(labels), generator=generator) < self.class_dropout
            classes = torch.where(drop, torch.full_like(classes, null), classes)
        return classes

    def batches(self, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(start_step, self.steps):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 7919 + self.env.rank)
            rows = torch.randint(0, len(self.tokens), (self.batch_size,), generator=g)
            yield self.tokens[rows], self._classes(self.labels[rows], g)

    def loss(self, batch, step: int, autocast: bool) -> tuple[torch.Tensor, dict[str, float], Any]:
        tokens, classes = (t.to(self.env.device, non_blocking=True) for t in batch)
        with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = self.train_model(tokens, classes)
        nll = self._model.nll_from_logits(logits, tokens).mean()  # nats per token
        return nll, {"bits_per_token": float(nll.detach()) / math.log(2)}, None

    def after_step(self, batch, step: int, carry: Any, autocast: bool) -> dict[str, float]:
        return {}

    def evaluate_and_export(self, ema: nn.Module, step: int, elapsed: float) -> dict[str, Any]:
        """Held-out bits per token (and per position), a sample sheet, the export of the EMA weights."""
        assert isinstance(ema, TokenLM)
        ema.eval()
        row: dict[str, Any] = {"step": step, "elapsed_s": round(elapsed, 1)}
        if len(self.val_tokens):
            per_position = bits_per_position(ema, self.val_tokens, self._classes(self.val_labels, None))
            row["val_bits_per_token"] = round(float(per_position.mean()), 4)
            for k in (1, 2, 4, 8, 16, 32, 64, 128, 256):
                if k <= len(per_position):
                    row[f"val_bits_at_{k}"] = round(float(per_position[k - 1]), 3)
            log.info("step %d: held-out %.3f bits per token", step, row["val_bits_per_token"])
        append_csv(self.out_dir / "eval.csv", row)
        if self.tokenizer is not None and self.samples > 0:
            from ..lm.sheets import sample_sheet

            class_ids = list(range(ema.config.num_classes))[: self.samples]
            captions = None
            if class_ids:  # the first classes, in turn, each class in one batch (guided)
                per_class = [len(range(c, self.samples, len(class_ids))) for c in range(len(class_ids))]
                tokens = torch.cat(
                    [ema.generate(k, class_label=c, seed=c, cfg=1.5) for c, k in zip(class_ids, per_class)]
                )
                names = [ema.classes[c] if c < len(ema.classes) else str(c) for c in class_ids]
                captions = [name for name, k in zip(names, per_class) for _ in range(k)]
            else:
                tokens = ema.generate(self.samples, seed=0)
            sheet = sample_sheet(self.tokenizer, tokens, captions=captions)
            save_image_atomic(sheet, self.out_dir / "samples" / f"step_{step:06d}.png")
        save_pretrained(ema, self.out_dir / "model")
        return row

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
