"""Writing a bench result: JSON (every per-image number), Markdown summary, plots, HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..errors import OptionalDependencyError
from ..tokenizer import atomic_path
from .run import BenchResult, paired_differences, summarize

__all__ = ["write_report"]


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_report(result: BenchResult, out_dir: str | Path, folder: str | Path | None = None) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    paired = paired_differences(result)
    files = {"json": out / "bench.json", "markdown": out / "summary.md"}
    payload = {
        "protocol": "see vtok.bench.run module docstring",
        "folder": str(folder) if folder else None,
        "images": result.images,
        "skipped": result.skipped,
        "missing_codecs": result.missing_codecs,
        "models": result.models,
        "summary": summary,
        "paired": paired,
        "records": result.records,
    }
    _write(files["json"], json.dumps(payload, indent=1, default=float) + "\n")
    _write(files["markdown"], _markdown(result, summary, paired))
    try:
        files.update(_plots(result, summary, out))
    except OptionalDependencyError as e:
        files["plots_skipped"] = Path(str(e))
    if result.sheet:
        from ..viz import image_sheet, save_image_atomic

        rows, labels = zip(*result.sheet)
        sheet = image_sheet(
            list(rows), list(labels), title="same images at equal bytes (full-length vtok vs classical codecs)"
        )
        files["sheet_png"] = save_image_atomic(sheet, out / "equal_bytes.png")
    files["html"] = out / "index.html"
    _write(files["html"], _html(result, summary, files))
    return files


def _fmt(entry: dict[str, float] | None, digits: int = 2) -> str:
    if not entry:
        return "–"
    return f"{entry['mean']:.{digits}f} ± {entry['ci95']:.{digits}f}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


def _markdown(result: BenchResult, summary: dict[str, Any], paired: list[dict[str, Any]]) -> str:
    lines = ["# vtok bench", ""]
    n = len(result.images)
    lines.append(f"{n} images. Mean ± 95% CI. Bytes: the .vtok file (entropy-coded when the model has a prior).")
    lines.append(
        "Feature distance: EffNet-Lite0 LPIPS-style distance (lower is better), NOT comparable with published LPIPS."
    )
    lines.append("FID-style: Fréchet distance of EffNet-Lite0 features, NOT comparable with published FID.")
    if any(info["fid"] for info in result.models):
        lines.append(
            f"FID: Inception-v3 pool3 features of {n} images (published FID uses 50,000; compare at equal counts)."
        )
    if result.missing_codecs:
        lines.append("")
        lines += [f"- {name} left out: {why}" for name, why in result.missing_codecs.items()]
    for info in result.models:
        name = info["name"]
        lines += ["", f"## {name} ({info['image_size']}x{info['image_size']}, K = {info['num_tokens']})", ""]
        has_lpips = any("lpips" in e for e in summary[name].values())
        cols = ["k", "file bytes", "bit-packed bytes", "PSNR", "SSIM", "feature dist."]
        cols += ["LPIPS"] * has_lpips + ["FID-style"] + ["FID"] * bool(info["fid"])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for k, e in summary[name].items():
            cells = [k, _fmt(e["file_bytes"], 1), f"{e['bitpacked_bytes']:.1f}", _fmt(e.get("psnr"))]
            cells += [_fmt(e.get("ssim"), 3), _fmt(e.get("feature_distance"), 3)]
            cells += [_fmt(e.get("lpips"), 3)] * has_lpips + [_number(info["fid_style"].get(k))]
            cells += [_number(info["fid"].get(k))] * bool(info["fid"])
            lines.append("| " + " | ".join(cells) + " |")
        codecs = list(next(iter(summary[name].values()))["codecs"])
        if codecs:
            lines += ["", "Classical codecs at vtok's bytes, and the bytes they need to match vtok:", ""]
            cols = ["k", "codec", "reaches vtok's size", "median smallest file", "vtok wins (SSIM)"]
            cols += ["bytes to match SSIM (median ×)", "never matches SSIM", "bytes to match feature dist. (median ×)"]
            cols += ["bytes to match LPIPS (median ×)"] * has_lpips
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for k, e in summary[name].items():
                for codec, c in e["codecs"].items():
                    cells = [k, codec, f"{100 * c['reach_rate']:.0f}%", f"{c['median_smallest_bytes']:.0f} B"]
                    cells += [f"{100 * c.get('vtok_win_rate_ssim', 0):.0f}%", _ratio(c.get("median_byte_ratio_ssim"))]
                    cells += [f"{100 * c.get('never_matched_ssim', 0):.0f}%"]
                    cells += [_ratio(c.get("median_byte_ratio_feature_distance"))]
                    cells += [_ratio(c.get("median_byte_ratio_lpips"))] * has_lpips
                    lines.append("| " + " | ".join(cells) + " |")
        stats = info["token_stats"]
        speed = info["speed"]
        lines += [
            "",
            f"Tokens: codebook usage {100 * stats['codebook_usage']:.1f}% of {stats['vocab']}, unigram entropy "
            f"{stats['unigram_entropy_bits']:.2f} bits (max {stats['max_entropy_bits']:.2f}), bigram conditional entropy "
            f"{stats['bigram_conditional_entropy_bits']:.2f} bits, Zipf slope {stats['zipf_slope']:.2f}.",
            f"Speed: encode {speed['encode_images_per_s_batch1']:.0f} / {speed['encode_images_per_s_batch32']:.0f} images/s, "
            f"decode {speed['decode_images_per_s_batch1']:.0f} / {speed['decode_images_per_s_batch32']:.0f} images/s "
            f"(batch 1 / 32); peak memory {speed['peak_rss_mb']:.0f} MB.",
        ]
    if paired:
        lines += ["", "## Side by side: paired per-image differences (a − b, mean ± 95% CI; how often a is better)", ""]
        lines += ["| k | a | b | PSNR (dB) | SSIM | feature dist. | file bytes |", "|---|---|---|---|---|---|---|"]
        for p in paired:
            cells = [str(p["k"]), p["a"], p["b"]]
            for m, digits in (("psnr", 2), ("ssim", 3), ("feature_distance", 3), ("file_bytes", 1)):
                d = p.get(m)
                cells.append(
                    "–"
                    if d is None
                    else f"{d['mean']:+.{digits}f} ± {d['ci95']:.{digits}f} ({100 * d['a_better_rate']:.0f}%)"
                )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plots(result: BenchResult, summary: dict[str, Any], out: Path) -> dict[str, Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as e:
        raise OptionalDependencyError("matplotlib", "plot", "bench plots") from e
    files: dict[str, Path] = {}
    metrics = [
        ("psnr", "PSNR (dB)"),
        ("ssim", "SSIM"),
        ("feature_distance", "feature distance (lower is better)"),
        ("lpips", "LPIPS (lower is better)"),
    ]
    metrics = [m for m in metrics if any(m[0] in e for s in summary.values() for e in s.values())]

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2))
    axes = list(axes) if len(metrics) > 1 else [axes]
    for ax, (m, label) in zip(axes, metrics):
        for name, per_k in summary.items():
            xs = [e["file_bytes"]["mean"] for e in per_k.values()]
            ax.plot(xs, [e[m]["mean"] for e in per_k.values()], marker="o", label=f"vtok {name}")
        codecs = sorted({c for r in result.records for c in r["codecs"]})
        for j, codec in enumerate(codecs):
            # Each codec at the quality vtok reaches with k tokens: the mean bytes it needs to match
            # it image by image (images it never matches are left out and counted in the table).
            xs, ys = [], []
            for name, per_k in summary.items():
                for k, e in per_k.items():
                    matched = [
                        r["codecs"][codec]["to_match"][m]["bytes"]
                        for r in result.records
                        if r["model"] == name and str(r["k"]) == k and r["codecs"][codec]["to_match"].get(m)
                    ]
                    if matched:
                        xs.append(sum(matched) / len(matched))
                        ys.append(e[m]["mean"])
            if xs:
                ax.plot(xs, ys, marker="s", ms=4, ls="--", color=f"C{j + 1}", label=f"{codec}: bytes to match vtok")
            smallest = sorted(r["codecs"][codec]["smallest_bytes"] for r in result.records)
            ax.axvline(float(smallest[len(smallest) // 2]), ls=":", lw=1, color=f"C{j + 1}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels collide on a log axis
        ax.set(xlabel="bytes per image (log)", ylabel=label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    sizes = " / ".join(sorted({f"{info['image_size']}x{info['image_size']}" for info in result.models}))
    fig.suptitle(f"quality vs bytes per {sizes} image; dotted: median smallest file each codec can make", fontsize=10)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"quality_vs_bytes.{ext}", dpi=110)
        files[f"quality_vs_bytes_{ext}"] = out / f"quality_vs_bytes.{ext}"
    plt.close(fig)

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0))
    axes = list(axes) if len(metrics) > 1 else [axes]
    for ax, (m, label) in zip(axes, metrics):
        for name, per_k in summary.items():
            ks = [int(k) for k in per_k]
            means = [e[m]["mean"] for e in per_k.values()]
            ci = [e[m]["ci95"] for e in per_k.values()]
            ax.errorbar(ks, means, yerr=ci, marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="tokens k", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"quality_vs_k.{ext}", dpi=110)
        files[f"quality_vs_k_{ext}"] = out / f"quality_vs_k.{ext}"
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.0))
    for info in result.models:
        st = info["token_stats"]
        ax1.plot(
            range(1, len(st["per_position_entropy_bits"]) + 1), st["per_position_entropy_bits"], label=info["name"]
        )
        ax2.loglog(
            range(1, len(st["rank_frequency"]) + 1),
            st["rank_frequency"],
            label=f"{info['name']} (slope {st['zipf_slope']:.2f})",
        )
    ax1.set(xlabel="position in the sequence", ylabel="entropy (bits)", title="per-position entropy")
    ax2.set(xlabel="rank", ylabel="frequency", title="rank-frequency (Zipf)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"tokens.{ext}", dpi=110)
        files[f"tokens_{ext}"] = out / f"tokens.{ext}"
    plt.close(fig)
    return files


def _html(result: BenchResult, summary: dict[str, Any], files: dict[str, Path]) -> str:
    md = html.escape((files["markdown"]).read_text())
    imgs = "".join(
        f'<h2>{html.escape(p.stem.replace("_", " "))}</h2><img src="{p.name}" style="max-width:100%">'
        for k, p in files.items()
        if k.endswith("_png")
    )
    return f"<!doctype html><meta charset=utf-8><title>vtok bench</title><body style='font-family:sans-serif;max-width:1200px;margin:auto'>{imgs}<h2>summary</h2><pre>{md}</pre></body>\n"
