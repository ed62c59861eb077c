"""Pictures of what an LM samples: a sheet of samples, and one sample after 1, 2, 4, ..., K tokens."""

from __future__ import annotations

import torch
from PIL import Image

from ..images import tensor_to_pil
from ..viz import image_sheet

__all__ = ["sample_sheet", "progressive_sheet"]


def sample_sheet(tokenizer, tokens: torch.Tensor, captions: list[str] | None = None, per_row: int = 8) -> Image.Image:
    """(N, k) sampled tokens -> one sheet of their decoded images."""
    images = [tensor_to_pil(x) for x in tokenizer.decode(tokens)]
    captions = captions or ["" for _ in images]
    rows = [images[i : i + per_row] for i in range(0, len(images), per_row)]
    labels = [captions[i : i + per_row] for i in range(0, len(images), per_row)]
    return image_sheet(rows, labels=labels)


def progressive_sheet(tokenizer, tokens: torch.Tensor) -> Image.Image:
    """(N, K) samples -> one row per sample: the image its first 1, 2, 4, ..., K tokens decode to
    (generation is coarse to fine: each row is how that sample appeared while it was drawn)."""
    k_max = tokens.shape[1]
    ks = [k for k in tokenizer.prefix_lengths() if k < k_max] + [k_max]
    rows, labels = [], []
    padded = torch.zeros(tokens.shape[0], tokenizer.num_tokens, dtype=torch.long)
    padded[:, :k_max] = tokens  # decode_prefixes reads all K positions, and only the first k of each
    for seq in padded:
        prefixes = torch.stack([seq] * len(ks))
        lengths = torch.tensor(ks)
        decoded = tokenizer.decode_prefixes(prefixes.to(tokenizer.device), lengths.to(tokenizer.device))
        rows.append([tensor_to_pil(x) for x in decoded])
        labels.append([f"{k} token{'s' if k > 1 else ''}" for k in ks])
    return image_sheet(rows, labels=labels)
