"""A mutation fuzzer for .vtok files: every input must decode or raise a vtok.VtokError, within its
time budget and a memory limit.

    python benchmarks/fuzz_format.py [--executions 200000] [--minutes 10] [--workers 1] [--seed 0]

Seeds are real files of a tiny model (with a token prior), for every coding method that
``vtok.codec.format.CODINGS`` declares (a new method is fuzzed as soon as it is declared there),
at several sizes, overlaps and prefix lengths. Each input is a seed or a corpus entry mutated
blindly (bit flips, byte sets, inserts, deletes, cuts, splices) or field-aware: the file is parsed
into its fields (version 4: flags, shipped index or ids, size, display size, counts, payload;
versions 1-3: version, coding, ids, width, height, overlap, counts, payload length, payload)
and one field is set to a boundary value (varints of 0, 1, 2^k +- 1, over-long or unterminated;
counts of 0, 1, K, K + 1, 255, one too many or too few; payloads emptied, cut, zero-ended, random;
the declared size changed with the counts resized to match). Most inputs get their CRC re-sealed
so that the parser's later checks are reached; the others keep a stale one.

Inputs are decoded in subprocess workers, each under RLIMIT_AS (its size after start-up plus
--memory-mb) and a per-input alarm (--timeout-s); a worker that dies or stops answering is
restarted and its batch reported. Every input is parsed and its payload decoded (vtok's own parser
and entropy decoders); the model decode (pixels) runs on every --full-every-th input and on every
input declaring at most 64 tiles. An input whose outcome (error type and message with the numbers
left out) was never seen joins the corpus: a cheap stand-in for coverage feedback.

Prints executions, outcomes, findings (any exception that is not a VtokError, a dead worker, a
MemoryError), inputs over 1 s among files declaring at most 1024x1024, and inputs over the
budget (1 s plus 20 ms per declared tile) among larger ones. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import random
import re
import signal
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from vtok.codec.format import encode_varint as varint

BATCH = 200
FULL_DECODE_TILES = 64  # files declaring at most this many tiles are always decoded to pixels
SMALL_SIDE = 1024  # the "at most 1 s" target applies to files declaring at most 1024x1024
PER_TILE_BUDGET_S = 0.02  # larger files: 1 s + this per declared tile (tiny model, one core, shared)


# -- the model and the seeds (built the same way in the parent and in every worker) -----------------------


def tiny_tokenizer():
    """The tiny tokenizer with a fitted prior, and the models other coding methods code under
    (by method name: a tiny token LM for "lm"), built the same way in every process."""
    import numpy as np
    import torch

    import vtok
    from vtok.codec.prior import TokenPrior, symbol_alphabets

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = vtok.create_tokenizer("ordered1d-tiny")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, tok.codebook_size, (64, tok.num_tokens))
    tok.prior = TokenPrior.fit(tokens, symbol_alphabets(tok.model.quantizer))
    coders = {}
    try:
        import vtok.lm

        torch.manual_seed(0)
        lm = vtok.lm.create_lm("lm-tiny", tok.model.quantizer.symbol_alphabets(), tok.num_tokens)
        lm.tokenizer_name, lm.tokenizer_id = tok.name, tok.weights_id().hex()
        coders["lm"] = lm.eval()
    except ImportError:
        pass
    return tok, coders


def seed_files(tok, coders) -> list[bytes]:
    """Real files of every declared coding method: sizes from 1x1 to a few tiles, overlaps 0..S/2."""
    import numpy as np

    from vtok.codec.compress import encode_image
    from vtok.codec.format import CODINGS

    rng = np.random.default_rng(0)
    s = tok.image_size
    shapes = [(1, 1, 1, 0), (32, 32, 8, 8), (70, 45, 3, 8), (100, 3, 5, 0), (40, 90, 2, s // 2), (33, 65, 7, 5)]
    seeds = []
    for coding in CODINGS.values():
        for h, w, k, overlap in shapes:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            try:
                enc = encode_image(
                    image, tok, coding=coding.name, tokens=k, overlap=overlap, measure=False, lm=coders.get(coding.name)
                )
            except Exception as e:  # noqa: BLE001 - a method this script cannot encode yet: say so, fuzz the rest
                print(f"note: cannot make a {coding.name} seed ({type(e).__name__}: {e})", file=sys.stderr)
                break
            seeds.append(enc.data)
            seeds.append(_as_version_3(enc.data, tok))  # older files must still decode, or be refused cleanly
        for scale in (0.5, 1.5):  # version 4's display size (resolution as a coding choice)
            image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
            try:
                enc = encode_image(image, tok, coding=coding.name, tokens=3, scale=scale, measure=False,
                                   lm=coders.get(coding.name))  # fmt: skip
            except Exception:  # noqa: BLE001 - noted above
                break
            seeds.append(enc.data)
    return seeds


def _as_version_3(data: bytes, tok) -> bytes:
    from vtok.codec.format import read_file, write_file

    f = read_file(data, tok.image_size, tok.num_tokens)
    if f.tokens_crc is not None or f.display is not None:  # LM files: the CRC covers tokens; keep version 4
        return data
    f.version = 3
    return write_file(f)


# -- field-aware parsing and mutation ---------------------------------------------------------------------


@dataclass
class Fields:
    """Byte spans of a file's fields (start, end), as far as they could be found."""

    spans: dict[str, tuple[int, int]]
    coding: int


