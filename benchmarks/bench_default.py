"""The full bench of the shipped default model on held-out real photos (the README's table and plot).

    python scripts/gather_photos.py data/photos      # once: 104 held-out images the model never trained on
    python benchmarks/bench_default.py [--limit 100] [--out benchmarks/results/bench_default]

Prints the summary and the wall-clock time; the target is 100 images at 128x128 within
10 minutes on 2 CPU cores. Copies the main plot to docs/images/bench_quality_vs_bytes.png.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from vtok.bench import run_bench, write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--folder", default="data/photos/heldout")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/bench_default")
    args = ap.parse_args()
    if not Path(args.folder).is_dir():
        raise SystemExit(f"{args.folder}: missing; run: python scripts/gather_photos.py data/photos")
    start = time.perf_counter()
    result = run_bench([args.model], args.folder, limit=args.limit)
    files = write_report(result, args.out, folder=args.folder)
    elapsed = time.perf_counter() - start
    print(Path(files["markdown"]).read_text())
    print(f"{len(result.images)} images benchmarked in {elapsed / 60:.1f} minutes")
    for key, target in (("quality_vs_bytes_png", "bench_quality_vs_bytes.png"), ("sheet_png", "bench_equal_bytes.png")):
        if key in files:
            shutil.copy(files[key], Path("docs/images") / target)


if __name__ == "__main__":
    main()
