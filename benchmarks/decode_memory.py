"""Decoding memory on the widest and tallest valid files the default pixel limit allows.

    python benchmarks/decode_memory.py [--tiles N] [--codings bitpack,ans,lm]

For each coding method, builds a valid .vtok file of the shipped `default` model with one token per
tile, N tiles in one row (the widest image) and in one column (the tallest), then decodes it in a
fresh process under GNU time, twice: `vtok decode FILE -o OUT.png` (streams a PNG) and
`vtok.decompress` (returns the image). Each run's peak resident memory is set against a baseline
process that loads the model and decodes a one-tile file: the working set is

    peak - baseline - returned image (decompress only: a PIL RGB image, which Pillow stores in 4
    bytes a pixel)

and must stay under 200 MB whatever the shape. Default N: the most tiles the default limit of
100,000,000 tile pixels allows (6,103 tiles of 128x128). Prints a table; --json writes it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_MB = 200
REPO = Path(__file__).resolve().parents[1]

DECOMPRESS = "import sys, vtok; im = vtok.decompress(open(sys.argv[1], 'rb').read()); print(im.size)"


def build(tiles: int, wide: bool, coding: str, out: Path) -> tuple[Path, int, int]:
    import numpy as np

    import vtok
    from vtok.codec import encode_image  # noqa: F401 - loads the codec package
    from vtok.codec.compress import CODE_OF, _build_file, default_overlap
    from vtok.codec.tiling import TileLayout

    tok = vtok.load("default")
    s, o = tok.image_size, default_overlap(tok.image_size)
    long_side = (s - o) * tiles + o
    w, h = (long_side, s) if wide else (s, long_side)
    layout = TileLayout(w, h, s, o)
    assert layout.count == tiles, (layout.count, tiles)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, tok.codebook_size, (tiles, tok.num_tokens))
    lm = None
    if coding == "lm":
        import vtok.lm

        lm = vtok.lm.load("default")
    data = _build_file(tok, CODE_OF[coding], layout, o, np.ones(tiles, dtype=np.int64), tokens, lm)
    path = out / f"{coding}-{'wide' if wide else 'tall'}-{w}x{h}.vtok"
    path.write_bytes(data)
    return path, w, h


def peak_mb(argv: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of a command, from GNU time."""
    started = time.time()
    done = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed:\n{done.stderr[-2000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return kb / 1024, time.time() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiles", type=int, default=6103)
    ap.add_argument("--codings", default="bitpack,ans,lm")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    py = sys.executable
    vtok_cli = [py, "-m", "vtok.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for coding in args.codings.split(","):
            one, _, _ = build(1, True, coding, folder)
            base_decode, _ = peak_mb([*vtok_cli, "decode", str(one), "-o", str(folder / "one.png")])
            base_py, _ = peak_mb([py, "-c", DECOMPRESS, str(one)])
            for wide in (True, False):
                path, w, h = build(args.tiles, wide, coding, folder)
                image_mb = w * h * 4 / 2**20  # a PIL RGB image holds 4 bytes a pixel
                runs = (
                    ("vtok decode", [*vtok_cli, "decode", str(path), "-o", str(folder / "out.png")], base_decode, 0.0),
                    ("decompress", [py, "-c", DECOMPRESS, str(path)], base_py, image_mb),
                )
                for how, argv, baseline, returned in runs:
                    peak, secs = peak_mb(argv)
                    rows.append(
                        dict(
                            coding=coding,
                            shape=f"{w}x{h}",
                            file_bytes=path.stat().st_size,
                            path=how,
                            peak_mb=peak,
                            baseline_mb=baseline,
                            image_mb=returned,
                            seconds=secs,
                            working_set_mb=peak - baseline - returned,
                        )  # fmt: skip
                    )
                r = rows[-2:]
                for row in r:
                    print(
                        f"{row['coding']:8s} {row['shape']:>14s} {row['file_bytes']:>8,d} B  {row['path']:12s} "
                        f"peak {row['peak_mb']:7.1f} MB  baseline {row['baseline_mb']:6.1f}  image {row['image_mb']:6.1f}"
                        f"  working set {row['working_set_mb']:6.1f} MB  {row['seconds']:5.1f} s",
                        flush=True,
                    )
    worst = max(r["working_set_mb"] for r in rows)
    print(f"largest working set: {worst:.1f} MB (limit {LIMIT_MB} MB): {'PASS' if worst < LIMIT_MB else 'MISS'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if worst < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
