"""The trainer: the only reader of TrainConfig.

Runs on CPU by default, on CUDA when present, and data-parallel under ``torchrun`` (gloo on
CPU, NCCL on CUDA). Everything needed to continue after a kill is in ``checkpoint.pt``
(model, EMA, optimizer, scheduler, RNG, step, elapsed time), written atomically; the data
position is the step itself (see train/data.py).
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError, ImageError, VtokError
from ..images import tensor_to_pil
from ..metrics.pixel import psnr, ssim
from ..registry import create_model
from ..tokenizer import Tokenizer, atomic_path, clean_state_dict
from ..viz import image_sheet, save_image_atomic
from .adversarial import AdversarialLoss, PatchDiscriminator
from .config import TrainConfig, config_to_dict
from .data import (
    InMemoryCropSampler,
    RandomCropDataset,
    StepBatchSampler,
    load_fixed_images,
    scan_images,
    source_weights,
)
from .losses import ReconstructionLoss

__all__ = ["Trainer", "sample_prefix_lengths"]
log = logging.getLogger("vtok.train")


def sample_prefix_lengths(batch: int, num_tokens: int, full_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Nested dropout: per image, keep all K tokens with probability `full_prob`, else a prefix
    length drawn log-uniformly from 1..K so short prefixes are trained as often as long ones."""
    u = torch.rand(batch, generator=generator)
    k = torch.exp(torch.rand(batch, generator=generator) * math.log(num_tokens + 1)).floor().long()
    k = k.clamp(1, num_tokens)
    return torch.where(u < full_prob, torch.full_like(k, num_tokens), k)


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        c = config
        if not c.data.train_dir:
            raise ConfigError("data.train_dir is not set: give the folder of training images")
        if c.optim.steps < 1 or c.optim.batch_size < 1:
            raise ConfigError("optim.steps and optim.batch_size must be >= 1")
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = self._pick_device(c.device)
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0
        self.out_dir = Path(c.out_dir)

        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(c.seed)  # same init on every rank; DDP also broadcasts it
        self.model = create_model(c.model.name, **c.model.overrides).to(self.device)
        if c.model.init_from:
            self._warm_start(c.model.init_from)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.train_model = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.world_size > 1
            else self.model
        )
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": c.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=c.optim.lr,
            betas=(c.optim.beta1, c.optim.beta2),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.loss_fn = ReconstructionLoss(
            l1=c.loss.l1, l2=c.loss.l2, ssim_weight=c.loss.ssim, perceptual=c.loss.perceptual, backbone=self._backbone()
        ).to(self.device)
        self.discriminator: PatchDiscriminator | None = None
        if c.gan.weight > 0:
            self.discriminator = PatchDiscriminator(c.gan.channels, c.gan.layers).to(self.device)
            self.train_discriminator = (
                DistributedDataParallel(
                    self.discriminator, device_ids=[self.device.index] if self.device.type == "cuda" else None
                )
                if self.world_size > 1
                else self.discriminator
            )
            self.d_optimizer = torch.optim.AdamW(
                self.discriminator.parameters(), lr=c.gan.lr, betas=(c.gan.beta1, c.gan.beta2), weight_decay=0.0
            )
            self.adversarial = AdversarialLoss(lecam=c.gan.lecam).to(self.device)
        self.step = 0
        self.elapsed = 0.0
        self.generator = torch.Generator().manual_seed(c.seed * 7919 + self.rank)

        files, self.unreadable = scan_images(c.data.train_dir)
        if not files:
            raise ImageError(f"{c.data.train_dir}: no readable images found")
        self.train_files = files
        self.val_images = torch.empty(0)
        if c.data.val_dir:
            val_files, bad = scan_images(c.data.val_dir)
            if len(val_files) > c.data.val_images > 0:  # spread over the folder (its sources), not its first files
                step = len(val_files) / c.data.val_images
                val_files = [val_files[int(i * step)] for i in range(c.data.val_images)]
            self.val_images, bad_decode = load_fixed_images(val_files, self.model.image_size, c.data.val_images)
            self.unreadable += bad + bad_decode

    # -- setup helpers -------------------------------------------------------------------
    def _pick_device(self, name: str) -> torch.device:
        if name == "auto":
            return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        try:
            return torch.device(name)
        except RuntimeError as e:
            raise ConfigError(f"device {name!r}: {e}") from e

    def _backbone(self):
        if self.config.loss.perceptual <= 0:
            return None
        from ..metrics.perceptual import create_feature_distance

        return create_feature_distance(self.config.loss.perceptual_backbone, self.config.loss.perceptual_weights)

    def _warm_start(self, name_or_path: str) -> None:
        source = Tokenizer.from_pretrained(name_or_path)
        try:
            self.model.load_state_dict(source.model.state_dict(), strict=True)
        except RuntimeError as e:
            raise ConfigError(
                f"model.init_from {name_or_path}: its weights do not fit {self.config.model.name} ({str(e)[:200]})"
            ) from e

    def _gan_weight(self) -> float:
        """The generator's adversarial weight at this step: 0, then a linear ramp, then gan.weight."""
        g = self.config.gan
        if g.weight <= 0 or self.step < g.start_step:
            return 0.0
        return g.weight * min(1.0, (self.step - g.start_step + 1) / max(1, g.ramp_steps))

    def _lr_factor(self, step: int) -> float:
        o = self.config.optim
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        progress = min(1.0, (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # -- checkpoints -----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        if not self.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "config": config_to_dict(self.config),
        }
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["d_optimizer"] = self.d_optimizer.state_dict()
            state["adversarial"] = self.adversarial.state_dict()
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, path: Path | None = None) -> None:
        path = path or self.checkpoint_path
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the user's to fix
            raise VtokError(f"{path}: cannot read checkpoint ({e})") from e
        try:
            self.model.load_state_dict(clean_state_dict(state["model"]), strict=True)
            self.ema.load_state_dict(clean_state_dict(state["ema"]), strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.discriminator is not None and "discriminator" in state:
                self.discriminator.load_state_dict(state["discriminator"], strict=True)
                self.d_optimizer.load_state_dict(state["d_optimizer"])
                self.adversarial.load_state_dict(state["adversarial"], strict=True)
        except (KeyError, RuntimeError, ValueError) as e:
            raise VtokError(f"{path}: checkpoint does not match this config ({str(e)[:300]})") from e
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        torch.set_rng_state(state["torch_rng"].cpu())
        self.generator.set_state(state["generator"].cpu())

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, resume: bool = False, max_seconds: float | None = None) -> Path:
        """Train to ``optim.steps``, or until `max_seconds` of wall time have passed (then a
        checkpoint and an export are written, and ``fit(resume=True)`` continues); returns the
        folder of the exported (EMA) tokenizer."""
        c = self.config
        started = time.time()
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.out_dir / "config.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(config_to_dict(c), sort_keys=False))
        if resume and self.checkpoint_path.is_file():
            self.load_checkpoint()
            log.info("resumed from %s at step %d", self.checkpoint_path, self.step)
        if self.unreadable and self.is_main:
            log.warning("skipped %d unreadable image file(s), e.g. %s", len(self.unreadable), self.unreadable[0])

        weights = source_weights(self.train_files, c.data.train_dir, c.data.source_balance)
        dataset = RandomCropDataset(
            self.train_files,
            self.model.image_size,
            seed=c.seed,
            length=c.optim.steps * c.optim.batch_size * self.world_size,
            min_scale=c.data.min_scale,
            max_side=c.data.max_side,
            hflip=c.data.hflip,
            color_jitter=c.data.color_jitter,
            weights=weights,
        )
        batches = self._batches(dataset, weights)
        bar = None
        if self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=c.optim.steps, initial=self.step, unit="step", dynamic_ncols=True, disable=None)
        use_amp = c.amp and self.device.type == "cuda"
        self.train_model.train()
        window_start, window_images = time.time(), 0
        last_tick = time.time()
        for x in batches:
            x = x.to(self.device, non_blocking=True)
            keep = sample_prefix_lengths(x.shape[0], self.model.num_tokens, c.loss.full_length_prob, self.generator)
            keep = keep.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = self.train_model(x * 2 - 1, keep)
            recon = (out.recon.float() + 1) / 2
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, parts = self.loss_fn(recon, x)
            total = loss + out.aux_loss
            gan_weight = self._gan_weight()
            if self.discriminator is not None:  # the same columns from step 0, so metrics.csv keeps them
                parts.update(g_loss=0.0, gan_weight=0.0, d_loss=0.0, d_real=0.0, d_fake=0.0)
            if gan_weight > 0:
                window = self._gan_window()
                self.discriminator.requires_grad_(False)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits_fake = self.train_discriminator(window(out.recon))
                prefix_weight = (keep.float() / self.model.num_tokens) ** c.gan.prefix_power
                g_loss = self.adversarial.generator_loss(logits_fake, prefix_weight)
                total = total + gan_weight * g_loss
                parts["g_loss"] = float(g_loss.detach())
                parts["gan_weight"] = gan_weight
            if not torch.isfinite(total):
                raise VtokError(f"loss became {float(total)} at step {self.step}: lower optim.lr")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if c.optim.grad_clip > 0:
                parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.optim.grad_clip))
            self.optimizer.step()
            self.scheduler.step()
            self._update_ema()
            if gan_weight > 0:
                parts.update(self._discriminator_step(window(x * 2 - 1), window(out.recon.detach()), use_amp))
            self.step += 1
            now = time.time()
            self.elapsed += now - last_tick
            last_tick = now
            window_images += x.shape[0] * self.world_size

            if self.is_main and (self.step % c.log_every == 0 or self.step == c.optim.steps):
                rate = window_images / max(1e-9, now - window_start)
                window_start, window_images = now, 0
                train_psnr = float(psnr(recon.detach().clamp(0, 1), x).clamp(max=99).mean())
                row = {
                    "step": self.step,
                    "elapsed_s": round(self.elapsed, 1),
                    "loss": round(float(total.detach()), 5),
                    **{k: round(v, 5) for k, v in parts.items()},
                    "psnr": round(train_psnr, 3),
                    "lr": self.scheduler.get_last_lr()[0],
                    "images_per_s": round(rate, 2),
                }
                row.update({k: round(float(v), 4) for k, v in out.stats.items()})
                _append_csv(self.out_dir / "metrics.csv", row)
                if bar is not None:
                    bar.set_postfix(loss=f"{float(total.detach()):.4f}", psnr=f"{train_psnr:.2f}", img_s=f"{rate:.1f}")
            if bar is not None:
                bar.update(1)
            out_of_time = max_seconds is not None and time.time() - started > max_seconds
            if self.world_size > 1 and max_seconds is not None:  # every rank stops at the same step
                flag = torch.tensor(float(out_of_time), device=self.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if self.step % c.eval_every == 0 or self.step == c.optim.steps or out_of_time:
                self.evaluate_and_export()
            if self.step % c.checkpoint_every == 0 or self.step == c.optim.steps or out_of_time:
                self.save_checkpoint()
            if out_of_time:
                break
        if bar is not None:
            bar.close()
        failed = set(dataset.failed) | set(getattr(batches, "failed", []))
        if failed and self.is_main:  # only seen in-process; workers keep their own count
            self.unreadable += sorted(failed)
            log.warning(
                "%d training image(s) failed to decode and were skipped, e.g. %s",
                len(failed),
                min(failed),
            )
        if self.step >= c.optim.steps and not (self.out_dir / "model" / "config.json").is_file():
            self.evaluate_and_export()
        if self.world_size > 1:
            dist.barrier()
        return self.out_dir / "model"

    def _batches(self, dataset: RandomCropDataset, weights: torch.Tensor):
        """The training batches from the current step on: (B, 3, S, S) in [0, 1]."""
        c = self.config
        if c.data.in_memory:
            sampler = InMemoryCropSampler(
                self.train_files,
                self.model.image_size,
                seed=c.seed,
                device=self.device,
                min_scale=c.data.min_scale,
                max_side=c.data.max_side,
                hflip=c.data.hflip,
                color_jitter=c.data.color_jitter,
                weights=weights,
                progress=self.is_main,
            )
            return _InMemoryBatches(sampler, self.step, c.optim.steps, c.optim.batch_size, self.rank)
        steps = StepBatchSampler(self.step, c.optim.steps, c.optim.batch_size, self.rank, self.world_size)
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=steps, num_workers=c.data.workers, persistent_workers=c.data.workers > 0
        )

    def _gan_window(self):
        """The crop the discriminator sees this step (the same for real and fake images)."""
        size, side = self.config.gan.crop, self.model.image_size
        if size <= 0 or size >= side:
            return lambda t: t
        top, left = (int(v) for v in torch.randint(side - size + 1, (2,), generator=self.generator))
        return lambda t: t[:, :, top : top + size, left : left + size]

    def _discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, use_amp: bool) -> dict[str, float]:
        self.discriminator.requires_grad_(True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = self.train_discriminator(torch.cat([real, fake]))
        logits_real, logits_fake = logits.chunk(2)
        d_loss, stats = self.adversarial.discriminator_loss(logits_real, logits_fake)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        return stats

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.config.ema_decay
        # Warm-up: early on the EMA follows the model closely, or it would average random init.
        d = min(d, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            e.copy_(b)

    @torch.no_grad()
    def evaluate_and_export(self) -> dict[str, Any]:
        """EMA weights: held-out PSNR/SSIM at k = 1, 2, 4, ..., K, a sample sheet, and the export."""
        if not self.is_main:
            return {}
        tok = Tokenizer(self.ema, name=self.config.model.name)
        images = self.val_images
        if images.numel() == 0:  # no held-out folder: show a fixed batch of training crops
            ds = RandomCropDataset(self.train_files, self.model.image_size, seed=self.config.seed + 1, length=8)
            images = torch.stack([ds[i] for i in range(8)])
        images = images.to(self.device)
        row: dict[str, Any] = {"step": self.step, "elapsed_s": round(self.elapsed, 1)}
        tokens = tok.encode(images)
        shown = torch.linspace(0, images.shape[0] - 1, min(6, images.shape[0])).round().long()  # spread over the set
        columns = [[tensor_to_pil(images[i])] for i in shown]
        labels = [["original"] for _ in shown]
        for k in tok.prefix_lengths():
            recon = tok.decode(tokens[:, :k])
            per_image = psnr(recon, images).clamp(max=99)
            row[f"psnr_k{k}"] = round(float(per_image.mean()), 3)
            row[f"ssim_k{k}"] = round(float(ssim(recon, images).mean()), 4)
            for column, label, i in zip(columns, labels, shown):
                column.append(tensor_to_pil(recon[i]))
                label.append(f"k={k}\n{float(per_image[i]):.1f} dB")
        if self.val_images.numel():
            _append_csv(self.out_dir / "eval.csv", row)
        title = f"step {self.step}: original, then k = {', '.join(map(str, tok.prefix_lengths()))} tokens"
        save_image_atomic(
            image_sheet(columns, labels, title=title), self.out_dir / "samples" / f"step_{self.step:07d}.png"
        )
        tok.save_pretrained(self.out_dir / "model")
        self.ema.eval()
        return row


class _InMemoryBatches:
    """Iterates InMemoryCropSampler batches for steps start..steps-1 of one rank."""

    def __init__(self, sampler: InMemoryCropSampler, start: int, steps: int, batch_size: int, rank: int):
        self.sampler, self.start, self.steps, self.batch_size, self.rank = sampler, start, steps, batch_size, rank
        self.failed = sampler.failed

    def __iter__(self):
        for step in range(self.start, self.steps):
            yield self.sampler.batch(step, self.rank, self.batch_size)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append a row; a header change (new columns) starts a new header line rather than misaligning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = path.is_file() and path.stat().st_size > 0
    header = list(row)
    if exists:
        with path.open() as f:
            first = f.readline().strip().split(",")
        if first != header:
            # Columns differ (e.g. a stats key appeared): keep the file's header, fill what matches.
            row = {k: row.get(k, "") for k in first}
            header = first
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        if not exists:
            writer.writeheader()
        writer.writerow(row)
