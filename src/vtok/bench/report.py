"""Writing a bench result: JSON (every per-image number), Markdown summary, plots, HTML page."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from ..errors import OptionalDependencyError
from ..files import atomic_path
from .run import BenchResult, paired_differences, summarize

__all__ = ["write_report"]


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_report(result: BenchResult, out_dir: str | Path, folder: str | Path | None = None) -> dict[str, Path]:
    """Write the report; returns {kind: path} of the files written, and only those. What could
    not be written (plots without matplotlib) goes into `result.notes`, the Markdown and the JSON,
    so nothing links or claims a file that is not there."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(result)
    paired = paired_differences(result)
    result.notes.pop("plots", None)  # from an earlier report of this result
    files: dict[str, Path] = {}
    try:
        files.update(_plots(result, summary, out))
    except OptionalDependencyError as e:
        result.notes["plots"] = f"no plots written: {e}"
    if result.sheet:
        files["sheet_png"] = _write_sheet(result.sheet, out / "equal_bytes.png")
    files |= {"json": out / "bench.json", "markdown": out / "summary.md"}
    payload = {
        "protocol": "see vtok.bench.run module docstring",
        "folder": str(folder) if folder else None,
        "images": result.images,
        "skipped": result.skipped,
        "missing_codecs": result.missing_codecs,
        "left_out": result.notes,
        "models": result.models,
        "summary": summary,
        "paired": paired,
        "records": result.records,
    }
    _write(files["json"], json.dumps(payload, indent=1, default=float) + "\n")
    _write(files["markdown"], _markdown(result, summary, paired))
    files["html"] = out / "index.html"
    _write(files["html"], _html(files))
    return files


# `image_sheet`'s caption layout: lines of this font size, drawn from 2 px into the cell, never wrapped.
CAPTION_FONT_SIZE, CAPTION_INDENT, MIN_CELL = 12, 2, 96


def sheet_cell_width(rows: list[list[Any]], captions: list[list[str]]) -> int:
    """Cell width at which every caption line fits inside its own cell: `image_sheet` draws a
    caption as is, so a line wider than its cell runs over the neighbour's caption."""
    from ..viz import _font

    font = _font(CAPTION_FONT_SIZE)
    widest = max(font.getbbox(line)[2] for row in captions for caption in row for line in caption.split("\n"))
    images = max(im.width for row in rows for im in row)
    return max(MIN_CELL, images, math.ceil(widest) + 2 * CAPTION_INDENT)


def _write_sheet(sheet_rows: list[tuple[list[Any], list[str]]], path: Path) -> Path:
    from ..viz import image_sheet, save_image_atomic

    rows, captions = (list(x) for x in zip(*sheet_rows))
    title = "same images at equal bytes (full-length vtok vs classical codecs)"
    return save_image_atomic(image_sheet(rows, captions, title=title, cell=sheet_cell_width(rows, captions)), path)


def _fmt(entry: dict[str, float] | None, digits: int = 2) -> str:
    if not entry:
        return "–"
    return f"{entry['mean']:.{digits}f} ± {entry['ci95']:.{digits}f}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _stat(value: float | None, fmt: str) -> str:
    return "not meaningful" if value is None else fmt.format(value)


def _table(cols: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows]


