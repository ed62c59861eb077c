"""Quality per prefix length on a folder of images: the numbers `vtok eval` prints.

Protocol: every readable image below the folder (recursive), seen two ways:
- **whole**: the photo by the tokenizer's own policy (shorter side to S, centre crop), i.e. the
  whole scene downscaled;
- **detail**: the S x S centre crop at the file's own resolution (photos whose shorter side is
  at least 1.5 S), i.e. texture at full scale.
For k in 1, 2, 4, ..., K: mean PSNR (dB, RGB, [0, 1] range, capped at 99) and SSIM (Gaussian
11x11), the sharpness ratio (Laplacian energy of the reconstruction over the original's), and,
when the ``perceptual`` extra is installed, the EfficientNet-Lite0 feature distance and semantic
fidelity (how often the reconstruction keeps the original's ImageNet top-1 class). Per source
(the first sub-folder) the whole view at k = 1 and K. Flat colours: the mean absolute error
(0..255) over a 5x5x5 grid of flat images spanning the RGB cube. Bytes per image are k *
log2(codebook size) / 8, what the tokens take bit-packed. Codebook usage and perplexity are
measured over all tokens at full length, whole view.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import load_images
from .errors import ImageError, OptionalDependencyError
from .images import find_images, load_image, pil_to_tensor
from .metrics.pixel import psnr, ssim
from .metrics.quality import flat_colour_error, flat_colour_grid, high_frequency_ratio
from .tokenizer import Tokenizer

__all__ = ["EvalResult", "evaluate"]


@dataclass
class EvalResult:
    model: str
    num_images: int
    image_size: int
    codebook_size: int
    rows: list[dict[str, float]]  # whole view, one per k: k, bits, bytes, psnr, ssim, sharpness, ...
    codebook_usage: float  # fraction of codes used at least once at full length
    perplexity: float  # exp(entropy) of the code distribution at full length
    skipped: list[str] = field(default_factory=list)
    detail_rows: list[dict[str, float]] = field(default_factory=list)  # detail view, same columns
    num_detail: int = 0
    sources: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> n, psnr/ssim at 1 and K
    flat_colour_error: list[dict[str, float]] = field(default_factory=list)  # per k: k, mean error 0..255
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lines = [f"whole photos ({self.num_images}):"] + _view_table(self.rows)
        if self.detail_rows:
            lines += [f"detail crops at full resolution ({self.num_detail}):"] + _view_table(self.detail_rows)
        if self.flat_colour_error:
            errors = ", ".join(f"k={r['k']}: {r['error']:.1f}" for r in self.flat_colour_error)
            lines.append(f"flat colours, mean error /255: {errors}")
        if len(self.sources) > 1:
            lines.append("per source (whole photos): n, PSNR/SSIM at k=1, at k=K")
            for name, r in self.sources.items():
                lines.append(
                    f"  {name:<20} {int(r['n']):>4}  {r['psnr_k1']:6.2f} {r['ssim_k1']:.3f}   "
                    f"{r['psnr_full']:6.2f} {r['ssim_full']:.3f}"
                )
        lines.append(
            f"{self.num_images} images at {self.image_size}x{self.image_size}; codebook usage "
            f"{100 * self.codebook_usage:.1f}% of {self.codebook_size}, perplexity {self.perplexity:.0f}"
        )
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable file(s), e.g. {self.skipped[0]}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _view_table(rows: list[dict[str, float]]) -> list[str]:
    extra = [c for c in ("feature_distance", "semantic") if c in rows[0]]
    head = f"{'tokens':>6} {'bits':>7} {'bytes':>7} {'PSNR dB':>8} {'SSIM':>6} {'sharp':>6}"
    head += "".join(f" {'feat.dist' if c == 'feature_distance' else 'top-1 kept':>10}" for c in extra)
    lines = [head]
    for r in rows:
        line = f"{r['k']:>6} {r['bits']:>7.0f} {r['bytes']:>7.1f} {r['psnr']:>8.2f} {r['ssim']:>6.3f} {r['sharpness']:>6.2f}"
        line += "".join(f" {r[c]:>10.3f}" for c in extra)
        lines.append(line)
    return lines


class _Scores:
    """Optional deep-feature scorers; absent (with a note) without the perceptual extra."""

    def __init__(self, enabled: bool):
        self.distance = self.classifier = None
        self.note: str | None = None
        if not enabled:
            return
        try:
            from .metrics.perceptual import create_feature_distance
            from .metrics.quality import ImageNetClassifier

            self.distance = create_feature_distance()
            self.classifier = ImageNetClassifier()
        except OptionalDependencyError as e:
            self.note = f"feature distance and semantic fidelity left out: {e}"


@torch.no_grad()
def evaluate(
    tokenizer: Tokenizer,
    folder: str | Path,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    deep: bool = True,
) -> EvalResult:
    """`deep`: also the feature distance and semantic fidelity (needs the perceptual extra)."""
    folder = Path(folder)
    files = find_images(folder)
    if not files:
        raise ImageError(f"{folder}: no image files found (looked for .jpg, .png, .webp, ...)")
    images, paths, skipped = load_images(files, tokenizer.image_size, limit)
    if not paths:
        raise ImageError(f"{folder}: none of the {len(files)} image files could be read ({skipped[0]})")
    scores = _Scores(deep)
    ks = tokenizer.prefix_lengths()
    whole, counts, per_image = _score_view(tokenizer, images, ks, batch_size, scores, progress, "eval whole")
    details = _detail_crops(paths, tokenizer.image_size)
    detail_rows: list[dict[str, float]] = []
    if len(details):
        detail_rows, _, _ = _score_view(tokenizer, details, ks, batch_size, scores, progress, "eval detail")
    probs = counts.double() / counts.sum()
    entropy = -float((probs[probs > 0] * probs[probs > 0].log()).sum())
    return EvalResult(
        model=tokenizer.name,
        num_images=len(paths),
        image_size=tokenizer.image_size,
        codebook_size=tokenizer.codebook_size,
        rows=whole,
        codebook_usage=float((counts > 0).double().mean()),
        perplexity=math.exp(entropy),
        skipped=skipped,
        detail_rows=detail_rows,
        num_detail=len(details),
        sources=_per_source(paths, folder, per_image, ks),
        flat_colour_error=_flat_colours(tokenizer, ks),
        notes=[scores.note] if scores.note else [],
    )


def _score_view(tok: Tokenizer, images: torch.Tensor, ks: list[int], batch_size: int, scores: _Scores, progress, desc):
    """Rows per k for one view, the full-length code counts, and per-image PSNR/SSIM per k."""
    sums: dict[int, dict[str, float]] = {k: defaultdict(float) for k in ks}
    per_image: dict[int, dict[str, list[float]]] = {k: {"psnr": [], "ssim": []} for k in ks}
    counts = torch.zeros(tok.codebook_size, dtype=torch.long)
    chunks = list(images.split(batch_size))
    if progress:
        from .progress import progress_bar

        chunks = list(progress_bar(chunks, desc, unit="batch")) if len(chunks) > 1 else chunks
    for chunk in chunks:
        chunk = chunk.to(tok.device)
        tokens = tok.encode(chunk)
        counts += torch.bincount(tokens.flatten().cpu(), minlength=tok.codebook_size)
        ref_features = scores.distance.features(chunk) if scores.distance is not None else None
        ref_class = scores.classifier(chunk) if scores.classifier is not None else None
        for k in ks:
            recon = tok.decode(tokens[:, :k])
            p, q = psnr(recon, chunk).clamp(max=99), ssim(recon, chunk)
            per_image[k]["psnr"] += p.tolist()
            per_image[k]["ssim"] += q.tolist()
            sums[k]["psnr"] += float(p.sum())
            sums[k]["ssim"] += float(q.sum())
            sums[k]["sharpness"] += float(high_frequency_ratio(recon, chunk).sum())
            if ref_features is not None and scores.distance is not None:
                d = scores.distance.from_features(scores.distance.features(recon), ref_features)
                sums[k]["feature_distance"] += float(d.sum())
            if ref_class is not None and scores.classifier is not None:
                sums[k]["semantic"] += float((scores.classifier(recon) == ref_class).sum())
    n = images.shape[0]
    rows = [
        {"k": k, "bits": k * tok.bits_per_token, "bytes": tok.bytes_for(k), **{m: v / n for m, v in sums[k].items()}}
        for k in ks
    ]
    return rows, counts, per_image


def _detail_crops(paths: list[Path], size: int) -> torch.Tensor:
    """The S x S centre crop at full resolution of each photo whose shorter side is >= 1.5 S."""
    crops = []
    for path in paths:
        try:
            im = load_image(path)
        except ImageError:
            continue
        if min(im.size) < 1.5 * size:
            continue
        left, top = (im.width - size) // 2, (im.height - size) // 2
        crops.append(pil_to_tensor(im.crop((left, top, left + size, top + size))))
    return torch.stack(crops) if crops else torch.empty(0, 3, size, size)


def _per_source(paths: list[Path], folder: Path, per_image, ks: list[int]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        parts = path.relative_to(folder).parts
        groups[parts[0] if len(parts) > 1 else "."].append(i)
    out = {}
    first, full = per_image[ks[0]], per_image[ks[-1]]
    for name, idx in sorted(groups.items()):
        out[name] = {
            "n": float(len(idx)),
            "psnr_k1": _mean_at(first["psnr"], idx),
            "ssim_k1": _mean_at(first["ssim"], idx),
            "psnr_full": _mean_at(full["psnr"], idx),
            "ssim_full": _mean_at(full["ssim"], idx),
        }
    return out


def _mean_at(values: list[float], idx: list[int]) -> float:
    return sum(values[i] for i in idx) / len(idx)


def _flat_colours(tok: Tokenizer, ks: list[int]) -> list[dict[str, float]]:
    grid = flat_colour_grid(5, tok.image_size).to(tok.device)
    tokens = tok.encode(grid)
    return [{"k": k, "error": float(flat_colour_error(tok.decode(tokens[:, :k]), grid).mean())} for k in ks]
