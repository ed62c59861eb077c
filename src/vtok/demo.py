"""`vtok demo`: one sheet that shows what a tokenizer does at every prefix length."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ImageError
from .images import fit_square, load_image, pil_to_tensor, tensor_to_pil
from .metrics.pixel import psnr, ssim
from .tokenizer import Tokenizer, load
from .viz import image_sheet, save_image_atomic

__all__ = ["DemoResult", "run_demo", "sample_images"]

ASSETS = Path(__file__).parent / "assets"


def sample_images() -> list[Path]:
    """The photos bundled with vtok (see assets/SOURCES.md)."""
    return sorted(ASSETS.glob("*.jpg"))


@dataclass
class DemoResult:
    sheet: Path
    rows: list[dict]  # image, k, bytes, psnr, ssim, effort

    def table(self) -> str:
        searched = any(r.get("effort") for r in self.rows)
        lines = [f"{'image':<20}{' effort' if searched else ''} {'tokens':>6} {'bytes':>7} {'PSNR dB':>8} {'SSIM':>6}"]
        for r in self.rows:
            level = f" {r.get('effort', 0):>6}" if searched else ""
            lines.append(
                f"{r['image'][:20]:<20}{level} {r['k']:>6} {r['bytes']:>7.1f} {r['psnr']:>8.2f} {r['ssim']:>6.3f}"
            )
        return "\n".join(lines)


@torch.no_grad()
def run_demo(
    images: list[str | Path] | None = None,
    model: str | Path | Tokenizer = "default",
    out: str | Path = "vtok_demo.png",
    effort: int = 0,
) -> DemoResult:
    """Encode each image once, decode k = 1, 2, 4, ..., K tokens, write a labelled PNG sheet.
    `effort` > 0 adds a row per image with tokens searched through the decoder (codec.search),
    every prefix kept good, beside the encoder's own."""
    from .codec.search import check_effort, search_tokens

    effort = check_effort(effort)
    tok = model if isinstance(model, Tokenizer) else load(model)
    paths = [Path(p) for p in images] if images else sample_images()[:2]
    if not paths:
        raise ImageError("no images given and no bundled sample photos found")
    originals = torch.stack([pil_to_tensor(fit_square(load_image(p), tok.image_size)) for p in paths])
    runs = [(0, tok.encode(originals))] + ([(effort, search_tokens(tok, originals, effort))] if effort else [])
    sheet_rows, sheet_labels, rows = [], [], []
    for level, tokens in runs:
        tag = f"effort {level}" if effort else "original"
        sheet_rows += [[tensor_to_pil(x)] for x in originals]
        sheet_labels += [[f"{p.name[:18]}\n{tag}"] for p in paths]
        first = len(sheet_rows) - len(paths)
        for k in tok.prefix_lengths():
            recon = tok.decode(tokens[:, :k])
            p_values, s_values = psnr(recon, originals).clamp(max=99), ssim(recon, originals)
            for i, path in enumerate(paths):
                row = {
                    "image": path.name,
                    "k": k,
                    "bytes": tok.bytes_for(k),
                    "psnr": float(p_values[i]),
                    "ssim": float(s_values[i]),
                    "effort": level,
                }
                rows.append(row)
                sheet_rows[first + i].append(tensor_to_pil(recon[i]))
                sheet_labels[first + i].append(
                    f"{k} token{'s' if k != 1 else ''}, {row['bytes']:.0f} B\n{row['psnr']:.1f} dB, SSIM {row['ssim']:.2f}"
                )
    if effort:  # each image's two rows side by side
        order = [j * len(paths) + i for i in range(len(paths)) for j in range(2)]
        sheet_rows, sheet_labels = [sheet_rows[o] for o in order], [sheet_labels[o] for o in order]
    rows.sort(key=lambda r: (r["image"], r["effort"], r["k"]))
    title = f"vtok {tok.name}: {tok.image_size}x{tok.image_size}, {tok.bits_per_token:.1f} bits per token; any prefix decodes"
    sheet = image_sheet(sheet_rows, sheet_labels, title=title, cell=max(tok.image_size, 128))
    return DemoResult(sheet=save_image_atomic(sheet, out), rows=rows)
