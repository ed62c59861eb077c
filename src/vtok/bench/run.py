"""`vtok bench`: one protocol for tokenizer quality per token and per byte, beside classical codecs.

Protocol (every number in the report follows it):
- Images: every readable image in the folder, resized by each model's own policy (shorter side
  to S, centre crop); codecs compress that same S x S RGB image.
- Per model and k in 1, 2, 4, ..., K, per image: PSNR, SSIM, MS-SSIM (when S >= 161), the
  EffNet-Lite0 feature distance (LPIPS-style; not comparable with published LPIPS), LPIPS proper
  when the user gives its weight files, bytes bit-packed (k * log2 V / 8) and as a .vtok file
  (entropy-coded when the model has a prior).
- Per model and k, over the set: a Fréchet distance between original and reconstructed
  EffNet-Lite0 features ("FID-style", not FID) and, given Inception weights, FID itself (biased
  upward on small sets: compare only at equal image counts).
- Codecs at equal bytes: for each image and each vtok file size, each codec's best file within
  that size; when it cannot get that small, the record says so with its smallest size.
- Converse: the bytes each codec needs to match vtok's PSNR, SSIM and each perceptual distance,
  and their ratio to vtok's bytes; "never" when even its best setting does not match.
- Win rates count only the images a codec can reach: an image where its smallest file is larger
  than vtok's is "cannot reach", reported on its own, never a win for either side.
- Token statistics are plug-in estimates: with fewer samples than the codebook supports they are
  labelled not meaningful (kept apart in `not_meaningful`), never reported as results.
- Models are labelled by what the user gave (shipped name or folder), not their internal name.
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..codec import single_tile_file_sizes
from ..data import load_folder
from ..errors import ImageError, OptionalDependencyError
from ..images import tensor_to_pil
from ..metrics.pixel import ms_ssim, psnr, ssim
from ..metrics.quality import high_frequency_ratio
from ..metrics.tokens import token_statistics
from ..tokenizer import Tokenizer, load
from .codecs import (
    CODEC_NAMES,
    LOWER_IS_BETTER,
    METRICS,
    ScoredLadder,
    SizeLadders,
    available_codecs,
)

if TYPE_CHECKING:
    from ..metrics.lpips import LPIPS
    from ..metrics.perceptual import FeatureDistance

__all__ = ["BenchResult", "run_bench", "summarize", "paired_differences", "frechet_distance"]

DISTANCE_CHUNK = 16  # images per perceptual forward pass: bounds the memory of large backbones
SHEET_IMAGES = 4  # images shown side by side at equal bytes
# A plug-in entropy estimate from N samples over B bins is biased low by about (B - 1) / (2 N ln 2)
# bits and can never exceed log2 N; with N >= 10 B the bias is under 0.08 bits and a uniform
# codebook shows > 99.99% usage. Below that the numbers describe the sample size, not the tokenizer.
SAMPLES_PER_BIN = 10


@dataclass
class BenchResult:
    models: list[dict[str, Any]]  # name, image_size, num_tokens, bits_per_token, token_stats, speed, fid_style, fid
    records: list[dict[str, Any]]  # one per (model, image, k): vtok numbers, codecs at equal bytes, converse
    missing_codecs: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # what was left out ("perceptual", "plots") and why
    sheet: list[tuple[list[Any], list[str]]] = field(
        default_factory=list
    )  # (PIL images, labels) rows; not saved as JSON


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), as in FID."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(ca)
    sqrt_ca = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    middle = torch.linalg.eigvalsh(sqrt_ca @ cb @ sqrt_ca).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * middle)


def _speed(tok: Tokenizer, batch_sizes=(1, 32)) -> dict[str, float]:
    out = {}
    for b in batch_sizes:
        x = torch.rand(b, 3, tok.image_size, tok.image_size)
        tokens = tok.encode(x)
        tok.decode(tokens)
        reps = 10 if b == 1 else 2
        start = time.perf_counter()
        for _ in range(reps):
            tokens = tok.encode(x)
        mid = time.perf_counter()
        for _ in range(reps):
            tok.decode(tokens)
        end = time.perf_counter()
        out[f"encode_images_per_s_batch{b}"] = b * reps / (mid - start)
        out[f"decode_images_per_s_batch{b}"] = b * reps / (end - mid)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_bench(
    models: list[str | os.PathLike | Tokenizer],
    folder: str | os.PathLike,
    codecs: tuple[str, ...] = CODEC_NAMES,
    limit: int | None = None,
    perceptual: bool = True,
    lpips: LPIPS | None = None,
    inception: torch.nn.Module | str | os.PathLike | None = None,
    progress: bool = True,
    downscaled: bool = True,
) -> BenchResult:
    """Bench `models` on the images of `folder`; see the module docstring for the protocol.

    `perceptual`: the offline EffNet-Lite0 feature distance and FID-style distance, when their
    packages are installed (else left out, with the reason in `result.notes`: a plain install
    benches without them). `lpips`: a `vtok.metrics.lpips.LPIPS` built from the user's weight
    files. `inception`: FID Inception weights (a file path, or a `InceptionV3Features`).
    `downscaled`: also each codec on a shrunk copy, enlarged for display (``<codec>-down``, the
    best of DOWNSCALE_FACTORS per image and budget): what a user who wants a tiny file does.
    """
    if not models:
        raise ImageError("give at least one model")
    toks = [m if isinstance(m, Tokenizer) else load(m) for m in models]
    labels = _unique_labels(toks, models)
    found, missing = available_codecs(tuple(codecs))
    result = BenchResult(models=[], records=[], missing_codecs=missing)
    distances: dict[str, LPIPS | FeatureDistance] = {}
    feature = _feature_distance(result.notes) if perceptual else None
    if feature is not None:
        distances["feature_distance"] = feature
    if lpips is not None:
        distances["lpips"] = lpips
    if inception is not None and not isinstance(inception, torch.nn.Module):
        from ..metrics.inception import InceptionV3Features

        inception = InceptionV3Features.from_file(inception)
    from ..progress import Progress

    for tok, label in zip(toks, labels):
        images, paths, skipped = load_folder(folder, tok.image_size, limit)
        result.skipped += skipped
        result.images = [str(p) for p in paths]
        tokens = tok.encode(images)
        ks = tok.prefix_lengths()
        info: dict[str, Any] = {
            "name": label,
            "image_size": tok.image_size,
            "num_tokens": tok.num_tokens,
            "bits_per_token": tok.bits_per_token,
            "entropy_coded": tok.prior is not None,
            "token_stats": _token_stats(tokens.numpy(), tok.codebook_size),
            "speed": _speed(tok),
            "fid_style": {},
            "fid": {},
        }
        originals_pil = [tensor_to_pil(x) for x in images]
        quality, set_features = _score_prefixes(tok, tokens, images, distances, feature, inception)
        for k in ks:
            if feature:
                info["fid_style"][str(k)] = frechet_distance(set_features["fid_style"][0], set_features["fid_style"][k])
            if inception is not None:
                info["fid"][str(k)] = frechet_distance(set_features["fid"][0], set_features["fid"][k])
        file_sizes = {k: single_tile_file_sizes(tok, tokens.numpy(), np.full(len(images), k)) for k in ks}
        sheet_ladders: list[dict[str, ScoredLadder]] = []
        sheet_records: list[dict[str, Any]] = []
        bar = Progress(len(images), f"bench {label}", unit="img", enabled=progress)
        for i in range(len(images)):
            ladders: dict[str, Any] = {}
            for codec in found:
                ladders[codec.name] = ScoredLadder(codec, originals_pil[i], images[i : i + 1], distances)
                if downscaled:
                    ladders[f"{codec.name}-down"] = SizeLadders(codec, originals_pil[i], images[i : i + 1], distances)
            if i < SHEET_IMAGES:
                sheet_ladders.append(ladders)
            for k in ks:
                rec: dict[str, Any] = {
                    "model": label,
                    "image": _relative(paths[i], folder),
                    "k": k,
                    "bitpacked_bytes": tok.bytes_for(k),
                    "file_bytes": int(file_sizes[k][i]),
                    **{m: None if v is None else float(v[i]) for m, v in quality[k].items()},
                }
                rec["codecs"] = {name: ladder.record(rec) for name, ladder in ladders.items()}
                result.records.append(rec)
                if i < SHEET_IMAGES and k == tok.num_tokens:
                    sheet_records.append(rec)
            bar.update(1)
        bar.close()
        result.models.append(info)
        # Side by side at equal bytes: the first images at full length, vtok vs each codec.
        recon = tok.decode(tokens[:SHEET_IMAGES])
        for i, (rec, ladders) in enumerate(zip(sheet_records, sheet_ladders)):
            row = [originals_pil[i], tensor_to_pil(recon[i])]
            captions = [
                f"original\n{tok.image_size}x{tok.image_size}",
                f"vtok {_elide(label)}\n{rec['file_bytes']} B\nSSIM {rec['ssim']:.3f}",
            ]
            for name, ladder in ladders.items():
                if isinstance(ladder, SizeLadders):
                    found_best = ladder.best_within(rec["file_bytes"])
                    if found_best is None:
                        continue  # the full-size column already shows that it cannot get this small
                    ladder, best = found_best
                else:
                    best = ladder.best_within(rec["file_bytes"])
                f = best or ladder.file(ladder.codec.qualities[0])
                # Its smallest file is shown when it cannot get as small as vtok: say so, never "equal bytes".
                reach = "within vtok's size" if best else "cannot reach: smallest"
                row.append(f.image)
                captions.append(f"{name}\n{reach} {f.bytes} B\nSSIM {ladder.score(f.quality)['ssim']:.3f}")
            result.sheet.append((row, captions))
    return result


def _feature_distance(notes: dict[str, str]) -> FeatureDistance | None:
    """The EffNet-Lite0 feature distance, or None with the reason in `notes` when the perceptual
    extra is not installed: `pip install vtok` alone must still bench pixels and bytes."""
    from ..metrics.perceptual import create_feature_distance

    try:
        return create_feature_distance()
    except OptionalDependencyError as e:
        notes["perceptual"] = f"feature distance and FID-style left out: {e}"
        return None


def _token_stats(tokens: np.ndarray, vocab: int) -> dict[str, Any]:
    """`token_statistics`, with every estimate the sample cannot support moved under
    `not_meaningful` (its top-level value set to None) and a note saying how many samples it needs.

    Each estimate counts its own samples and bins: usage, unigram entropy and the Zipf slope
    N*K tokens over V codes; per-position entropy N images over V; the bigram conditional
    entropy N*(K-1) pairs over V^2 pairs."""
    stats = token_statistics(tokens, vocab)
    n, k = tokens.shape
    support = [  # (estimates, what they need, samples, possible values, unit)
        (("codebook_usage", "unigram_entropy_bits", "zipf_slope"), "usage, entropy, Zipf", n * k, vocab, "tokens"),
        (("per_position_entropy_bits",), "per-position entropy", n, vocab, "images"),
        (("bigram_conditional_entropy_bits",), "bigram entropy", n * (k - 1), vocab * vocab, "token pairs"),
    ]
    stats["not_meaningful"], needs = {}, []
    for keys, what, samples, bins, unit in support:
        if samples < SAMPLES_PER_BIN * bins:
            stats["not_meaningful"] |= {key: stats[key] for key in keys}
            stats |= dict.fromkeys(keys)
            needs.append(f"{what} need {SAMPLES_PER_BIN * bins:,} {unit}, have {samples:,}")
    if needs:
        stats["note"] = (
            f"not meaningful with {n} images x {k} tokens for a codebook of {vocab} "
            f"({SAMPLES_PER_BIN} samples per possible value): " + "; ".join(needs)
        )
    return stats


def _elide(text: str, limit: int = 24) -> str:
    """At most `limit` characters, keeping the end (a folder's own name) so captions fit a cell."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _source_label(source: str | os.PathLike) -> str:
    """What the user typed, tidied: a shipped name as is, a folder by its path without a trailing slash."""
    return os.path.normpath(os.fspath(source))


def _last_part(path: str) -> str:
    p = Path(path)
    name = p.name or p.resolve().name or path  # "." names the current folder
    if name == "model" and p.parent.name:  # a training run exports to RUN/model: the run names it
        return p.parent.name
    return name


def _unique_labels(toks: list[Tokenizer], sources: list) -> list[str]:
    """Each model's name in the report: the folder (or shipped name) the user gave, shortened to
    its last part when that is unique. A model's internal name is the architecture it was built
    from (two checkpoints of one recipe share it), so it labels only Tokenizer objects. Models that
    still share a label (the same folder twice) get their position, so numbers are never pooled."""
    given = [tok.name if isinstance(src, Tokenizer) else _source_label(src) for tok, src in zip(toks, sources)]
    short = [label if isinstance(src, Tokenizer) else _last_part(label) for label, src in zip(given, sources)]
    labels = [s if short.count(s) == 1 else g for s, g in zip(short, given)]
    return [f"{s} #{i + 1}" if labels.count(label) > 1 else label for i, (label, s) in enumerate(zip(labels, short))]


@torch.no_grad()
def _score_prefixes(tok: Tokenizer, tokens: torch.Tensor, images: torch.Tensor, distances, feature, inception):
    """Per-image quality of every prefix length, and set-level features for the Fréchet distances.

    Works a chunk of images at a time (bounded memory for large backbones), so each original's
    features are computed once for all k. Returns ({k: {metric: (N,) or None}},
    {"fid_style"/"fid": {0 (originals) or k: (N, D)}})."""
    ks = tok.prefix_lengths()
    quality: dict[int, dict[str, list]] = {k: {} for k in ks}
    set_nets = {"fid_style": (lambda x: feature.backbone(x)[-1].mean((2, 3))) if feature else None, "fid": inception}
    set_nets = {name: net for name, net in set_nets.items() if net is not None}
    pooled: dict[str, dict[int, list]] = {name: {k: [] for k in (0, *ks)} for name in set_nets}
    for start in range(0, len(images), DISTANCE_CHUNK):
        ref = images[start : start + DISTANCE_CHUNK]
        ref_features = {name: d.features(ref) for name, d in distances.items()}
        for name, net in set_nets.items():
            pooled[name][0].append(net(ref))
        for k in ks:
            recon = tok.decode(tokens[start : start + DISTANCE_CHUNK, :k])
            scores = {
                "psnr": psnr(recon, ref).clamp(max=99),
                "ssim": ssim(recon, ref),
                "ms_ssim": ms_ssim(recon, ref),
                "sharpness": high_frequency_ratio(recon, ref),
            }
            for name, d in distances.items():
                scores[name] = d.from_features(d.features(recon), ref_features[name])
            for name, value in scores.items():
                quality[k].setdefault(name, []).append(value)
            for name, net in set_nets.items():
                pooled[name][k].append(net(recon))
    joined = {k: {m: None if v[0] is None else torch.cat(v) for m, v in q.items()} for k, q in quality.items()}
    return joined, {name: {k: torch.cat(v) for k, v in per_k.items()} for name, per_k in pooled.items()}


def summarize(result: BenchResult) -> dict[str, Any]:
    """Means with 95% confidence intervals, reach and win rates, median byte ratios.

    Per codec: `cannot_reach_rate`, the share of images whose smallest file is larger than vtok's;
    `compared`, the images it can reach; `vtok_win_rate_<metric>`, the share of those where vtok is
    at least as good (None when it reaches none). An image a codec cannot reach is no quality win:
    vtok only wins there on bytes, which `cannot_reach_rate` reports."""
    summary: dict[str, Any] = {}
    for info in result.models:
        name = info["name"]
        rows = [r for r in result.records if r["model"] == name]
        per_k = {}
        for k in sorted({r["k"] for r in rows}):
            rk = [r for r in rows if r["k"] == k]
            entry: dict[str, Any] = {"images": len(rk), "bitpacked_bytes": rk[0]["bitpacked_bytes"]}
            entry["file_bytes"] = _mean_ci([r["file_bytes"] for r in rk])
            for m in (*METRICS, "ms_ssim", "sharpness"):
                vals = [r[m] for r in rk if r.get(m) is not None]
                if vals:
                    entry[m] = _mean_ci(vals)
            entry["codecs"] = {}
            for codec in rk[0]["codecs"]:
                recs = [r["codecs"][codec] for r in rk]
                reached = [(r, c["at_budget"]) for r, c in zip(rk, recs) if c["at_budget"] is not None]
                c_entry: dict[str, Any] = {
                    "reach_rate": len(reached) / len(recs),
                    "cannot_reach_rate": 1 - len(reached) / len(recs),
                    "compared": len(reached),
                    "median_smallest_bytes": float(np.median([c["smallest_bytes"] for c in recs])),
                }
                for m in METRICS:
                    if m not in rk[0]:
                        continue
                    better = (lambda a, b: a <= b) if m in LOWER_IS_BETTER else (lambda a, b: a >= b)
                    wins = sum(1 for r, at in reached if better(r[m], at[m]))
                    c_entry[f"vtok_win_rate_{m}"] = wins / len(reached) if reached else None
                    ratios = [c["to_match"][m]["ratio"] for c in recs if c["to_match"].get(m)]
                    c_entry[f"median_byte_ratio_{m}"] = float(np.median(ratios)) if ratios else None
                    c_entry[f"never_matched_{m}"] = sum(1 for c in recs if c["to_match"].get(m) is None) / len(recs)
                    # Means over the images the codec reaches, vtok's over the same images beside them
                    c_entry["mean_bytes_at_budget"] = (
                        float(np.mean([at["bytes"] for _, at in reached])) if reached else None
                    )
                    c_entry[f"mean_{m}_at_budget"] = float(np.mean([at[m] for _, at in reached])) if reached else None
                    c_entry[f"vtok_mean_{m}"] = float(np.mean([r[m] for r, _ in reached])) if reached else None
                entry["codecs"][codec] = c_entry
            per_k[str(k)] = entry
        for codec in per_k[next(iter(per_k))]["codecs"]:  # one BD-rate per codec, over the k's both reach
            points = [
                (e["file_bytes"]["mean"], e["psnr"]["mean"], c["mean_bytes_at_budget"], c["mean_psnr_at_budget"])
                for e in per_k.values()
                if "psnr" in e
                and (c := e["codecs"][codec]).get("mean_psnr_at_budget") is not None
                and c["reach_rate"] == 1
            ]
            rate = bd_rate(
                [p[0] for p in points], [p[1] for p in points], [p[2] for p in points], [p[3] for p in points]
            )
            for e in per_k.values():
                e["codecs"][codec]["bd_rate_psnr"] = rate
        summary[name] = per_k
    return summary


def bd_rate(rate_a, psnr_a, rate_b, psnr_b) -> float | None:
    """Bjontegaard delta rate of curve a against curve b: the mean bytes a needs for the same PSNR,
    relative to b's (-0.2: a needs 20% fewer), over the PSNR range both cover; log-rate fitted by
    a polynomial in PSNR of degree up to 3 and integrated. None with fewer than 2 points or no overlap."""
    n = min(len(rate_a), len(rate_b))
    if n < 2:
        return None
    lo, hi = max(min(psnr_a), min(psnr_b)), min(max(psnr_a), max(psnr_b))
    if not hi > lo:
        return None
    deg = min(3, n - 1)
    pa = np.polyint(np.polyfit(psnr_a, np.log(rate_a), deg))
    pb = np.polyint(np.polyfit(psnr_b, np.log(rate_b), deg))
    mean_diff = ((np.polyval(pa, hi) - np.polyval(pa, lo)) - (np.polyval(pb, hi) - np.polyval(pb, lo))) / (hi - lo)
    return float(np.exp(mean_diff) - 1)


def paired_differences(result: BenchResult) -> list[dict[str, Any]]:
    """Models side by side on the same images: for each pair (a, b) and each k both have, the mean
    per-image difference a - b with a 95% CI and how often a is better, per metric and in bytes.
    Image-to-image spread dominates each model's own CI; pairing removes it."""
    index = {(r["model"], r["image"], r["k"]): r for r in result.records}
    names = [m["name"] for m in result.models]
    out = []
    for pos, a in enumerate(names):
        for b in names[pos + 1 :]:
            for k in sorted({r["k"] for r in result.records if r["model"] == a}):
                both = [
                    (ra, index[(b, image, k)])
                    for (model, image, kk), ra in index.items()
                    if model == a and kk == k and (b, image, k) in index
                ]
                if not both:
                    continue
                entry: dict[str, Any] = {"a": a, "b": b, "k": k, "images": len(both)}
                for m in (*METRICS, "file_bytes"):
                    pairs = [(ra[m], rb[m]) for ra, rb in both if ra.get(m) is not None and rb.get(m) is not None]
                    if not pairs:
                        continue
                    diffs = [x - y for x, y in pairs]
                    a_better = (lambda d: d < 0) if m in LOWER_IS_BETTER or m == "file_bytes" else (lambda d: d > 0)
                    entry[m] = {**_mean_ci(diffs), "a_better_rate": sum(map(a_better, diffs)) / len(diffs)}
                out.append(entry)
    return out


def _relative(path, folder) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return Path(path).name


def _mean_ci(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    half = 1.96 * a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "ci95": float(half)}
