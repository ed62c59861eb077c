"""`vtok tokenize` under SIGKILL: killed at random moments and started again, every image must end up
in the shards exactly once; and its speed uninterrupted.

    python benchmarks/tokenize_kill.py data/photos/heldout --kills 5

Prints each kill (when, shards on disk), the final count check, and images/s of a clean run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from vtok.images import find_images
from vtok.shards import TokenShards


def command(images: str, out: Path, args) -> list[str]:
    return [sys.executable, "-m", "vtok.cli", "tokenize", images, "--out", str(out), "--model", args.model,
            "--crops", str(args.crops), "--flip", "--images-per-shard", str(args.images_per_shard)]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images")
    p.add_argument("--model", default="default")
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--crops", type=int, default=8)
    p.add_argument("--images-per-shard", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup", type=float, default=2.0, help="seconds before a run starts writing shards")
    args = p.parse_args()
    rng = random.Random(args.seed)
    readable = len(find_images(args.images))
    work = Path(tempfile.mkdtemp(prefix="vtok-kill-"))
    try:
        clean = work / "clean"
        start = time.perf_counter()
        subprocess.run(command(args.images, clean, args), check=False, capture_output=True)
        seconds = time.perf_counter() - start
        reference = TokenShards(clean)

        out = work / "killed"
        total = len(list(clean.glob("shard-*.parquet")))
        for i in range(args.kills):
            # Land each kill inside the work that is left, spread so the later kills find work too:
            # after start-up, a random moment within this kill's share of what remains.
            left = total - len(list(out.glob("shard-*.parquet")))
            proc = subprocess.Popen(
                command(args.images, out, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            share = (seconds - args.startup) * left / total * 2 / (args.kills - i + 1)
            delay = args.startup + rng.uniform(0.2, 1.0) * max(0.2, share)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            shards = len(list(out.glob("shard-*.parquet")))
            print(f"kill {i + 1}: after {delay:.1f}s, {shards} of {total} shard(s) on disk")
        subprocess.run(command(args.images, out, args), check=False, capture_output=True)
        result = TokenShards(out)
        counts = Counter(zip(result.keys, result.views))
        same = sorted(zip(result.keys, result.views, map(tuple, result.tokens.tolist()))) == sorted(
            zip(reference.keys, reference.views, map(tuple, reference.tokens.tolist()))
        )
        leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
        print(
            f"after {args.kills} kills and a restart: {len(result)} rows, every (image, view) "
            f"{'exactly once' if set(counts.values()) == {1} else 'NOT once'}; identical to an uninterrupted run: "
            f"{same}; temporary files left: {len(leftovers)}"
        )
        images = reference.manifest["images_tokenized"]
        views = len(reference) / max(1, images)
        print(
            f"uninterrupted: {images} of {readable} images ({views:.0f} views each) in {seconds:.1f}s = "
            f"{images / seconds:.2f} images/s, {len(reference) / seconds:.1f} views/s, on {os.cpu_count()} cores"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