def _varint_at(data: bytes, pos: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    for i in range(10):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    return None


def fields(data: bytes, tile: int) -> Fields | None:
    from vtok.codec.format import CODINGS

    if data[:2] == b"vt":
        return _fields_v4(data, tile)
    if len(data) < 14:
        return None
    spans = {"magic": (0, 4), "version": (4, 5), "coding": (5, 6), "model_id": (6, 10)}
    pos, coding = 10, data[5]
    if data[4] >= 2 and coding in CODINGS and CODINGS[coding].has_id:
        spans["prior_id"] = (10, 14)
        pos = 14
    values: dict[str, int] = {}
    pos = _read_varints(data, pos, ("width", "height", "overlap"), spans, values)
    count = _tile_count(values, tile) if pos is not None else None
    if pos is None or count is None:
        return Fields(spans, coding)
    spans["counts"] = (pos, min(pos + count, len(data)))
    pos += count
    got = _varint_at(data, pos)
    if got is None:
        return Fields(spans, coding)
    length, end = got
    spans["payload_length"] = (pos, end)
    spans["payload"] = (end, min(end + length, len(data)))
    spans["crc"] = (len(data) - 4, len(data))
    return Fields(spans, coding)


def _read_varints(data: bytes, pos: int, names, spans: dict, values: dict) -> int | None:
    """Varint fields `names` from `pos` into spans and values; the position after them, or None."""
    for name in names:
        got = _varint_at(data, pos)
        if got is None:
            return None
        values[name], end = got
        spans[name] = (pos, end)
        pos = end
    return pos


def _tile_count(values: dict, tile: int) -> int | None:
    """The tiles a valid declared size makes, or None for a size the parser refuses."""
    from vtok.codec.tiling import TileLayout

    if not 0 < values["width"] <= 1 << 20 or not 0 < values["height"] <= 1 << 20 or values["overlap"] * 2 > tile:
        return None
    return TileLayout(values["width"], values["height"], tile, values["overlap"]).count


def _fields_v4(data: bytes, tile: int) -> Fields | None:
    """The compact container's fields: magic, flags, shipped index or ids, size, display size, counts, payload."""
    from vtok.codec.format import CODINGS

    if len(data) < 9:
        return None
    flags = data[2]
    coding = flags & 3
    spans = {"magic": (0, 2), "flags": (2, 3)}
    pos = 3
    if flags & 0x04:
        spans["shipped_index"] = (3, 4)
        pos = 4
    else:
        spans["model_id"] = (3, 7)
        pos = 7
        if coding in CODINGS and CODINGS[coding].has_id:
            spans["prior_id"] = (7, 11)
            pos = 11
    values = {"width": tile, "height": tile, "overlap": tile // 4}
    names = (("width", "height", "overlap") if flags & 0x08 else ()) + (
        ("display_width", "display_height") if flags & 0x10 else ()
    )
    end = _read_varints(data, pos, names, spans, values)
    count = _tile_count(values, tile) if end is not None else None
    if end is None or count is None:
        return Fields(spans, coding)
    pos = end
    spans["counts"] = (pos, min(pos + count, max(pos, len(data) - 4)))
    pos += count
    spans["payload"] = (min(pos, len(data) - 4), len(data) - 4)
    spans["crc"] = (len(data) - 4, len(data))
    return Fields(spans, coding)


def reseal(body: bytes) -> bytes:
    """Replace the last 4 bytes by the CRC-32 of the rest."""
    if len(body) < 5:
        return body
    return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))


