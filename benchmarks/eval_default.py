"""The default model's quality per prefix length on held-out real photos (the README's table).

    python scripts/gather_photos.py data/photos     # once: builds data/photos/heldout
    python benchmarks/eval_default.py [--model default] [--folder data/photos/heldout]

Checks the targets of the default model: mean PSNR never decreases with k, and at full K it
reaches 22 dB and SSIM 0.60 within 128 bytes. Writes the full result as JSON next to the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import vtok
from vtok.evaluate import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--folder", default="data/photos/heldout")
    ap.add_argument("--json", default="benchmarks/results/eval_default.json")
    args = ap.parse_args()
    if not Path(args.folder).is_dir():
        raise SystemExit(f"{args.folder}: missing; run: python scripts/gather_photos.py data/photos")
    result = evaluate(vtok.load(args.model), args.folder)
    print(result.table())
    psnrs = [r["psnr"] for r in result.rows]
    full = result.rows[-1]
    print(f"PSNR never decreases with k: {all(b >= a for a, b in zip(psnrs, psnrs[1:]))}")
    print(
        f"full K: {full['psnr']:.2f} dB (target 22), SSIM {full['ssim']:.3f} (target 0.60), {full['bytes']:.1f} bytes (target <= 128)"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")


if __name__ == "__main__":
    main()
