"""The tokenizer as a training task: data, the objective, evaluation and export.

Objective per step: nested dropout picks a prefix length per image (:func:`sample_prefix_lengths`);
reconstruction (L1, L2, SSIM) and the perceptual distance apply to every image; from
``gan_start_step`` an adversarial loss joins, its weight ramping up linearly and scaled per image
by (k / K) ** prefix_power, so short prefixes stay faithful averages while long ones get sharp;
the discriminator is updated after the tokenizer, on the same batch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import InMemoryCropSampler, RandomCropDataset
from ..images import tensor_to_pil
from ..metrics.pixel import psnr, ssim
from ..models import TokenizerModel
from ..tokenizer import Tokenizer
from ..viz import image_sheet, save_image_atomic
from .adversarial import AdversarialLoss, AdversarialSettings, PatchDiscriminator
from .alignment import SemanticAlignment
from .data import StepBatchSampler
from .distill import SearchTargets
from .loop import Distributed, append_csv
from .losses import ReconstructionLoss

__all__ = ["DataSettings", "TokenizerTask", "sample_prefix_lengths"]

log = logging.getLogger("vtok.train")
WORSE_BY_DB = 0.3  # held-out PSNR this far below the warm start's: a warning


def sample_prefix_lengths(batch: int, num_tokens: int, full_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Nested dropout: per image, keep all K tokens with probability `full_prob`, else a prefix
    length drawn log-uniformly from 1..K so short prefixes are trained as often as long ones."""
    u = torch.rand(batch, generator=generator)
    k = torch.exp(torch.rand(batch, generator=generator) * math.log(num_tokens + 1)).floor().long()
    k = k.clamp(1, num_tokens)
    return torch.where(u < full_prob, torch.full_like(k, num_tokens), k)


@dataclass
class DataSettings:
    files: list[Path]
    weights: torch.Tensor | None  # sampling weight per file (source balance)
    steps: int
    batch_size: int
    seed: int = 0
    min_scale: float = 0.1
    max_side: int = 768
    hflip: bool = True
    color_jitter: float = 0.05
    workers: int = 0
    in_memory: bool = False
    flat_fraction: float = 0.0
    flat_extremes: float = 0.0


