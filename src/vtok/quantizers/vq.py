"""Vector quantization with an l2-normalised codebook, EMA updates and dead-code restart.

van den Oord, Vinyals, Kavukcuoglu. "Neural Discrete Representation Learning", NeurIPS 2017,
https://arxiv.org/abs/1711.00937 (EMA updates in its appendix); l2-normalised codes as in
Yu et al. "Vector-quantized Image Modeling with Improved VQGAN", ICLR 2022,
https://arxiv.org/abs/2110.04627 (and LlamaGen). Dead codes are restarted from batch vectors,
as in Dhariwal et al. "Jukebox" (2020).

The codebook is not trained by gradients: each training step moves every code towards the
mean of the (normalised) vectors assigned to it. Under torch.distributed the assignment
statistics are summed over all processes first, so every rank keeps the same codebook.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .base import Quantizer, QuantizerOutput

__all__ = ["VQ"]


class VQ(Quantizer):
    codebook: torch.Tensor
    cluster_size: torch.Tensor
    embed_sum: torch.Tensor

    def __init__(
        self,
        dim: int = 8,
        codebook_size: int = 4096,
        decay: float = 0.99,
        commitment_weight: float = 0.25,
        dead_code_threshold: float = 0.5,
    ):
        super().__init__()
        if not 1 <= dim <= 1024 or not 2 <= codebook_size <= 1 << 20 or dim * codebook_size > 1 << 26:
            # checked before the codebook is allocated: a config.json may ask for any size
            raise ValueError("VQ needs dim in 1..1024, codebook_size in 2..2**20 and dim * codebook_size <= 2**26")
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.commitment_weight = commitment_weight
        self.dead_code_threshold = dead_code_threshold
        self.register_buffer("codebook", F.normalize(torch.randn(codebook_size, dim), dim=-1))
        # EMA statistics: needed to resume training exactly, so they are saved.
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", self.codebook.clone())

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """z: (B, N, D) float32."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"VQ expects last dim {self.dim}, got {tuple(z.shape)}")
        z = F.normalize(z, dim=-1)
        flat = z.reshape(-1, self.dim)  # (B*N, D)
        # On the unit sphere the nearest code is the one with the largest dot product.
        indices_flat = (flat @ self.codebook.t()).argmax(dim=-1)  # (B*N,)
        quantized = self.codebook[indices_flat].view_as(z)
        if self.training:
            self._ema_update(flat.detach(), indices_flat)
        commitment = F.mse_loss(z, quantized.detach())
        codes = z + (quantized - z).detach()  # straight-through
        indices = indices_flat.view(z.shape[:-1])
        probs = torch.bincount(indices_flat, minlength=self.codebook_size).float()
        probs = probs / probs.sum()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        return QuantizerOutput(
            codes=codes,
            indices=indices,
            aux_loss=self.commitment_weight * commitment,
            stats={"perplexity": perplexity.detach()},
        )

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        onehot = F.one_hot(indices, self.codebook_size).type_as(flat)  # (M, C)
        counts = onehot.sum(0)
        sums = onehot.t() @ flat  # (C, D)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.codebook.copy_(F.normalize(self.embed_sum, dim=-1))

        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
            fresh = flat[pick]
            if distributed:
                # Every rank must restart the same codes with the same vectors.
                dist.broadcast(fresh, src=0)
            self.codebook[dead] = fresh
            self.embed_sum[dead] = fresh
            self.cluster_size[dead] = 1.0

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codebook[indices]
