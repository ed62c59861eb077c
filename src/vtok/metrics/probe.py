"""What k tokens know: linear probes on prefixes of a tokenizer's tokens.

For k = 1, 2, 4, ..., K the first k tokens of each photo are written as one-hot digits (one
one-hot vector per FSQ dimension, or one over a VQ codebook, per token; tokens past k are all
zeros) and read by linear models, cross-validated with fixed folds and seeds:

- **R²**: how much of EfficientNet-Lite0's pooled features of the *original* photo (1,280 numbers;
  variance-weighted R²) a ridge regression from the tokens explains on photos it was not fitted on.
  Label-free, so it means something on any folder of a hundred photos. 0 is the training mean.
- **identified**: how often the reconstruction's pooled features are nearer (cosine) to its own
  original's than to any other photo's in the folder; label-free, chance 1/N.
- **top-1 (ImageNet)**: a linear (least-squares ridge) classifier's accuracy on pseudo-labels, the
  originals' commonest EfficientNet-Lite0 ImageNet classes (photos of other classes left out),
  beside chance (always the commonest class).
- **top-1 (folder)**: the same on the first sub-folder of each photo, where there are several.
- **kept class**: how often the reconstruction from k tokens keeps the original's ImageNet top-1
  class (the semantic fidelity that ``vtok eval`` reports), a probe of the decoder, not the tokens.

Ridge in its dual (kernel) form: with one-hot digits the linear kernel counts the (position,
dimension) pairs where two photos agree. The ridge strength is chosen per outer fold by an inner
cross-validation. Linear probing of frozen features is the usual protocol (e.g. MAE, He et al.
2022; for how few tokens a multimodal model needs, Matryoshka Multimodal Models, Cai et al. 2024).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ImageError, VtokError
from ..tokenizer import Tokenizer

__all__ = ["ProbeResult", "ProbeRow", "probe", "imagenet_class_names"]

RIDGE_SCALES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # x the mean diagonal of the training kernel
MIN_PER_CLASS = 4  # an ImageNet class joins the classification probe with at least this many photos
MAX_CLASSES = 10


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (first WordNet lemma; assets/SOURCES.md)."""
    path = Path(__file__).resolve().parent.parent / "assets" / "imagenet_classes.txt"
    return path.read_text(encoding="utf-8").splitlines()


@dataclass
class ProbeRow:
    k: int
    r2: float  # the tokens' ridge prediction of the original's features
    identified: float  # reconstructions whose features are nearest their own original's among all originals
    top1_imagenet: float | None
    top1_folder: float | None
    kept_class: float


@dataclass
class ProbeResult:
    model: str
    folder: str
    num_images: int
    representation: str
    folds: int
    seed: int
    rows: list[ProbeRow]
    imagenet_classes: list[str] = field(default_factory=list)  # the pseudo-label classes, commonest first
    imagenet_images: int = 0  # photos in those classes
    chance_imagenet: float | None = None
    folders: list[str] = field(default_factory=list)
    chance_folder: float | None = None
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:5.1f}%"

        lines = [
            f"{self.model} on {self.folder}: {self.num_images} photos, {self.folds}-fold cross-validation, "
            f"tokens as {self.representation}",
            f"{'k':>4} {'R² tokens':>9} {'identified':>10} {'top-1 IN':>9} {'top-1 dir':>9} {'kept cls':>9}",
        ]
        for r in self.rows:
            lines.append(
                f"{r.k:>4} {r.r2:9.3f} {pct(r.identified):>10} {pct(r.top1_imagenet):>9} {pct(r.top1_folder):>9} {pct(r.kept_class):>9}"
            )
        lines.append(
            f"{'zero':>4} {0.0:9.3f} {pct(1 / self.num_images):>10} {pct(self.chance_imagenet):>9} {pct(self.chance_folder):>9}   (chance)"
        )
        if self.imagenet_classes:
            lines.append(f"ImageNet pseudo-labels ({self.imagenet_images} photos): {', '.join(self.imagenet_classes)}")
        else:
            lines.append(f"ImageNet pseudo-labels: fewer than 2 classes with {MIN_PER_CLASS}+ photos, not probed")
        if self.folders:
            lines.append(f"folders: {', '.join(self.folders)}")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """The Matryoshka curves: each figure against k, with its chance or zero line, as a PNG."""
        from ..viz import pyplot, save_figure_atomic

        plt = pyplot()
        ks = [r.k for r in self.rows]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        ax = axes[0]
        ax.plot(ks, [r.r2 for r in self.rows], "o-", label="ridge from the tokens")
        ax.axhline(0.0, color="grey", ls="--", lw=1, label="zero (the mean)")
        ax.set_title("R² of the photo's EfficientNet features")
        ax = axes[1]
        for key, chance, label in (
            ("top1_imagenet", self.chance_imagenet, "ImageNet pseudo-label"),
            ("top1_folder", self.chance_folder, "folder"),
        ):
            values = [getattr(r, key) for r in self.rows]
            if values[0] is None:
                continue
            (line,) = ax.plot(ks, values, "o-", label=f"linear top-1, {label}")
            if chance is not None:
                ax.axhline(chance, color=line.get_color(), ls="--", lw=1, label=f"chance, {label}")
        ax.plot(ks, [r.kept_class for r in self.rows], "s:", color="black", label="reconstruction keeps class")
        ax.plot(ks, [r.identified for r in self.rows], "^:", color="grey", label="reconstruction identified")
        ax.axhline(1 / self.num_images, color="grey", ls="--", lw=1, label="chance, identified")
        ax.set_ylim(0, 1)
        ax.set_title("accuracy")
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("tokens k")
            ax.legend(fontsize=7)
        fig.suptitle(f"{self.model}: {self.num_images} photos of {Path(self.folder).name}")
        fig.tight_layout()
        return save_figure_atomic(fig, path)


