"""Training throughput of a config on this machine: images/s over a short run after warm-up.

python benchmarks/train_speed.py [configs/default.yaml] [--steps 30]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from vtok.train import Trainer, load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default="configs/default.yaml")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            args.config,
            [
                *args.overrides,
                f"out_dir={out}",
                f"optim.steps={args.steps}",
                "log_every=5",
                "eval_every=100000",
                "checkpoint_every=100000",
                "data.val_dir=null",
            ],
        )
        if not Path(cfg.data.train_dir).is_dir():
            raise SystemExit(f"{cfg.data.train_dir}: missing; run: python scripts/gather_photos.py data/photos")
        start = time.perf_counter()
        Trainer(cfg).fit()
        total = time.perf_counter() - start
        rows = list(csv.DictReader((Path(out) / "metrics.csv").open()))
    steady = [float(r["images_per_s"]) for r in rows[1:]]  # the first window includes warm-up
    rate = sum(steady) / len(steady)
    print(
        f"{cfg.model.name}, batch {cfg.optim.batch_size}, {cfg.threads or 'default'} threads: {rate:.1f} training images/s ({args.steps} steps in {total:.0f} s)"
    )


if __name__ == "__main__":
    main()
