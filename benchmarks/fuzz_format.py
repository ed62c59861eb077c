"""Fuzz the .vtok parser and decoder: random and mutated files must raise FormatError/VtokError,
never crash, hang or allocate without bound.

    python benchmarks/fuzz_format.py [--examples 20000]

Uses hypothesis (installed with vtok[test]); mutations start from real files of a tiny model.
Prints executions, distinct error messages and findings (any other exception).
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vtok
from vtok.codec import decode_file, encode_image, fit_prior  # noqa: F401


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=20000)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = vtok.create_tokenizer("ordered1d-tiny")
    rng = np.random.default_rng(0)
    from vtok.codec.prior import TokenPrior, symbol_alphabets

    tok.prior = TokenPrior.fit(
        rng.integers(0, tok.codebook_size, (64, tok.num_tokens)), symbol_alphabets(tok.model.quantizer)
    )
    seeds = [
        encode_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), tok, coding=c, tokens=k).data
        for (h, w, k, c) in [(32, 32, 8, "ans"), (70, 45, 3, "bitpack"), (1, 1, 1, "ans"), (100, 3, 5, "bitpack")]
    ]
    stats = collections.Counter()
    findings: list[str] = []

    def check(blob: bytes) -> None:
        stats["executions"] += 1
        try:
            decode_file(blob, tok)
            stats["decoded"] += 1
        except vtok.VtokError as e:
            stats[type(e).__name__ + ": " + str(e).split("(")[0][:60]] += 1
        except Exception as e:  # noqa: BLE001 - this is what we hunt for
            findings.append(f"{type(e).__name__}: {e} on {blob[:40].hex()}")

    mutation = st.tuples(
        st.sampled_from(range(len(seeds))),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
        st.integers(0, 10_000),
        st.booleans(),
    )

    @settings(max_examples=args.examples // 2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutation)
    def mutated(m) -> None:
        i, flips, cut, fix_crc = m
        blob = bytearray(seeds[i])
        for pos, val in flips:
            blob[pos % len(blob)] = val
        blob = bytes(blob[: max(1, cut % (len(blob) + 1))])
        if fix_crc and len(blob) > 8:  # re-seal the checksum so the parser's later checks are reached
            import struct
            import zlib

            blob = blob[:-4] + struct.pack("<I", zlib.crc32(blob[:-4]))
        check(blob)

    @settings(max_examples=args.examples // 2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=300))
    def random_bytes(blob: bytes) -> None:
        check(b"VTOK\x01" + blob if len(blob) % 2 else blob)

    start = time.perf_counter()
    mutated()
    random_bytes()
    elapsed = time.perf_counter() - start
    print(
        f"{stats['executions']} executions in {elapsed:.1f} s; {stats['decoded']} decoded; {len(findings)} finding(s)"
    )
    for message, count in stats.most_common(12):
        if message not in ("executions", "decoded"):
            print(f"  {count:>6}  {message}")
    for f in findings[:10]:
        print("FINDING", f)


if __name__ == "__main__":
    main()
