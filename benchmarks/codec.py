"""The .vtok codec on held-out real photos: entropy coding, adaptive length, a large photo.

    python scripts/gather_photos.py data/photos      # once
    python benchmarks/codec.py [--model default] [--folder data/photos/heldout]

1. Entropy coding: bytes of full-length tokens, ANS vs bit-packing vs the prior's cross-entropy,
   and ANS throughput in tokens/s on one core.
2. Adaptive length: for SSIM targets, the smallest k per image that reaches it; compared with
   the fixed k that reaches the same mean SSIM (interpolated between fixed k), in payload bytes.
3. A large held-out photo (1707x960) at vtok's smallest settings vs the smallest JPEG, WebP,
   AVIF and JPEG XL files (the settings and search of `vtok bench`), and each codec's best file
   within vtok's byte size, at full size and (the best PSNR over the `<codec>-down` ladder of
   sizes) on a shrunk copy enlarged again; writes
   docs/images/large_photo.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vtok
from vtok.bench.codecs import CodecLadder, SizeLadders, available_codecs
from vtok.codec import allocate_prefix_lengths, choose_prefix_lengths, encode_image, single_tile_file_sizes
from vtok.codec.entropy import ans_decode, ans_encode, pack_tokens
from vtok.data import load_folder
from vtok.images import pil_to_tensor
from vtok.metrics import psnr, ssim

torch.set_num_threads(1)


def entropy_coding(tok, images) -> dict:
    tokens = tok.encode(images).numpy()
    counts = np.full(len(tokens), tok.num_tokens)
    packed = sum(len(pack_tokens(t[None], counts[:1], tok.codebook_size)) for t in tokens)
    ans = sum(len(ans_encode(t[None], counts[:1], tok.prior)) for t in tokens)
    ideal = tok.prior.cross_entropy_bits(tokens, counts) / 8
    one_stream = len(ans_encode(tokens, counts, tok.prior))  # all images as the tiles of one file
    big = np.tile(tokens, (max(1, 1_000_000 // tokens.size + 1), 1))
    big_counts = np.full(len(big), tok.num_tokens)
    start = time.perf_counter()
    blob = ans_encode(big, big_counts, tok.prior)
    enc_s = time.perf_counter() - start
    start = time.perf_counter()
    back = ans_decode(blob, big_counts, tok.num_tokens, tok.prior)
    dec_s = time.perf_counter() - start
    assert np.array_equal(back, big)
    return {
        "images": len(tokens),
        "bitpacked_bytes_per_image": packed / len(tokens),
        "ans_bytes_per_image": ans / len(tokens),
        "cross_entropy_bytes_per_image": ideal / len(tokens),
        "saving_vs_bitpacked": 1 - ans / packed,
        "ans_over_cross_entropy": ans / ideal - 1,
        "one_stream_ans_over_cross_entropy": one_stream / ideal - 1,
        "ans_encode_tokens_per_s": big.size / enc_s,
        "ans_decode_tokens_per_s": big.size / dec_s,
    }


def adaptive_vs_fixed(tok, images, targets) -> list[dict]:
    """Images are single tiles here (S x S), so the file path reduces to these calls exactly."""
    tokens = tok.encode(images)
    tok_np = tokens.numpy()
    n = len(images)
    fixed_ssim, fixed_bytes = [], []
    for k in range(1, tok.num_tokens + 1):
        fixed_ssim.append(float(ssim(tok.decode(tokens[:, :k]), images).mean()))
        fixed_bytes.append(float(single_tile_file_sizes(tok, tok_np, np.full(n, k)).mean()))
    order = np.argsort(fixed_ssim)
    rows = []
    for allocation, target in [("per-tile", t) for t in targets] + [("mean", t) for t in targets]:
        if allocation == "mean":
            counts, met = allocate_prefix_lengths(tok, images, tokens, "ssim", target)
            unmet = 0 if met else n
        else:
            counts, unmet = choose_prefix_lengths(tok, images, tokens, "ssim", target)
        per_image = ssim(tok.decode_prefixes(tokens, counts), images)
        mean_ssim = float(per_image.mean())
        mean_bytes = float(single_tile_file_sizes(tok, tok_np, counts.numpy()).mean())
        if not fixed_ssim[order[0]] <= mean_ssim <= fixed_ssim[order[-1]]:
            continue  # outside what a fixed k can reach: no equal-SSIM comparison exists
        same = float(np.interp(mean_ssim, np.array(fixed_ssim)[order], np.array(fixed_bytes)[order]))
        rows.append(
            {
                "allocation": allocation,
                "target_ssim": target,
                "adaptive_mean_ssim": mean_ssim,
                "adaptive_bytes": mean_bytes,
                "fixed_k_bytes_at_same_ssim": same,
                "saving": 1 - mean_bytes / same,
                "images_meeting_target": n - unmet,
                "images": n,
                "mean_tokens": float(counts.float().mean()),
            }
        )
    return rows


def _batch(img: Image.Image) -> torch.Tensor:
    return pil_to_tensor(img.convert("RGB"))[None]


def large_photo(tok, path: Path, out_png: Path) -> dict:
    """vtok's smallest setting vs each codec's smallest file, and vtok at 16 tokens per tile vs
    each codec at the same byte budget (its best file within it, when it can get that small)."""
    img = Image.open(path).convert("RGB")
    scale = 960 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    ref = _batch(img)
    result = {"image": path.name, "size": img.size, "vtok": [], "codecs": {}}
    recs = {}
    for k in (1, 2, 4, 16):
        data = encode_image(img, tok, tokens=k).data
        rec = vtok.decompress(data, tok)
        recs[k] = rec
        q = {
            "tokens_per_tile": k,
            "bytes": len(data),
            "ssim": float(ssim(_batch(rec), ref)),
            "psnr": float(psnr(_batch(rec), ref)),
        }
        result["vtok"].append(q)
    small, big = result["vtok"][0], result["vtok"][-1]
    row1 = [(img, "original"), (recs[1], f"vtok 1 token/tile: {small['bytes']} B\nSSIM {small['ssim']:.3f}")]
    row2 = [(img, "original"), (recs[16], f"vtok 16 tokens/tile: {big['bytes']} B\nSSIM {big['ssim']:.3f}")]
    codecs, _ = available_codecs()
    for codec in codecs:
        ladder = CodecLadder(codec, img)  # the same settings and search as `vtok bench`
        sizes = SizeLadders(codec, img, ref)  # ... and on shrunk copies, enlarged again (`<codec>-down`)
        smallest = ladder.file(codec.qualities[0])
        entry = {"smallest_bytes": smallest.bytes, "ssim_of_smallest": float(ssim(_batch(smallest.image), ref))}
        row1.append(
            (smallest.image, f"{codec.name} smallest: {smallest.bytes} B\nSSIM {entry['ssim_of_smallest']:.3f}")
        )
        for label, budget in (("small", small["bytes"]), ("large", big["bytes"])):
            best = ladder.best_within(budget)
            if best is not None:
                rec = _batch(best.image)
                entry[f"at_{label}_budget"] = {
                    "bytes": best.bytes,
                    "quality": best.quality,
                    "ssim": float(ssim(rec, ref)),
                    "psnr": float(psnr(rec, ref)),
                }
                if label == "large":
                    text = f"{codec.name} q={best.quality}: {best.bytes} B\nSSIM {entry['at_large_budget']['ssim']:.3f}"
                    row2.append((best.image, text))
            elif label == "large":
                row2.append((smallest.image, f"{codec.name} cannot reach {budget} B\n(smallest shown)"))
            down = sizes.best_within(budget)
            if down is not None:
                size, f = down
                entry[f"at_{label}_budget_downscaled"] = {"bytes": f.bytes, "quality": f.quality, "scale": size.codec.scale,
                                                          **size.score(f.quality)}  # fmt: skip
                if label == "large":
                    score = entry[f"at_{label}_budget_downscaled"]
                    text = f"{codec.name} at {size.codec.scale:.3g}x size: {f.bytes} B\nSSIM {score['ssim']:.3f}"
                    row2.append((f.image, text))
        result["codecs"][codec.name] = entry
    from vtok.viz import image_sheet, save_image_atomic

    def thumb(im):
        return im.resize((400, round(400 * im.height / im.width)), Image.Resampling.LANCZOS)

    rows = [[thumb(im) for im, _ in row] for row in (row1, row2)]
    labels = [[label for _, label in row] for row in (row1, row2)]
    sheet = image_sheet(
        rows,
        labels,
        cell=400,
        cell_height=rows[0][0].height,
        title=f"{path.name}, {img.width}x{img.height}: vtok tiles vs classical codecs",
    )
    save_image_atomic(sheet, out_png)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--folder", default="data/photos/heldout")
    bridge = "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg"  # lomiri-wallpapers-16.04
    unpacked = Path("data/debs/lomiri-wallpapers-16.04") / bridge  # where gather_photos.py unpacks it
    ap.add_argument("--large", default=str(unpacked if unpacked.is_file() else Path("/") / bridge))
    ap.add_argument("--json", default="benchmarks/results/codec.json")
    ap.add_argument("--limit", type=int, default=84)
    args = ap.parse_args()
    tok = vtok.load(args.model)
    if tok.prior is None:
        raise SystemExit("the model has no prior.safetensors: run `vtok prior MODEL_FOLDER data/photos/train`")
    images, _, _ = load_folder(args.folder, tok.image_size, args.limit)
    report = {"entropy": entropy_coding(tok, images)}
    e = report["entropy"]
    print(
        f"entropy coding, {e['images']} held-out images at full K: bit-packed {e['bitpacked_bytes_per_image']:.1f} B, "
        f"ANS {e['ans_bytes_per_image']:.1f} B ({100 * e['saving_vs_bitpacked']:.1f}% smaller), cross-entropy "
        f"{e['cross_entropy_bytes_per_image']:.1f} B (ANS +{100 * e['ans_over_cross_entropy']:.1f}% per file, "
        f"+{100 * e['one_stream_ans_over_cross_entropy']:.2f}% as one multi-tile stream); "
        f"ANS {e['ans_encode_tokens_per_s'] / 1e6:.2f} M tokens/s encode, {e['ans_decode_tokens_per_s'] / 1e6:.2f} M decode"
    )
    report["adaptive"] = adaptive_vs_fixed(tok, images, targets=[round(0.3 + 0.05 * i, 2) for i in range(9)])
    print(
        f"{'SSIM target':>11} {'adaptive SSIM':>13} {'mean k':>6} {'adaptive B':>10} {'fixed-k B':>9} {'saving':>7} {'met':>7}"
    )
    for r in report["adaptive"]:
        print(
            f"{r['allocation']:>10} {r['target_ssim']:>11.2f} {r['adaptive_mean_ssim']:>13.3f} {r['mean_tokens']:>6.1f} {r['adaptive_bytes']:>10.1f} "
            f"{r['fixed_k_bytes_at_same_ssim']:>9.1f} {100 * r['saving']:>6.1f}% {r['images_meeting_target']:>3}/{r['images']}"
        )
    if Path(args.large).is_file():
        report["large_photo"] = large_photo(tok, Path(args.large), Path("docs/images/large_photo.png"))
        lp = report["large_photo"]
        print(f"large photo {lp['image']} {lp['size'][0]}x{lp['size'][1]}:")
        for v in lp["vtok"]:
            print(
                f"  vtok {v['tokens_per_tile']} token(s)/tile: {v['bytes']} B, SSIM {v['ssim']:.3f}, PSNR {v['psnr']:.2f}"
            )
        for fmt, c in lp["codecs"].items():
            parts = [f"smallest {c['smallest_bytes']} B (SSIM {c['ssim_of_smallest']:.3f})"]
            for label, v in (("small", lp["vtok"][0]), ("large", lp["vtok"][-1])):
                at, down = c.get(f"at_{label}_budget"), c.get(f"at_{label}_budget_downscaled")
                parts.append(f"within {v['bytes']} B: " + (f"SSIM {at['ssim']:.3f}" if at else "cannot reach"))
                if down:
                    parts.append(f"shrunk {down['scale']:.3g}x: PSNR {down['psnr']:.2f}, SSIM {down['ssim']:.3f}")
            print(f"  {fmt}: " + "; ".join(parts))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
