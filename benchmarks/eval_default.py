"""The default model against its targets, on held-out real photos, beside the model it replaces.

    python scripts/gather_photos.py data/photos     # once: builds data/photos/heldout
    python benchmarks/eval_default.py [--model default] [--baseline data/default-v0]

`--baseline` is the previous default (``git show 1b7d40c:src/vtok/weights/default/...`` into a
folder); without it only the absolute targets are checked. Prints the `vtok eval` tables of both,
then one line per target of the default-model issue with PASS/MISS, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import vtok
from vtok.evaluate import EvalResult, evaluate


def check(name: str, ok: bool, detail: str) -> dict:
    print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")
    return {"target": name, "met": ok, "detail": detail}


def targets(new: EvalResult, old: EvalResult | None) -> list[dict]:
    out = []
    for view, rows in (("whole photos", new.rows), ("detail crops", new.detail_rows)):
        if not rows:
            continue
        full = rows[-1]
        out.append(
            check(
                f"full length, {view}: PSNR >= 22.5 dB and SSIM >= 0.65 within 128 bytes",
                full["psnr"] >= 22.5 and full["ssim"] >= 0.65 and full["bytes"] <= 128,
                f"{full['psnr']:.2f} dB, SSIM {full['ssim']:.3f}, {full['bytes']:.1f} bytes",
            )
        )
        psnrs = [r["psnr"] for r in rows]
        out.append(
            check(
                f"quality never decreases with k ({view})",
                all(b >= a for a, b in zip(psnrs, psnrs[1:])),
                " ".join(f"{p:.2f}" for p in psnrs),
            )
        )
    full = new.rows[-1]
    out.append(check("sharpness at full length >= 30% of the originals'", full["sharpness"] >= 0.3,
                     f"{100 * full['sharpness']:.1f}%"))  # fmt: skip
    flat = {r["k"]: r["error"] for r in new.flat_colour_error}
    k_max = max(flat)
    out.append(check("flat colours: mean error <= 4/255 at full length", flat[k_max] <= 4, f"{flat[k_max]:.1f}/255"))
    out.append(check("flat colours: mean error <= 8/255 at k = 1", flat[1] <= 8, f"{flat[1]:.1f}/255"))
    if old is not None:
        worse = [
            f"k={a['k']}: {a['psnr']:.2f} vs {b['psnr']:.2f}"
            for a, b in zip(new.rows, old.rows)
            if a["psnr"] < b["psnr"]
        ]
        out.append(check("PSNR not below the previous model's at any k (whole photos)", not worse,
                         "; ".join(worse) or "higher at every k"))  # fmt: skip
        if "feature_distance" in full:
            ratios = [a["feature_distance"] / b["feature_distance"] for a, b in zip(new.rows, old.rows)]
            out.append(
                check(
                    "feature distance >= 30% lower than the previous model's at every k",
                    max(ratios) <= 0.7,
                    " ".join(f"k={r['k']}: {100 * (1 - q):.0f}% lower" for r, q in zip(new.rows, ratios)),
                )
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--baseline", default=None, help="the previous default model's folder")
    ap.add_argument("--folder", default="data/photos/heldout")
    ap.add_argument("--json", default="benchmarks/results/eval_default.json")
    args = ap.parse_args()
    if not Path(args.folder).is_dir():
        raise SystemExit(f"{args.folder}: missing; run: python scripts/gather_photos.py data/photos")
    new = evaluate(vtok.load(args.model), args.folder)
    print(f"== {args.model}\n{new.table()}")
    old = None
    if args.baseline:
        old = evaluate(vtok.load(args.baseline), args.folder)
        print(f"== {args.baseline} (baseline)\n{old.table()}")
    checks = targets(new, old)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    record = {"model": new.to_dict(), "baseline": old.to_dict() if old else None, "targets": checks}
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