# -- the linear algebra --------------------------------------------------------------------------
def _folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per item, stratified by `labels` (each label's items dealt round-robin after a
    seeded shuffle)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(len(idx))]
        fold[idx] = (np.arange(len(idx)) + start) % folds
        start += len(idx)
    return fold


def _ridge_predict(kernel: np.ndarray, train: np.ndarray, test: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """Kernel ridge with an intercept (features centred on the training rows): predictions for `test`."""
    k_tr = kernel[np.ix_(train, train)]
    k_te = kernel[np.ix_(test, train)]
    row_mean, all_mean = k_tr.mean(axis=1), k_tr.mean()
    k_tr_c = k_tr - row_mean[:, None] - row_mean[None, :] + all_mean
    k_te_c = k_te - k_te.mean(axis=1, keepdims=True) - row_mean[None, :] + all_mean
    y_mean = y[train].mean(axis=0)
    alpha = scale * max(float(np.trace(k_tr_c)) / len(train), 1e-12)
    coef = np.linalg.solve(k_tr_c + alpha * np.eye(len(train)), y[train] - y_mean)
    return k_te_c @ coef + y_mean


def _cross_validated(kernel: np.ndarray, y: np.ndarray, fold: np.ndarray, inner_seed: int) -> np.ndarray:
    """Out-of-fold predictions; each outer fold picks its ridge strength by an inner 3-fold CV."""
    pred = np.zeros_like(y)
    for f in np.unique(fold):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        inner = _folds(np.zeros(len(train)), min(3, len(train)), inner_seed + int(f))
        errors = []
        for scale in RIDGE_SCALES:
            err = 0.0
            for g in range(inner.max() + 1):
                tr, te = train[inner != g], train[inner == g]
                err += float(((_ridge_predict(kernel, tr, te, y, scale) - y[te]) ** 2).sum())
            errors.append(err)
        pred[test] = _ridge_predict(kernel, train, test, y, RIDGE_SCALES[int(np.argmin(errors))])
    return pred


def _r2(pred: np.ndarray, feats: np.ndarray, fold: np.ndarray) -> float:
    """Variance-weighted R² of out-of-fold predictions: 1 - squared error / the features' total squared
    deviation from their training folds' mean (sklearn's ``r2_score(multioutput="variance_weighted")``)."""
    sse = sst = 0.0
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        sse += float(((pred[test] - feats[test]) ** 2).sum())
        sst += float(((feats[test] - feats[train].mean(0)) ** 2).sum())
    return 1.0 - sse / sst


def _identified(recon: np.ndarray, orig: np.ndarray) -> float:
    """Share of reconstructions whose features are nearest (cosine) to their own original's."""
    a = recon / (np.linalg.norm(recon, axis=1, keepdims=True) + 1e-12)
    b = orig / (np.linalg.norm(orig, axis=1, keepdims=True) + 1e-12)
    return float(((a @ b.T).argmax(1) == np.arange(len(a))).mean())


def _accuracy(kernel: np.ndarray, labels: np.ndarray, fold: np.ndarray, seed: int) -> float:
    classes = np.unique(labels)
    onehot = (labels[:, None] == classes[None, :]).astype(np.float64)
    pred = _cross_validated(kernel, onehot, fold, seed)
    return float((classes[pred.argmax(1)] == labels).mean())


def _chance(labels: np.ndarray) -> float:
    """Accuracy of always answering the commonest label (the majority baseline)."""
    return Counter(labels.tolist()).most_common(1)[0][1] / len(labels)


# -- the probe -----------------------------------------------------------------------------------
REPRESENTATIONS = ("codes", "onehot")


def token_features(tok: Tokenizer, tokens: torch.Tensor, representation: str = "codes") -> np.ndarray:
    """(N, K) token ids -> (N, K, F): the quantized codes the decoder reads (F = code dimension), or
    one-hot digits (F = the sum of the digit alphabets)."""
    if representation == "codes":
        return tok.model.quantizer.indices_to_codes(tokens).double().numpy()
    if representation != "onehot":
        raise VtokError(f"representation must be one of {', '.join(REPRESENTATIONS)}, got {representation!r}")
    digits = tok.model.quantizer.digits
    split = digits.split(tokens)  # (N, K, D)
    offsets = torch.tensor([0, *np.cumsum(digits.alphabets)[:-1].tolist()])
    out = torch.zeros(*tokens.shape, sum(digits.alphabets))
    out.scatter_(2, split + offsets, 1.0)
    return out.numpy().astype(np.float64)


def _describe(tok: Tokenizer, representation: str) -> str:
    if representation == "codes":
        return f"quantized codes ({tok.model.quantizer.dim} numbers per token)"
    return f"one-hot digits ({' + '.join(map(str, tok.model.quantizer.digits.alphabets))} per token)"


def probe(
    tokenizer: Tokenizer,
    folder: str | Path,
    *,
    folds: int = 5,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 32,
    representation: str = "codes",
    progress: bool = True,
) -> ProbeResult:
    """Linear probes of what each prefix of `tokenizer`'s tokens knows about the photos below `folder`
    (whole photos, shorter side to the model's size and centre-cropped). Needs the perceptual extra."""
    from ..data import load_images
    from ..images import find_images
    from ..progress import progress_bar

    if representation not in REPRESENTATIONS:
        raise VtokError(f"representation must be one of {', '.join(REPRESENTATIONS)}, got {representation!r}")
    if folds < 2:
        raise VtokError(f"folds must be >= 2, got {folds}")
    folder = Path(folder)
    files = find_images(folder)
    if not files:
        raise ImageError(f"{folder}: no image files found (looked for .jpg, .png, .webp, ...)")
    images, paths, skipped = load_images(files, tokenizer.image_size, limit)
    if len(paths) < 2 * folds:
        raise ImageError(f"{folder}: {len(paths)} readable photos; a {folds}-fold probe needs at least {2 * folds}")
    from .quality import ImageNetClassifier

    backbone = ImageNetClassifier().pooled_and_top1  # (pooled features, top-1) at 224 px
    ks = tokenizer.prefix_lengths()
    feats, classes, tokens = [], [], []
    kept = dict.fromkeys(ks, 0)
    recon_feats: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    chunks = list(images.split(batch_size))
    for chunk in progress_bar(chunks, "probe", unit="batch") if progress else chunks:
        f, c = backbone(chunk)
        feats.append(f)
        classes.append(c)
        t = tokenizer.encode(chunk)
        tokens.append(t)
        for k in ks:
            f_recon, c_recon = backbone(tokenizer.decode(t[:, :k]))
            recon_feats[k].append(f_recon)
            kept[k] += int((c_recon == c).sum())
    feat = torch.cat(feats).double().numpy()  # (N, 1280)
    recon_feat = {k: torch.cat(v).double().numpy() for k, v in recon_feats.items()}
    top1 = torch.cat(classes).numpy()
    x_all = token_features(tokenizer, torch.cat(tokens), representation)  # (N, K, F)
    n = len(paths)

    # pseudo-labels: the commonest classes with enough photos
    counts = Counter(top1.tolist()).most_common()
    chosen = [c for c, m in counts if m >= MIN_PER_CLASS][:MAX_CLASSES]
    in_classes = np.isin(top1, chosen) if len(chosen) >= 2 else np.zeros(n, dtype=bool)
    names = imagenet_class_names()
    # folders: the first path component below `folder`
    tops = np.array([p.relative_to(folder).parts[0] if len(p.relative_to(folder).parts) > 1 else "" for p in paths])
    folder_names = sorted(set(tops.tolist()) - {""})
    use_folders = len(folder_names) >= 2 and "" not in set(tops.tolist())

    fold_all = _folds(np.zeros(n), folds, seed)
    fold_in = _folds(top1[in_classes], folds, seed) if in_classes.any() else None
    fold_dir = _folds(tops, folds, seed) if use_folders else None
    rows = []
    for k in ks:
        x = x_all[:, :k].reshape(n, -1)
        kernel = x @ x.T  # (N, N): agreeing (position, digit) pairs
        r2 = _r2(_cross_validated(kernel, feat, fold_all, seed), feat, fold_all)
        identified = _identified(recon_feat[k], feat)
        acc_in = (
            _accuracy(kernel[np.ix_(in_classes, in_classes)], top1[in_classes], fold_in, seed)
            if fold_in is not None
            else None
        )
        acc_dir = _accuracy(kernel, tops, fold_dir, seed) if fold_dir is not None else None
        rows.append(
            ProbeRow(
                k=k, r2=r2, identified=identified, top1_imagenet=acc_in, top1_folder=acc_dir, kept_class=kept[k] / n
            )
        )
    return ProbeResult(
        model=tokenizer.name,
        folder=str(folder),
        num_images=n,
        representation=_describe(tokenizer, representation),
        folds=folds,
        seed=seed,
        rows=rows,
        imagenet_classes=[names[c] for c in chosen] if fold_in is not None else [],
        imagenet_images=int(in_classes.sum()),
        chance_imagenet=_chance(top1[in_classes]) if fold_in is not None else None,
        folders=folder_names if use_folders else [],
        chance_folder=_chance(tops) if fold_dir is not None else None,
        skipped=skipped,
    )