INTERESTING = [0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 127, 128, 255, 256, 1023, 1024, 1025, 4096, 65535]
INTERESTING += [65536, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 1 << 30, (1 << 30) + 1, (1 << 32) - 1, 1 << 32, 1 << 63]


class Mutator:
    def __init__(self, rng: random.Random, tile: int, num_tokens: int, codings: list[int]):
        self.rng, self.tile, self.k, self.codings = rng, tile, num_tokens, codings

    def blind(self, data: bytes) -> bytes:
        r, b = self.rng, bytearray(data)
        for _ in range(r.choice([1, 1, 1, 2, 3, 8])):
            op = r.randrange(7)
            if not b:
                b += bytes(r.randrange(256) for _ in range(r.randrange(1, 40)))
                continue
            # mostly past the magic and the model id, which only ever lead to the first two refusals
            i = r.randrange(10, len(b)) if len(b) > 14 and r.random() < 0.85 else r.randrange(len(b))
            if op == 0:
                b[i] ^= 1 << r.randrange(8)
            elif op == 1:
                b[i] = r.choice([0, 1, 0x7F, 0x80, 0xFF, r.randrange(256)])
            elif op == 2:
                b[i:i] = bytes(r.randrange(256) for _ in range(r.choice([1, 2, 4, r.randrange(1, 64)])))
            elif op == 3:
                del b[i : i + r.choice([1, 2, 4, r.randrange(1, 64)])]
            elif op == 4:
                del b[r.randrange(len(b) + 1) :]
            elif op == 5:
                j = r.randrange(len(b))
                b[i : i + 4] = b[j : j + 4]
            else:
                b += bytes(r.randrange(256) for _ in range(r.randrange(1, 64)))
        return bytes(b)

    def field(self, data: bytes) -> bytes:
        """Set one parsed field to a boundary value (the rest of the file unchanged)."""
        r = self.rng
        f = fields(data, self.tile)
        if f is None or len(f.spans) <= 4:
            return self.blind(data)
        name = r.choice(sorted(f.spans))
        start, end = f.spans[name]
        if name in ("width", "height", "overlap", "payload_length", "display_width", "display_height"):
            choice = r.randrange(4)
            if choice == 0:
                new = varint(r.choice(INTERESTING))
            elif choice == 1:
                old = _varint_at(data, start)
                new = varint(max(0, (old[0] if old else 0) + r.choice([-2, -1, 1, 2])))
            elif choice == 2:  # over-long or unterminated varints
                new = bytes([0x80] * r.randrange(1, 12)) + (b"\x00" if r.random() < 0.5 else b"")
            else:
                new = varint(r.randrange(1 << r.randrange(1, 40)))
        elif name == "counts":
            counts = bytearray(data[start:end])
            choice = r.randrange(5)
            if choice == 0 and counts:
                counts[r.randrange(len(counts))] = r.choice([0, 1, self.k, self.k + 1, 255])
            elif choice == 1:
                counts = bytearray([r.choice([1, self.k, 0, 255])] * len(counts))
            elif choice == 2:
                counts += bytes([r.randrange(1, self.k + 1)] * r.randrange(1, 4))
            elif choice == 3:
                del counts[r.randrange(len(counts) + 1) :]
            else:
                counts = bytearray(r.randrange(1, self.k + 1) for _ in counts)
            new = bytes(counts)
        elif name == "payload":
            payload = bytearray(data[start:end])
            choice = r.randrange(6)
            if choice == 0:
                payload = bytearray()
            elif choice == 1:
                payload += b"\x00" * r.choice([1, 2, 3, 4, 8])  # a zero last word
            elif choice == 2:
                del payload[r.randrange(len(payload) + 1) :]
            elif choice == 3:
                payload = bytearray(r.randrange(256) for _ in range(r.randrange(0, 64)))
            elif choice == 4:
                payload = bytearray(b"\xff" * len(payload))
            else:
                payload = bytearray(self.blind(bytes(payload)))
            new = bytes(payload)
            if r.random() < 0.8 and "payload_length" in f.spans:  # keep the length consistent
                ls, le = f.spans["payload_length"]
                data = data[:ls] + varint(len(new)) + data[le:]
                shift = len(varint(len(new))) - (le - ls)
                start, end = start + shift, end + shift
        elif name == "coding":
            new = bytes([r.choice(self.codings + [max(self.codings) + 1, 7, 255])])
        elif name == "version":
            new = bytes([r.choice([0, 1, 2, 3, 4, 255])])
        elif name == "flags":
            new = bytes([data[start] ^ r.choice([0x01, 0x02, 0x03, 0x04, 0x08, 0x10, 0x20, 0x80])])
        elif name == "shipped_index":
            new = bytes([r.choice([0, 1, 2, 3, 4, 5, 6, 7, 255, r.randrange(256)])])
        else:
            new = bytes(r.randrange(256) for _ in range(end - start))
        return data[:start] + new + data[end:]

    def resize(self, data: bytes) -> bytes:
        """A new declared size (and overlap), the counts resized to the new tile count: a file that
        passes the layout checks and reaches the payload decoder with an unexpected shape."""
        from vtok.codec.tiling import TileLayout

        r = self.rng
        f = fields(data, self.tile)
        if f is None or ("payload_length" not in f.spans and "payload" not in f.spans):
            return self.field(data)
        side = [1, 2, self.tile - 1, self.tile, self.tile + 1, 100, 1000, 1024, 4096, 65535, 1 << 20]
        width = r.choice(side + [r.randrange(1, 2000)])
        height = r.choice(side + [r.randrange(1, 2000)]) if r.random() < 0.7 else 1
        overlap = r.choice([0, 1, self.tile // 4, self.tile // 2, self.tile // 2 + 1])
        count = TileLayout(width, height, self.tile, min(overlap, self.tile - 1)).count
        if count > 20000:  # the file would need one byte per tile; keep it cheap to build, the parser refuses on size
            count = r.choice([0, 1, 100])
        cs, ce = f.spans["counts"]
        old = data[cs:ce] or b"\x01"
        counts = (old * (count // len(old) + 1))[:count]
        size = varint(width) + varint(height) + varint(overlap)
        if data[:2] == b"vt":  # version 4: set the size flag, the size after the ids, the display size kept
            ids_end = max(e for n, (_, e) in f.spans.items() if n in ("flags", "shipped_index", "model_id", "prior_id"))
            display = b"".join(data[slice(*f.spans[n])] for n in ("display_width", "display_height") if n in f.spans)
            head = data[:2] + bytes([data[2] | 0x08]) + data[3:ids_end] + size + display
            return head + counts + data[f.spans["payload"][0] :]
        ws, _ = f.spans["width"]
        head = data[:ws] + size
        return head + counts + data[f.spans["payload_length"][0] :]

    def mutate(self, data: bytes, other: bytes) -> bytes:
        r = self.rng
        choice = r.random()
        if choice < 0.35:
            out = self.field(data)
        elif choice < 0.55:
            out = self.resize(data)
        elif choice < 0.9:
            out = self.blind(data)
        else:  # splice
            i, j = r.randrange(min(10, len(data)), len(data) + 1), r.randrange(min(10, len(other)), len(other) + 1)
            out = data[:i] + other[j:]
        if r.random() < 0.25:
            out = self.blind(out)
        return reseal(out) if r.random() < 0.75 else out


# -- workers ----------------------------------------------------------------------------------------------


class Timeout(BaseException):
    """Raised by the alarm: not an Exception, so no handler in vtok can swallow it."""


def _alarm(signum, frame):
    raise Timeout()


def declared(data: bytes, tile: int) -> tuple[int, int, int] | None:
    """(width, height, tiles) a file declares, if its header gets that far."""
    from vtok.codec.tiling import TileLayout

    f = fields(data, tile)
    if f is None or "overlap" not in f.spans:
        return None
    w = _varint_at(data, f.spans["width"][0])
    h = _varint_at(data, f.spans["height"][0])
    o = _varint_at(data, f.spans["overlap"][0])
    if not (w and h and o) or not (0 < w[0] <= 1 << 20 and 0 < h[0] <= 1 << 20 and o[0] < tile):
        return None
    return w[0], h[0], TileLayout(w[0], h[0], tile, o[0]).count


def worker(inbox, outbox, memory_mb: int, timeout_s: float, full_every: int) -> None:
    import resource

    import vtok
    from vtok.codec.compress import _read, decode_file

    tok, coders = tiny_tokenizer()
    lm = coders.get("lm")
    size_kb = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0])
    limit = (size_kb << 10) + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    n = 0
    while True:
        batch = inbox.get()
        if batch is None:
            return
        results = []
        for data in batch:
            n += 1
            info = declared(data, tok.image_size)
            full = n % full_every == 0 or (info is not None and info[2] <= FULL_DECODE_TILES)
            start, cpu = time.perf_counter(), time.process_time()
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                if full:
                    decode_file(data, tok, lm)
                else:
                    _read(data, tok, lm)
                outcome = "decoded" if full else "parsed"
            except vtok.VtokError as e:
                outcome = f"{type(e).__name__}: {re.sub(r'[0-9a-f]{8}|-?[0-9][0-9,]*', 'N', str(e))[:90]}"
            except Timeout:
                outcome = "FINDING timeout"
            except MemoryError:
                outcome = "FINDING MemoryError"
            except Exception as e:  # noqa: BLE001 - what the fuzzer hunts for
                outcome = f"FINDING {type(e).__name__}: {str(e)[:120]}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            results.append((outcome, time.perf_counter() - start, info, time.process_time() - cpu))
        outbox.put(results)


class Pool:
    """Workers fed batches; one that dies or hangs is replaced, and its batch reported."""

    def __init__(self, n: int, memory_mb: int, timeout_s: float, full_every: int):
        self.ctx = mp.get_context("fork")
        self.args = (memory_mb, timeout_s, full_every)
        self.hang_s = max(60.0, timeout_s * BATCH)
        self.workers = [self._start() for _ in range(n)]

    def _start(self):
        inbox, outbox = self.ctx.Queue(), self.ctx.Queue()
        p = self.ctx.Process(target=worker, args=(inbox, outbox, *self.args), daemon=True)
        p.start()
        return [p, inbox, outbox, None]

    def submit(self, i: int, batch: list[bytes]) -> None:
        self.workers[i][1].put(batch)
        self.workers[i][3] = (batch, time.monotonic())

    def collect(self, i: int):
        """(results, None) or (None, why) when the worker died or hung (it is then restarted)."""
        p, _, outbox, (batch, since) = self.workers[i]
        while True:
            try:
                return outbox.get(timeout=1.0), None
            except Exception:  # noqa: BLE001 - queue.Empty
                if not p.is_alive() or time.monotonic() - since > self.hang_s:
                    why = f"worker exit code {p.exitcode}" if not p.is_alive() else "worker hung"
                    p.kill()
                    p.join()
                    self.workers[i] = self._start()
                    return None, why

    def close(self) -> None:
        for _, inbox, _, _ in self.workers:
            inbox.put(None)
        for p, *_ in self.workers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--executions", type=int, default=200_000)
    ap.add_argument("--minutes", type=float, default=None, help="stop after this long even if short of --executions")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory-mb", type=int, default=1024, help="address space each worker may add after start-up")
    ap.add_argument("--timeout-s", type=float, default=10.0, help="per-input alarm")
    ap.add_argument("--full-every", type=int, default=50, help="decode pixels on every N-th input too")
    ap.add_argument("--findings", type=Path, default=Path("fuzz_findings"), help="inputs that found something")
    args = ap.parse_args()

    from vtok.codec.format import CODINGS

    tok, coders = tiny_tokenizer()
    seeds = seed_files(tok, coders)
    methods = sorted({s[2] & 3 if s[:2] == b"vt" else s[5] for s in seeds})
    print(f"{len(seeds)} seeds; coding methods {', '.join(CODINGS[m].name for m in methods)}; tile {tok.image_size}")
    rng = random.Random(args.seed)
    mutator = Mutator(rng, tok.image_size, tok.num_tokens, sorted(CODINGS))
    corpus = list(seeds)
    seen: set[str] = set()
    stats: collections.Counter[str] = collections.Counter()
    per_method: collections.Counter[str] = collections.Counter()
    findings: list[str] = []
    slow_small: list[tuple[float, tuple, float]] = []
    over_budget: list[tuple[float, tuple, float]] = []
    slowest_small = slowest_large = 0.0
    pool = Pool(args.workers, args.memory_mb, args.timeout_s, args.full_every)
    start = time.perf_counter()
    deadline = start + args.minutes * 60 if args.minutes else float("inf")
    executions, last_report = 0, start

    def make_batch() -> list[bytes]:
        batch = []
        for _ in range(BATCH):
            base = rng.choice(corpus if rng.random() < 0.7 else seeds)
            batch.append(mutator.mutate(base, rng.choice(corpus)))
        return batch

    def save(data: bytes, why: str, slow: bool = False) -> None:
        args.findings.mkdir(parents=True, exist_ok=True)
        name = f"{zlib.crc32(data):08x}.vtok"
        (args.findings / name).write_bytes(data)
        if not slow:  # slow inputs are kept too, to time them again, and reported as SLOW below
            findings.append(f"{why} ({args.findings / name})")

    pending = {}
    try:
        for i in range(args.workers):
            pending[i] = make_batch()
            pool.submit(i, pending[i])
        while pending:
            for i in list(pending):
                batch = pending.pop(i)
                results, why = pool.collect(i)
                if results is None:
                    stats["FINDING " + why] += 1
                    for data in batch[:20]:
                        save(data, why)
                    results = []
                for data, (outcome, seconds, info, cpu_s) in zip(batch, results):
                    executions += 1
                    stats[outcome] += 1
                    if len(data) > 5 and data[:4] == b"VTOK" and data[5] in CODINGS:
                        per_method[CODINGS[data[5]].name] += 1
                    elif len(data) > 2 and data[:2] == b"vt" and data[2] & 3 in CODINGS:
                        per_method[CODINGS[data[2] & 3].name] += 1
                    if outcome.startswith("FINDING"):
                        save(data, outcome)
                    small = info is None or (info[0] <= SMALL_SIDE and info[1] <= SMALL_SIDE)
                    if small:
                        slowest_small = max(slowest_small, seconds)
                        if seconds > 1.0:
                            slow_small.append((seconds, info, cpu_s))
                            save(data, f"slow: {seconds:.2f} s wall, {cpu_s:.2f} s CPU", slow=True)
                    else:
                        slowest_large = max(slowest_large, seconds)
                        if seconds > 1.0 + PER_TILE_BUDGET_S * info[2]:
                            over_budget.append((seconds, info, cpu_s))
                            save(data, f"over budget: {seconds:.2f} s wall, {cpu_s:.2f} s CPU", slow=True)
                    if outcome not in seen:
                        seen.add(outcome)
                        if len(corpus) < 2000:
                            corpus.append(data)
                now = time.perf_counter()
                if now - last_report > 30:
                    last_report = now
                    print(f"  {executions:,} executions, {executions / (now - start):,.0f}/s, corpus {len(corpus)}")
                if executions + BATCH * len(pending) < args.executions and now < deadline:
                    pending[i] = make_batch()
                    pool.submit(i, pending[i])
    finally:
        pool.close()
    elapsed = time.perf_counter() - start
    finding_count = sum(c for k, c in stats.items() if k.startswith("FINDING"))
    print(
        f"{executions:,} executions in {elapsed:.0f} s ({executions / elapsed:,.0f}/s), seed {args.seed}: "
        f"{stats['decoded']:,} decoded to pixels, {stats['parsed']:,} parsed with their payload, "
        f"{finding_count} finding(s) outside vtok.VtokError, "
        f"{len(slow_small)} input(s) over 1 s declaring <= {SMALL_SIDE}x{SMALL_SIDE} (slowest {slowest_small:.3f} s), "
        f"{len(over_budget)} larger input(s) over budget (slowest {slowest_large:.3f} s)"
    )
    print("per coding method: " + ", ".join(f"{k} {v:,}" for k, v in sorted(per_method.items())))
    print(f"{len(seen)} distinct outcomes:")
    for message, count in stats.most_common():
        print(f"  {count:>9,}  {message}")
    for f in findings[:20]:
        print("FINDING", f)
    for seconds, info, cpu_s in (slow_small + over_budget)[:10]:
        print(f"SLOW {seconds:.2f} s wall ({cpu_s:.2f} s CPU: the rest is waiting for a shared core) declaring {info}")
    return 1 if finding_count or slow_small or over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
