"""Quality per prefix length on a folder of images: the numbers `vtok eval` prints.

Protocol: every readable image below the folder (recursive), resized by the tokenizer's own
policy (shorter side to S, centre crop); for k in 1, 2, 4, ..., K the mean PSNR (dB, RGB,
[0, 1] range, capped at 99 for identical images) and SSIM (Gaussian 11x11, see
metrics/pixel.py); bytes per image are k * log2(codebook size) / 8, what the tokens take
bit-packed. Codebook usage and perplexity are measured over all tokens at full length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import load_folder
from .metrics.pixel import psnr, ssim
from .tokenizer import Tokenizer

__all__ = ["EvalResult", "evaluate"]


@dataclass
class EvalResult:
    model: str
    num_images: int
    image_size: int
    codebook_size: int
    rows: list[dict[str, float]]  # one per k: k, bits, bytes, psnr, ssim
    codebook_usage: float  # fraction of codes used at least once at full length
    perplexity: float  # exp(entropy) of the code distribution at full length
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{'tokens':>6} {'bits':>7} {'bytes':>7} {'PSNR dB':>8} {'SSIM':>6}"]
        for r in self.rows:
            lines.append(f"{r['k']:>6} {r['bits']:>7.0f} {r['bytes']:>7.1f} {r['psnr']:>8.2f} {r['ssim']:>6.3f}")
        lines.append(
            f"{self.num_images} images at {self.image_size}x{self.image_size}; codebook usage "
            f"{100 * self.codebook_usage:.1f}% of {self.codebook_size}, perplexity {self.perplexity:.0f}"
        )
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable file(s), e.g. {self.skipped[0]}")
        return "\n".join(lines)


@torch.no_grad()
def evaluate(
    tokenizer: Tokenizer, folder: str | Path, batch_size: int = 32, limit: int | None = None, progress: bool = True
) -> EvalResult:
    images, _, skipped = load_folder(folder, tokenizer.image_size, limit)
    ks = tokenizer.prefix_lengths()
    sums = {k: [0.0, 0.0] for k in ks}
    counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    chunks = images.split(batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="eval", unit="batch", disable=None)
    for chunk in chunks:
        chunk = chunk.to(tokenizer.device)
        tokens = tokenizer.encode(chunk)
        counts += torch.bincount(tokens.flatten().cpu(), minlength=tokenizer.codebook_size)
        for k in ks:
            recon = tokenizer.decode(tokens[:, :k])
            sums[k][0] += float(psnr(recon, chunk).clamp(max=99).sum())
            sums[k][1] += float(ssim(recon, chunk).sum())
    n = images.shape[0]
    rows = [
        {
            "k": k,
            "bits": k * tokenizer.bits_per_token,
            "bytes": tokenizer.bytes_for(k),
            "psnr": sums[k][0] / n,
            "ssim": sums[k][1] / n,
        }
        for k in ks
    ]
    probs = counts.double() / counts.sum()
    entropy = -float((probs[probs > 0] * probs[probs > 0].log()).sum())
    return EvalResult(
        model=tokenizer.name,
        num_images=n,
        image_size=tokenizer.image_size,
        codebook_size=tokenizer.codebook_size,
        rows=rows,
        codebook_usage=float((counts > 0).double().mean()),
        perplexity=math.exp(entropy),
        skipped=skipped,
    )
