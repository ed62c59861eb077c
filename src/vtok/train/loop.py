"""The generic training loop: everything a training run needs that is not about one kind of model.

Distributed setup (gloo on CPU, NCCL on CUDA under ``torchrun``), AdamW with decay / no-decay
groups, linear warm-up then cosine, gradient clipping, an EMA of the weights, bf16 autocast on
CUDA, atomic checkpoints holding RNG state and the data position (the step itself), resume,
``metrics.csv`` logging that a resume never duplicates, progress, a wall-time limit and clean
stops on SIGINT/SIGTERM.

What is trained, on what, with which losses, and how it is evaluated comes from a
:class:`TrainTask`: the tokenizer is one (``train/tokenizer_task.py``), the token LM another.
The loop reads no config file: it takes a :class:`LoopSettings`.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError, VtokError
from ..files import atomic_path
from ..progress import Progress

__all__ = ["LoopSettings", "TrainTask", "TrainLoop", "Distributed"]
log = logging.getLogger("vtok.train")


@dataclass
class LoopSettings:
    out_dir: Path
    steps: int
    lr: float
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    amp: bool = True  # bf16 autocast on CUDA
    amp_cpu: bool = False  # bf16 autocast on the CPU too
    log_every: int = 10
    eval_every: int = 250
    checkpoint_every: int = 100


@dataclass
class Distributed:
    """Where this process runs: rank, world size and device (set up from torchrun's variables)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: str = "auto", threads: int = 0) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            dev = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        else:
            try:
                dev = torch.device(device)
            except RuntimeError as e:
                raise ConfigError(f"device {device!r}: {e}") from e
        if threads > 0:
            torch.set_num_threads(threads)
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return cls(rank, world_size, local_rank, dev)

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel when there are several processes, the module itself otherwise."""
        if self.world_size == 1:
            return module
        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)


class TrainTask(Protocol):
    """What the loop trains. ``model`` is the module whose weights are optimised, averaged (EMA)
    and exported; anything else the task trains (a discriminator) it steps itself."""

    @property
    def model(self) -> nn.Module:  # read-only, so a task may hold a subclass (a TokenizerModel)
        ...

    def batches(self, start_step: int) -> Iterable[Any]:
        """The batches of steps start_step, start_step + 1, ... (a function of the step alone)."""
        ...

    def loss(self, batch: Any, step: int, autocast: bool) -> tuple[torch.Tensor, dict[str, float], Any]:
        """(loss to minimise, logged values, whatever after_step needs) for one batch."""
        ...

    def after_step(self, batch: Any, step: int, carry: Any, autocast: bool) -> dict[str, float]:
        """Work after the model's optimizer step (e.g. a discriminator update); logged values."""
        ...

    def evaluate_and_export(self, ema: nn.Module, step: int, elapsed: float) -> dict[str, Any]:
        """Evaluate the EMA weights, write samples, export; main process only."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The task's own training state (e.g. a discriminator), saved with each checkpoint."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainLoop:
    def __init__(self, task: TrainTask, settings: LoopSettings, env: Distributed, config_dict: dict[str, Any]):
        if settings.steps < 1:
            raise ConfigError("optim.steps must be >= 1")
        self.task, self.settings, self.env, self.config_dict = task, settings, env, config_dict
        self.model = task.model
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        s = settings
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=s.lr,
            betas=(s.beta1, s.beta2),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.elapsed = 0.0
        self.stop_reason: str | None = None  # "time limit", "SIGINT", "SIGTERM" when stopped early

    @property
    def out_dir(self) -> Path:
        return Path(self.settings.out_dir)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def _lr_factor(self, step: int) -> float:
        s = self.settings
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        progress = min(1.0, (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps))
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if not self.env.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "torch_rng": torch.get_rng_state(),
            "task": self.task.state_dict(),
            "config": self.config_dict,
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, path: Path | None = None) -> None:
        from ..tokenizer import clean_state_dict

        path = path or self.checkpoint_path
        try:
            state = torch.load(path, map_location=self.env.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the user's to fix
            raise VtokError(f"{path}: cannot read checkpoint ({e})") from e
        try:
            self.model.load_state_dict(clean_state_dict(state["model"]), strict=True)
            self.ema.load_state_dict(clean_state_dict(state["ema"]), strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.task.load_state_dict(state.get("task", {}))
        except (KeyError, RuntimeError, ValueError) as e:
            raise VtokError(f"{path}: checkpoint does not match this config ({str(e)[:300]})") from e
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        torch.set_rng_state(state["torch_rng"].cpu())

    # -- the loop ----------------------------------------------------------------------------
    def run(self, resume: bool = False, max_seconds: float | None = None) -> None:
        """Train to ``steps``, or until `max_seconds` of wall time pass or SIGINT/SIGTERM arrives
        (then the step in hand finishes, a checkpoint and an export are written, and ``stop_reason``
        says why; ``run(resume=True)`` continues)."""
        s, env = self.settings, self.env
        started = time.time()
        if env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.is_file():
            self.load_checkpoint()
            log.info("resumed from %s at step %d", self.checkpoint_path, self.step)
            if env.is_main:  # rows logged after this checkpoint was written would be logged twice
                for name in ("metrics.csv", "eval.csv"):
                    _drop_rows_after(self.out_dir / name, self.step)
        progress = Progress(s.steps, "train", unit="step", initial=self.step, every_s=30.0) if env.is_main else None
        use_amp = (s.amp and env.device.type == "cuda") or (s.amp_cpu and env.device.type == "cpu")
        requested = _StopRequests()
        self.model.train()
        window_start, window_items, last_tick = time.time(), 0, time.time()
        with requested:
            for batch in self.task.batches(self.step):
                total, parts, carry = self.task.loss(batch, self.step, use_amp)
                if not torch.isfinite(total):
                    raise VtokError(f"loss became {float(total)} at step {self.step}: lower optim.lr")
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if s.grad_clip > 0:
                    parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip))
                self.optimizer.step()
                self.scheduler.step()
                self._update_ema()
                parts.update(self.task.after_step(batch, self.step, carry, use_amp))
                self.step += 1
                now = time.time()
                self.elapsed += now - last_tick
                last_tick = now
                window_items += _batch_size(batch) * env.world_size

                if env.is_main and (self.step % s.log_every == 0 or self.step == s.steps):
                    rate = window_items / max(1e-9, now - window_start)
                    window_start, window_items = now, 0
                    row = {
                        "step": self.step,
                        "elapsed_s": round(self.elapsed, 1),
                        "loss": round(float(total.detach()), 5),
                        **{k: round(v, 5) for k, v in parts.items()},
                        "lr": self.scheduler.get_last_lr()[0],
                        "images_per_s": round(rate, 2),
                    }
                    append_csv(self.out_dir / "metrics.csv", row)
                    if progress is not None:
                        progress.set_postfix(loss=f"{float(total.detach()):.4f}", items_s=f"{rate:.1f}")
                if progress is not None:
                    if self.step % s.log_every != 0 and self.step != s.steps:  # the loss from the first steps on
                        progress.set_postfix(**{**progress.postfix, "loss": f"{float(total.detach()):.4f}"})
                    progress.update(1)
                reason = self._stop_reason(started, max_seconds, requested)
                last = self.step == s.steps
                if self.step % s.eval_every == 0 or last or reason:
                    if env.is_main:
                        self.task.evaluate_and_export(self.ema, self.step, self.elapsed)
                        self.ema.eval()
                if self.step % s.checkpoint_every == 0 or last or reason:
                    self.save_checkpoint()
                if reason:
                    self.stop_reason = reason
                    break
        if progress is not None:
            progress.close()
        if env.world_size > 1:
            dist.barrier()

    def _stop_reason(self, started: float, max_seconds: float | None, requested: _StopRequests) -> str | None:
        reason = requested.signal_name
        if reason is None and max_seconds is not None and time.time() - started > max_seconds:
            reason = "time limit"
        if self.env.world_size > 1:  # every rank stops at the same step
            flag = torch.tensor(float(reason is not None), device=self.env.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and reason is None:
                reason = "another rank stopped"
        return reason

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.settings.ema_decay
        # Warm-up: early on the EMA follows the model closely, or it would average random init.
        d = min(d, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for eb, b in zip(self.ema.buffers(), self.model.buffers()):
            eb.copy_(b)


class _StopRequests:
    """Turns SIGINT/SIGTERM into a request the loop honours after the step in hand (in the main
    thread only; elsewhere signals keep their handlers)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0].shape[0]
    return 1


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append a row; a header change (new columns) keeps the file's header rather than misaligning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = path.is_file() and path.stat().st_size > 0
    header = list(row)
    if exists:
        with path.open() as f:
            first = f.readline().strip().split(",")
        if first != header:
            row = {k: row.get(k, "") for k in first}
            header = first
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        if not exists:
            writer.writeheader()
        writer.writerow(row)


def _drop_rows_after(path: Path, step: int) -> None:
    """Rewrite a log CSV without the rows of steps after `step` (written after the checkpoint)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2 or "step" not in rows[0]:
        return
    col = rows[0].index("step")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) > col and r[col].isdigit() and int(r[col]) <= step]
    if len(kept) == len(rows):
        return
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        csv.writer(f).writerows(kept)
