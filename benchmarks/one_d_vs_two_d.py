"""Ordered 1D vs raster 2D tokens, trained alike and benchmarked side by side in one `vtok bench` run.

    python scripts/gather_photos.py data/photos      # once
    python benchmarks/one_d_vs_two_d.py [--steps 1000] [--limit 100]

Trains `ordered1d-small` and `grid2d-small` with the default recipe (configs/default.yaml) cut to
`--steps`, each with the same data, seed, losses and nested prefix dropout; fits each one's token
prior on the training photos; then benches both on the held-out photos in a single run. A
killed run resumes where it stopped (each training resumes from its checkpoint). Writes the
report to benchmarks/results/one_d_vs_two_d/ and copies its quality-vs-k plot to docs/images/.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import vtok
from vtok.bench import run_bench, write_report
from vtok.codec import fit_prior
from vtok.train import Trainer, load_config

ARCHITECTURES = ("ordered1d-small", "grid2d-small")


def train(name: str, steps: int, root: Path) -> Path:
    out = root / name
    config = load_config(
        "configs/default.yaml",
        [
            f"model.name={name}",
            f"optim.steps={steps}",
            f"optim.warmup_steps={min(200, steps // 10)}",
            f"eval_every={max(steps // 4, 1)}",
            f"out_dir={out}",
        ],
    )
    folder = Trainer(config).fit(resume=True)
    tok = vtok.load(folder)
    if tok.prior is None:
        fit_prior(tok, config.data.train_dir)
        tok.save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--folder", default="data/photos/heldout")
    ap.add_argument("--runs", default="runs/one_d_vs_two_d")
    ap.add_argument("--out", default="benchmarks/results/one_d_vs_two_d")
    args = ap.parse_args()
    if not Path(args.folder).is_dir():
        raise SystemExit(f"{args.folder}: missing; run: python scripts/gather_photos.py data/photos")
    start = time.perf_counter()
    folders = [train(name, args.steps, Path(args.runs)) for name in ARCHITECTURES]
    trained = time.perf_counter()
    toks = []
    for name, folder in zip(ARCHITECTURES, folders):
        tok = vtok.load(folder)
        tok.name = f"{name} ({args.steps} steps)"
        toks.append(tok)
    result = run_bench(toks, args.folder, limit=args.limit)
    files = write_report(result, args.out, folder=args.folder)
    print(Path(files["markdown"]).read_text())
    print(
        f"trained in {(trained - start) / 60:.1f} min, benchmarked {len(result.images)} images in "
        f"{(time.perf_counter() - trained) / 60:.1f} min"
    )
    if "quality_vs_k_png" in files:  # absent without matplotlib
        shutil.copy(files["quality_vs_k_png"], Path("docs/images") / "one_d_vs_two_d_quality_vs_k.png")


if __name__ == "__main__":
    main()
