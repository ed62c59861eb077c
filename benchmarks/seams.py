"""Do tile seams show? The boundary-to-interior gradient ratio of decoded large photos.

    python benchmarks/seams.py [--model default] [--folder data/photos/heldout] [--overlap N]

For each held-out photo whose shorter side is at least 2 tiles, encode at k = 4, 16 and 64 tokens
per tile and at per-tile adaptive lengths (SSIM 0.6 and PSNR 24 dB targets: neighbouring tiles
get different k), decode, and measure the mean |gradient| in the bands where tiles meet over the
mean |gradient| elsewhere (vtok.metrics.quality.seam_ratio); the originals' ratio on the same grid
is printed beside it (about 1: photos have no preference for those columns). Target: <= 1.15 at
16 and 64 tokens per tile and at adaptive lengths.

Then the grid inside a tile: the decoder's pixel shuffle paints each patch x patch cell from one
feature position, so a cell's edges can show. vtok.metrics.quality.block_edge_ratio of whole
held-out photos at the model's size, at the same k (originals about 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vtok
from vtok.codec import decode_file, encode_image, read_tokens
from vtok.codec.tiling import TileLayout, blend_tiles
from vtok.data import load_images
from vtok.images import find_images, load_image
from vtok.metrics.quality import block_edge_ratio, seam_ratio
from vtok.viz import image_sheet, save_image_atomic

ADAPTIVE = (("ssim", 0.6), ("psnr", 24.0))  # quality targets: each tile gets the fewest tokens that reach it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--folder", default="data/photos/heldout")
    ap.add_argument("--overlap", type=int, default=None)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--json", default="benchmarks/results/seams.json")
    ap.add_argument(
        "--sheet",
        default="docs/images/seams.png",
        help="a photo at a per-tile SSIM 0.6 target: original, the linear blend alone, the levelled decode",
    )
    ap.add_argument("--sheet-photo", default="data/photos/heldout/samples/rocket.png")
    args = ap.parse_args()
    tok = vtok.load(args.model)
    s = tok.image_size
    photos = [p for p in find_images(args.folder) if min(load_image(p).size) >= 2 * s][: args.limit]
    if not photos:
        raise SystemExit(f"{args.folder}: no photo with a shorter side of at least {2 * s} px")
    results = {}
    # fixed k per tile, then per-tile adaptive lengths (neighbouring tiles get different k)
    settings = [(f"k={k:>2} per tile", str(k), {"tokens": k}) for k in (4, 16, 64)]
    settings += [(f"{name}={value} per tile", f"{name}{value}", {name: value}) for name, value in ADAPTIVE]
    for label, key, target in settings:
        recon_ratios, original_ratios, lengths, psnrs = [], [], [], []
        for path in photos:
            array = np.asarray(load_image(path))
            enc = encode_image(array, tok, overlap=args.overlap, measure=False, **target)
            recon, f = decode_file(enc.data, tok)
            layout = TileLayout(f.width, f.height, s, f.overlap)
            recon_ratios.append(seam_ratio(recon, s, layout.stride, f.overlap))
            original_ratios.append(seam_ratio(array, s, layout.stride, f.overlap))
            err = np.mean((recon.astype(np.float64) - array.astype(np.float64)) ** 2)
            psnrs.append(10 * np.log10(255.0**2 / max(err, 1e-10)))
            lengths += [int(c) for c in enc.counts]
        results[key] = {
            "recon": float(np.mean(recon_ratios)),
            "original": float(np.mean(original_ratios)),
            "mean_k": float(np.mean(lengths)),
            "distinct_k": len(set(lengths)),
            "psnr": float(np.mean(psnrs)),
        }
        print(
            f"{label}: boundary/interior gradient {results[key]['recon']:.3f} "
            f"(originals {results[key]['original']:.3f}) over {len(photos)} photos; "
            f"k per tile {min(lengths)}-{max(lengths)}, mean {results[key]['mean_k']:.1f}; PSNR {results[key]['psnr']:.2f} dB"
        )
    block = tok.model.config.patch
    images, _, _ = load_images(find_images(args.folder), s, None)  # (N, 3, S, S) in [0, 1]
    blocks = {"original": block_edge_ratio(images, block)}
    with torch.no_grad():
        tokens = torch.cat([tok.encode(chunk) for chunk in images.split(32)])
        for k in (4, 16, 64):
            recon = torch.cat([tok.decode(t[:, :k]) for t in tokens.split(32)])
            blocks[k] = block_edge_ratio(recon, block)
            print(
                f"k={k:>2}: {block}x{block} cell-edge/inside gradient {blocks[k]:.3f} "
                f"(originals {blocks['original']:.3f}) over {len(images)} whole photos"
            )
    if args.sheet:
        write_sheet(tok, Path(args.sheet_photo), Path(args.sheet))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    summary = {"model": args.model, "photos": len(photos), "ratios": results, "cell_edges": blocks}
    Path(args.json).write_text(json.dumps(summary, indent=2))


def write_sheet(tok, photo: Path, out: Path) -> None:
    """Original | tiles blended linearly over the overlap alone | what vtok decodes (seams levelled)."""
    array = np.asarray(load_image(photo))
    enc = encode_image(array, tok, measure=False, ssim=0.6)
    recon, f = decode_file(enc.data, tok)
    layout = TileLayout(f.width, f.height, tok.image_size, f.overlap)
    kept = read_tokens(enc.data, tok)
    ids = torch.zeros(len(kept.tokens), tok.num_tokens, dtype=torch.long)
    for i, row in enumerate(kept.tokens):
        ids[i, : len(row)] = torch.from_numpy(row)
    with torch.no_grad():
        tiles = tok.decode_prefixes(ids, torch.from_numpy(kept.counts))
    plain = blend_tiles(tiles, layout, level=False)
    images = [Image.fromarray(a) for a in (array, plain, recon)]
    labels = [
        [
            "original",
            f"linear blend alone\nseams {seam_ratio(plain, tok.image_size, layout.stride, f.overlap):.2f}",
            f"levelled (vtok decodes)\nseams {seam_ratio(recon, tok.image_size, layout.stride, f.overlap):.2f}",
        ]
    ]
    title = f"{photo.name} at a per-tile SSIM 0.6 target: {len(enc.data):,} B, k per tile {min(enc.counts)}-{max(enc.counts)}"
    save_image_atomic(image_sheet([images], labels, title=title, cell=max(a.width for a in images)), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