def _markdown(result: BenchResult, summary: dict[str, Any], paired: list[dict[str, Any]]) -> str:
    lines = ["# vtok bench", ""]
    n = len(result.images)
    has_feature = any("feature_distance" in e for s in summary.values() for e in s.values())
    lines.append(f"{n} images. Mean ± 95% CI. Bytes: the .vtok file (entropy-coded when the model has a prior).")
    if has_feature:
        lines.append(
            "Feature distance: EffNet-Lite0 LPIPS-style distance (lower is better), NOT comparable with published LPIPS."
        )
        lines.append("FID-style: Fréchet distance of EffNet-Lite0 features, NOT comparable with published FID.")
    if any(info["fid"] for info in result.models):
        lines.append(
            f"FID: Inception-v3 pool3 features of {n} images (published FID uses 50,000; compare at equal counts)."
        )
    lines.append(
        "Codecs: \"cannot reach\" counts images where a codec's smallest file is larger than vtok's; "
        "win rates compare quality only on the images it reaches."
    )
    left_out = [f"- {name} left out: {why}" for name, why in result.missing_codecs.items()]
    left_out += [f"- {why}" for why in result.notes.values()]
    if left_out:
        lines += ["", *left_out]
    for info in result.models:
        name = info["name"]
        lines += ["", f"## {name} ({info['image_size']}x{info['image_size']}, K = {info['num_tokens']})", ""]
        lines += _quality_table(info, summary[name], has_feature)
        lines += _codec_table(summary[name], has_feature)
        lines += ["", *_token_lines(info["token_stats"]), _speed_line(info["speed"])]
    if paired:
        lines += ["", "## Side by side: paired per-image differences (a − b, mean ± 95% CI; how often a is better)", ""]
        metrics = [("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3)]
        metrics += [("feature_distance", "feature dist.", 3)] * has_feature + [("file_bytes", "file bytes", 1)]
        rows = []
        for p in paired:
            cells = [str(p["k"]), p["a"], p["b"]]
            for m, _, digits in metrics:
                d = p.get(m)
                cells.append(
                    "–"
                    if d is None
                    else f"{d['mean']:+.{digits}f} ± {d['ci95']:.{digits}f} ({100 * d['a_better_rate']:.0f}%)"
                )
            rows.append(cells)
        lines += _table(["k", "a", "b", *(label for _, label, _ in metrics)], rows)
    return "\n".join(lines) + "\n"


def _quality_table(info: dict[str, Any], per_k: dict[str, Any], has_feature: bool) -> list[str]:
    has_lpips = any("lpips" in e for e in per_k.values())
    cols = ["k", "file bytes", "bit-packed bytes", "PSNR", "SSIM", "sharpness"] + ["feature dist."] * has_feature
    cols += ["LPIPS"] * has_lpips + ["FID-style"] * has_feature + ["FID"] * bool(info["fid"])
    rows = []
    for k, e in per_k.items():
        cells = [
            k,
            _fmt(e["file_bytes"], 1),
            f"{e['bitpacked_bytes']:.1f}",
            _fmt(e.get("psnr")),
            _fmt(e.get("ssim"), 3),
            _fmt(e.get("sharpness"), 3),
        ]
        cells += [_fmt(e.get("feature_distance"), 3)] * has_feature + [_fmt(e.get("lpips"), 3)] * has_lpips
        cells += [_number(info["fid_style"].get(k))] * has_feature + [_number(info["fid"].get(k))] * bool(info["fid"])
        rows.append(cells)
    return _table(cols, rows)


def _codec_table(per_k: dict[str, Any], has_feature: bool) -> list[str]:
    """Classical codecs beside one model. "Cannot reach" stands apart from the win rate, which is
    over the images the codec reaches: a codec that cannot get as small as vtok loses on bytes,
    and that says nothing about quality."""
    if not next(iter(per_k.values()))["codecs"]:
        return []
    has_lpips = any("lpips" in e for e in per_k.values())
    cols = ["k", "codec", "cannot reach vtok's size", "median smallest file", "PSNR codec / vtok (images reached)"]
    cols += ["SSIM codec / vtok", "vtok wins SSIM (of images reached)"]
    cols += ["bytes to match SSIM (median ×)", "never matches SSIM", "BD-rate vtok vs codec (PSNR)"]
    cols += ["bytes to match feature dist. (median ×)"] * has_feature + ["bytes to match LPIPS (median ×)"] * has_lpips
    rows = []
    for k, e in per_k.items():
        for codec, c in e["codecs"].items():
            cells = [k, codec, _pct(c["cannot_reach_rate"]), f"{c['median_smallest_bytes']:.0f} B"]
            wins = f"{_pct(c.get('vtok_win_rate_ssim'))} of {c['compared']}" if c["compared"] else "– (reaches none)"
            cells += [_pair(c.get("mean_psnr_at_budget"), c.get("vtok_mean_psnr"), 2)]
            cells += [_pair(c.get("mean_ssim_at_budget"), c.get("vtok_mean_ssim"), 3)]
            cells += [wins, _ratio(c.get("median_byte_ratio_ssim"))]
            cells += [_pct(c.get("never_matched_ssim", 0))]
            bd = c.get("bd_rate_psnr")
            cells += ["–" if bd is None else f"{100 * bd:+.0f}%"]
            cells += [_ratio(c.get("median_byte_ratio_feature_distance"))] * has_feature
            cells += [_ratio(c.get("median_byte_ratio_lpips"))] * has_lpips
            rows.append(cells)
    return ["", "Classical codecs at vtok's bytes, and the bytes they need to match vtok:", "", *_table(cols, rows)]


def _pair(a: float | None, b: float | None, digits: int) -> str:
    return "–" if a is None or b is None else f"{a:.{digits}f} / {b:.{digits}f}"


def _token_lines(stats: dict[str, Any]) -> list[str]:
    """Token statistics; those the sample cannot support read "not meaningful", with why."""
    usage = stats["codebook_usage"]
    lines = [
        f"Tokens ({stats['vocab']} codes): codebook usage {_stat(usage, '{:.1%}')}, unigram entropy "
        f"{_stat(stats['unigram_entropy_bits'], '{:.2f} bits')} (max {stats['max_entropy_bits']:.2f}), "
        f"bigram conditional entropy {_stat(stats['bigram_conditional_entropy_bits'], '{:.2f} bits')}, "
        f"Zipf slope {_stat(stats['zipf_slope'], '{:.2f}')}."
    ]
    if stats.get("note"):
        lines.append(f"Token statistics {stats['note']}.")
    return lines


def _speed_line(speed: dict[str, float]) -> str:
    return (
        f"Speed: encode {speed['encode_images_per_s_batch1']:.0f} / {speed['encode_images_per_s_batch32']:.0f} images/s, "
        f"decode {speed['decode_images_per_s_batch1']:.0f} / {speed['decode_images_per_s_batch32']:.0f} images/s "
        f"(batch 1 / 32); peak memory {speed['peak_rss_mb']:.0f} MB."
    )


def _plots(result: BenchResult, summary: dict[str, Any], out: Path) -> dict[str, Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as exc:
        raise OptionalDependencyError("matplotlib", "plot", "bench plots") from exc
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
        # Estimates the sample cannot support are not drawn as results (see run._token_stats).
        if st["per_position_entropy_bits"] is not None:
            per_position = st["per_position_entropy_bits"]
            ax1.plot(range(1, len(per_position) + 1), per_position, label=info["name"])
        slope = _stat(st["zipf_slope"], "{:.2f}")
        ax2.loglog(
            range(1, len(st["rank_frequency"]) + 1), st["rank_frequency"], label=f"{info['name']} (slope {slope})"
        )
    ax1.set(xlabel="position in the sequence", ylabel="entropy (bits)", title="per-position entropy")
    ax2.set(xlabel="rank", ylabel="frequency", title="rank-frequency (Zipf)")
    if not ax1.lines:
        ax1.text(0.5, 0.5, "too few images per position:\nnot meaningful", ha="center", va="center")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"tokens.{ext}", dpi=110)
        files[f"tokens_{ext}"] = out / f"tokens.{ext}"
    plt.close(fig)
    return files


def _html(files: dict[str, Path]) -> str:
    """The summary as HTML tables, then the figures and a list of the files: only files written."""
    style = "font-family:sans-serif;max-width:1200px;margin:auto"
    table_css = "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
    figures = "".join(
        f'<h2>{html.escape(p.stem.replace("_", " "))}</h2><img src="{html.escape(p.name)}" style="max-width:100%">'
        for k, p in files.items()
        if k.endswith("_png") and p.is_file()
    )
    links = ", ".join(
        f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>'
        for k, p in files.items()
        if k != "html" and p.is_file()
    )
    return (
        f"<!doctype html><meta charset=utf-8><title>vtok bench</title><style>{table_css}</style>"
        f"<body style='{style}'>{markdown_to_html(files['markdown'].read_text())}{figures}"
        f"<h2>files</h2><p>{links}</p></body>\n"
    )


def markdown_to_html(md: str) -> str:
    """The Markdown this module writes (headings, paragraphs, bullet lists, pipe tables) as HTML,
    so index.html shows the same summary as summary.md, with real tables."""
    out: list[str] = []
    block: list[str] = []  # consecutive lines of one table or list

    def flush() -> None:
        if block and block[0].startswith("|"):
            out.append(_html_table(block))
        elif block:
            out.append("<ul>" + "".join(f"<li>{html.escape(item[2:])}</li>" for item in block) + "</ul>")
        block.clear()

    for line in md.splitlines():
        kind = "|" if line.startswith("|") else "- " if line.startswith("- ") else None
        if block and (kind is None or not block[0].startswith(kind)):
            flush()
        if kind:
            block.append(line)
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def _html_table(rows: list[str]) -> str:
    cells = [[html.escape(c.strip()) for c in row.strip().strip("|").split("|")] for row in rows]
    header, body = cells[0], [r for r in cells[1:] if not all(set(c) <= set("-:") for c in r)]
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in header) + "</tr>"
    return "<table>" + head + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>"
