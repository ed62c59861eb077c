"""Turn a finished training run into the shipped `default` model, with its prior and figures.

    python scripts/export_default.py runs/default

Copies the run's EMA tokenizer into src/vtok/weights/default (renamed `default`), fits the
token prior for entropy coding on data/photos/train, plots the run's PSNR-vs-time curve and
renders the demo sheet into docs/images/. The benchmarks in benchmarks/ then measure it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import vtok
from vtok.codec import fit_prior
from vtok.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--train-dir", default="data/photos/train")
    args = ap.parse_args()
    tok = vtok.load(args.run / "model")
    tok.name = "default"
    fit_prior(tok, args.train_dir, crops_per_image=16)
    target = ROOT / "src" / "vtok" / "weights" / "default"
    if target.exists():
        shutil.rmtree(target)
    tok.save_pretrained(target)
    print(f"exported {args.run / 'model'} -> {target}")
    images = ROOT / "docs" / "images"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "plot_training.py"),
            str(args.run),
            str(images / "default_training.png"),
        ],
        check=True,
    )
    run_demo(model=vtok.load(target), out=images / "demo.png")
    print(f"wrote {images / 'demo.png'}")


if __name__ == "__main__":
    main()