class TokenizerTask:
    def __init__(
        self,
        model: TokenizerModel,
        name: str,
        env: Distributed,
        data: DataSettings,
        loss: ReconstructionLoss,
        full_length_prob: float,
        adversarial: AdversarialSettings,
        val_images: torch.Tensor,
        out_dir: Path,
        perceptual_prefix_power: float = 2.0,
        alignment: SemanticAlignment | None = None,
        distill: SearchTargets | None = None,
        distill_batch: int = 8,
        distill_weight: float = 0.0,
    ):
        self.model, self.name, self.env, self.data = model, name, env, data
        self.loss_fn = loss.to(env.device)
        self.full_length_prob = full_length_prob
        self.perceptual_prefix_power = perceptual_prefix_power
        self.adv = adversarial
        self.val_images = val_images
        self.out_dir = Path(out_dir)
        self.generator = torch.Generator().manual_seed(data.seed * 7919 + env.rank)
        self.failed: set[Path] = set()
        self.start_psnr: float | None = None  # held-out PSNR of a warm-started model before training
        self.discriminator: PatchDiscriminator | None = None
        self.alignment = alignment.to(env.device) if alignment is not None else None
        self.distill, self.distill_batch, self.distill_weight = distill, distill_batch, distill_weight
        self.train_model = env.wrap(model)
        if adversarial.weight > 0:
            self.discriminator = PatchDiscriminator(adversarial.channels, adversarial.layers).to(env.device)
            self.train_discriminator = env.wrap(self.discriminator)
            self.d_optimizer = torch.optim.AdamW(
                self.discriminator.parameters(),
                lr=adversarial.lr,
                betas=(adversarial.beta1, adversarial.beta2),
                weight_decay=0.0,
            )
            self.adversarial = AdversarialLoss(lecam=adversarial.lecam).to(env.device)

    # -- data ----------------------------------------------------------------------------------
    def batches(self, start_step: int):
        d, env = self.data, self.env
        if d.in_memory:
            sampler = InMemoryCropSampler(
                d.files,
                self.model.image_size,
                seed=d.seed,
                device=env.device,
                min_scale=d.min_scale,
                max_side=d.max_side,
                hflip=d.hflip,
                color_jitter=d.color_jitter,
                weights=d.weights,
                progress=env.is_main,
                flat_fraction=d.flat_fraction,
                flat_extremes=d.flat_extremes,
            )
            self.failed.update(sampler.failed)
            for step in range(start_step, d.steps):
                yield sampler.batch(step, env.rank, d.batch_size)
            return
        dataset = RandomCropDataset(
            d.files,
            self.model.image_size,
            seed=d.seed,
            length=d.steps * d.batch_size * env.world_size,
            min_scale=d.min_scale,
            max_side=d.max_side,
            hflip=d.hflip,
            color_jitter=d.color_jitter,
            weights=d.weights,
            flat_fraction=d.flat_fraction,
            flat_extremes=d.flat_extremes,
        )
        steps = StepBatchSampler(start_step, d.steps, d.batch_size, env.rank, env.world_size)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=steps, num_workers=d.workers, persistent_workers=d.workers > 0
        )
        for x in loader:
            yield x.to(env.device, non_blocking=True)
        self.failed.update(dataset.failed)  # only seen in-process; workers keep their own count

    # -- the objective -------------------------------------------------------------------------
    def _gan_weight(self, step: int) -> float:
        """The generator's adversarial weight at this step: 0, then a linear ramp, then the weight."""
        a = self.adv
        if a.weight <= 0 or step < a.start_step:
            return 0.0
        return a.weight * min(1.0, (step - a.start_step + 1) / max(1, a.ramp_steps))

    def _gan_window(self):
        """The crop the discriminator sees this step (the same for real and fake images)."""
        size, side = self.adv.crop, self.model.image_size
        if size <= 0 or size >= side:
            return lambda t: t
        top, left = (int(v) for v in torch.randint(side - size + 1, (2,), generator=self.generator))
        return lambda t: t[:, :, top : top + size, left : left + size]

    def loss(self, x: torch.Tensor, step: int, autocast: bool):
        device = self.env.device.type
        n_random = x.shape[0]
        if self.distill is not None:  # searched crops join the batch: (B + b, 3, S, S)
            x_searched, target = self.distill.batch(step, self.distill_batch, self.env.rank)
            x = torch.cat([x, x_searched.to(x.device)])
        keep = sample_prefix_lengths(x.shape[0], self.model.num_tokens, self.full_length_prob, self.generator)
        keep = keep.to(x.device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            out = self.train_model(x * 2 - 1, keep)  # recon in about [-1, 1]
        recon = (out.recon.float() + 1) / 2
        # A short prefix can only give the average of the images it stands for; a perceptual loss
        # there asks for texture it cannot know and gets hallucinated stripes: it is weighted by
        # (k / K) ** perceptual_prefix_power.
        perceptual_weights = (keep.float() / self.model.num_tokens) ** self.perceptual_prefix_power
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss, parts = self.loss_fn(recon, x, perceptual_weights)
        total = loss + out.aux_loss
        if self.alignment is not None:
            assert out.codes is not None  # TokenizerModel.forward returns the codes
            align_loss, align_parts = self.alignment(out.codes, x)
            total = total + self.alignment.settings.weight * align_loss
            parts.update(align_parts)
        if self.distill is not None:  # the encoder's bounded values to the searched digits' centres
            assert out.latents is not None  # TokenizerModel.forward returns the latents
            quantizer: Any = self.model.quantizer  # an FSQ (the trainer checks)
            bounded = quantizer.bound(out.latents[n_random:].float())  # (b, K, D)
            distill_loss = torch.nn.functional.mse_loss(bounded, target.to(bounded.device))
            total = total + self.distill_weight * distill_loss
            parts["distill"] = float(distill_loss.detach())
        gan_weight = self._gan_weight(step)
        window = None
        if self.discriminator is not None:  # the same columns from step 0, so metrics.csv keeps them
            parts.update(g_loss=0.0, gan_weight=0.0, d_loss=0.0, d_real=0.0, d_fake=0.0)
        if gan_weight > 0:
            window = self._gan_window()
            assert self.discriminator is not None  # a positive GAN weight means adversarial.weight > 0
            self.discriminator.requires_grad_(False)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                logits_fake = self.train_discriminator(window(out.recon))
            prefix_weight = (keep.float() / self.model.num_tokens) ** self.adv.prefix_power
            g_loss = self.adversarial.generator_loss(logits_fake, prefix_weight)
            total = total + gan_weight * g_loss
            parts.update(g_loss=float(g_loss.detach()), gan_weight=gan_weight)
        # the random crops alone (not distill's searched ones): comparable with a run without them
        parts["psnr"] = float(psnr(recon[:n_random].detach().clamp(0, 1), x[:n_random]).clamp(max=99).mean())
        parts.update({k: float(v) for k, v in out.stats.items()})
        return total, parts, (out.recon[:n_random].detach(), window)

    def after_step(self, x: torch.Tensor, step: int, carry, autocast: bool) -> dict[str, float]:
        if self.alignment is not None:  # its projection got its gradients from the loop's backward
            self.alignment.step()
        fake, window = carry
        if window is None:
            return {}
        assert self.discriminator is not None  # loss() returns a window only on adversarial steps
        self.discriminator.requires_grad_(True)
        with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = self.train_discriminator(torch.cat([window(x * 2 - 1), window(fake)]))
        logits_real, logits_fake = logits.chunk(2)
        d_loss, stats = self.adversarial.discriminator_loss(logits_real, logits_fake)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        return stats

    # -- checkpoint state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["d_optimizer"] = self.d_optimizer.state_dict()
            state["adversarial"] = self.adversarial.state_dict()
        if self.alignment is not None:
            state["alignment"] = self.alignment.train_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"].cpu())
        if self.discriminator is not None and "discriminator" in state:
            self.discriminator.load_state_dict(state["discriminator"], strict=True)
            self.d_optimizer.load_state_dict(state["d_optimizer"])
            self.adversarial.load_state_dict(state["adversarial"], strict=True)
        if self.alignment is not None and "alignment" in state:
            self.alignment.load_train_state(state["alignment"])

    # -- evaluation and export -----------------------------------------------------------------------
    @torch.no_grad()
    def held_out_psnr(self, model: nn.Module) -> float | None:
        """Mean held-out PSNR at full length of `model` (None without held-out images)."""
        if self.val_images.numel() == 0:
            return None
        assert isinstance(model, TokenizerModel)
        tok = Tokenizer(model, name=self.name)
        images = self.val_images.to(self.env.device)
        return float(psnr(tok.decode(tok.encode(images)), images).clamp(max=99).mean())

    def _warn_if_worse(self, step: int, value: float) -> None:
        """A fine-tune that makes held-out photos worse than where it started says so (lower optim.lr,
        fewer steps, or configs/finetune-small.yaml for a small folder)."""
        start = self.start_psnr
        if start is not None and value < start - WORSE_BY_DB:
            log.warning(
                "held-out PSNR at full length fell from %.2f dB at the start to %.2f dB at step %d: this run is "
                "making the model worse on photos it does not train on (for a small folder, try "
                "configs/finetune-small.yaml, or lower optim.lr)",
                start,
                value,
                step,
            )

    @torch.no_grad()
    def evaluate_and_export(self, ema: nn.Module, step: int, elapsed: float) -> dict[str, Any]:
        """EMA weights: held-out PSNR/SSIM at k = 1, 2, 4, ..., K, a sample sheet, and the export."""
        assert isinstance(ema, TokenizerModel)  # the loop's EMA is a copy of self.model
        tok = Tokenizer(ema, name=self.name)
        images = self.val_images
        if images.numel() == 0:  # no held-out folder: show a fixed batch of training crops
            ds = RandomCropDataset(self.data.files, self.model.image_size, seed=self.data.seed + 1, length=8)
            images = torch.stack([ds[i] for i in range(8)])
        images = images.to(self.env.device)
        row: dict[str, Any] = {"step": step, "elapsed_s": round(elapsed, 1)}
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
            append_csv(self.out_dir / "eval.csv", row)
            self._warn_if_worse(step, row[f"psnr_k{tok.num_tokens}"])
        title = f"step {step}: original, then k = {', '.join(map(str, tok.prefix_lengths()))} tokens"
        save_image_atomic(image_sheet(columns, labels, title=title), self.out_dir / "samples" / f"step_{step:07d}.png")
        tok.save_pretrained(self.out_dir / "model")
        return row
