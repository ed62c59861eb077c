"""Encode + decode speed and peak memory of a tokenizer on this machine's CPU (or GPU).

    python benchmarks/speed.py [--model default] [--threads 2]

Each batch size runs in a fresh process so that its peak resident memory is its own.
Prints images/s for encode, decode (full K) and decode of a 4-token prefix, at batch 1 and 32.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(model: str, batch: int, threads: int, repeats: int) -> dict:
    import torch

    import vtok

    torch.set_num_threads(threads)
    tok = vtok.load(model)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x = torch.rand(batch, 3, tok.image_size, tok.image_size)
    tokens = tok.encode(x)  # warm-up
    tok.decode(tokens)
    result = {"batch": batch, "threads": threads}
    for name, fn in (
        ("encode", lambda: tok.encode(x)),
        ("decode", lambda: tok.decode(tokens)),
        ("decode_k4", lambda: tok.decode(tokens[:, :4])),
        ("encode+decode", lambda: tok.decode(tok.encode(x))),
    ):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        result[f"{name}_images_per_s"] = round(batch * repeats / (time.perf_counter() - start), 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["model_rss_mb"] = round(base_rss / 1024, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        repeats = 20 if args.child == 1 else 4
        print(json.dumps(measure(args.model, args.child, args.threads, repeats)))
        return
    rows = []
    for b in map(int, args.batches.split(",")):
        cmd = [sys.executable, __file__, "--model", args.model, "--threads", str(args.threads), "--child", str(b)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(f"model {args.model}, {args.threads} threads")
    print(f"{'batch':>5} {'encode/s':>9} {'decode/s':>9} {'dec k=4/s':>9} {'enc+dec/s':>9} {'peak MB':>8}")
    for r in rows:
        print(
            f"{r['batch']:>5} {r['encode_images_per_s']:>9} {r['decode_images_per_s']:>9} "
            f"{r['decode_k4_images_per_s']:>9} {r['encode+decode_images_per_s']:>9} {r['peak_rss_mb']:>8}"
        )


if __name__ == "__main__":
    main()
