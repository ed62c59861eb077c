"""Plot held-out PSNR against wall-clock time from a run's eval.csv (needs vtok[plot]).

python benchmarks/plot_training.py runs/default docs/images/default_training.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader((args.run / "eval.csv").open()))
    if not rows:
        raise SystemExit(f"{args.run}/eval.csv has no rows")
    ks = sorted(int(key[6:]) for key in rows[0] if key.startswith("psnr_k"))
    minutes = [float(r["elapsed_s"]) / 60 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, k in enumerate(ks):
        color = cmap(i / max(1, len(ks) - 1))
        ax1.plot(minutes, [float(r[f"psnr_k{k}"]) for r in rows], marker="o", ms=3, color=color, label=f"k={k}")
        ax2.plot(minutes, [float(r[f"ssim_k{k}"]) for r in rows], marker="o", ms=3, color=color, label=f"k={k}")
    ax1.set(
        xlabel="training time on 2 CPU cores (minutes)", ylabel="held-out PSNR (dB)", title="PSNR per prefix length"
    )
    ax2.set(xlabel="training time on 2 CPU cores (minutes)", ylabel="held-out SSIM", title="SSIM per prefix length")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
