"""Hostile inputs against every `vtok` command: image bombs, tampered model folders, file-system
faults and decompression-bomb .vtok files, each run as a `python -m vtok.cli` subprocess.

    python benchmarks/hostile_inputs.py [--quick] [--keep DIR]

Each run must end in one line `vtok: error: ...` (folder runs: `vtok: skipped ...` lines, then
one error line with the count), exit status 2, no traceback; a refused hostile input (image, model
folder, .vtok file) within a peak memory (the child's maximum resident set, from wait4) of 300 MB,
except `train`, which builds its model, optimizer and data pipeline (about 310 MB) before it
decodes its first image, and is held to 340 MB. File-system faults strike after the command's
legitimate work (an eval fails writing its JSON), so their peak is shown but not held to a limit.
The few cases marked "ok" must succeed instead (a folder with a file name that is not UTF-8, a
large but legitimate decode within its stated time). Prints one row per
run and the counts; exit status 1 if any run failed its expectation.

Permissions do not stop root: when run as root, every command runs without the capabilities that
let root ignore them (`setpriv --bounding-set=-dac_override,-dac_read_search`), so that a
read-only folder and an unreadable file are what they are for everyone else. A full device is
simulated with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored): writes fail with EFBIG, as they
would with ENOSPC.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEMORY_LIMIT_MB = 300
DECODE_BASE_MB = 280  # `vtok decode` of a one-tile file: Python, PyTorch and the default model
TRAIN_MEMORY_LIMIT_MB = 340
DROP_ROOT_OVERRIDES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@dataclass
class Row:
    group: str
    case: str
    command: str
    expect: str  # "error" or "ok"
    rc: int
    seconds: float
    peak_mb: float
    message: str
    passed: bool


class Runner:
    def __init__(self, root: Path, timeout_s: float):
        self.root, self.timeout_s = root, timeout_s
        self.rows: list[Row] = []
        self.prefix = DROP_ROOT_OVERRIDES if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        home = root / "home"
        home.mkdir(exist_ok=True)
        home.chmod(0o777)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "src"),
            "OMP_NUM_THREADS": "1",
            "HOME": str(home),
            "MPLCONFIGDIR": str(home),
            "LC_ALL": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8:strict",
        }

    def run(
        self,
        group: str,
        case: str,
        argv: list,
        expect: str = "error",
        fsize: int | None = None,
        check=None,
        max_seconds: float | None = None,
        max_mb: float | None = None,
    ) -> Row:
        memory_limit = None if group == "filesystem" or expect != "error" else MEMORY_LIMIT_MB
        memory_limit = max_mb if max_mb is not None else memory_limit
        if memory_limit and argv[0] == "train":
            memory_limit = TRAIN_MEMORY_LIMIT_MB

        def limits() -> None:
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        cmd = [*self.prefix, sys.executable, "-m", "vtok.cli", *map(str, argv)]
        start = time.perf_counter()
        p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, preexec_fn=limits, cwd=self.root
        )
        try:
            out, err = p.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        seconds = time.perf_counter() - start
        # communicate() reaped the child; its rusage went into RUSAGE_CHILDREN's maximum only: wait4
        # is not available after that, so the child's own peak is read through a fresh measurement.
        peak_mb = self._peak.pop(p.pid, None) or resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        text = err.decode("utf-8", "backslashreplace")
        lines = [line for line in text.splitlines() if line.strip()]
        traceback = "Traceback" in text
        if expect == "error":
            last_ok = bool(lines) and lines[-1].startswith("vtok: error:")
            others_ok = all(re.match(r"vtok: skipped |vtok: note: |[\w .-]+: \d+/\d+ ", line) for line in lines[:-1])
            passed = p.returncode == 2 and last_ok and others_ok and not traceback
            message = lines[-1] if lines else "(no message)"
        else:
            passed = p.returncode == 0 and not traceback
            message = (out.decode("utf-8", "backslashreplace").strip().splitlines() or ["(no output)"])[-1]
            if not passed and lines:
                message = lines[-1]
        if memory_limit is not None and peak_mb >= memory_limit:
            passed, message = False, f"peak {peak_mb:.0f} MB is over {memory_limit} MB; {message}"
        if max_seconds is not None and seconds > max_seconds:
            passed, message = False, f"{seconds:.0f} s is over the stated {max_seconds:.0f} s; {message}"
        if check is not None and passed:
            why = check()
            if why:
                passed, message = False, why
        command = " ".join(str(a) for a in argv[:1])
        row = Row(group, case, command, expect, p.returncode, seconds, peak_mb, message, passed)
        self.rows.append(row)
        mark = "ok  " if passed else "FAIL"
        print(
            f"{mark} {group:<11} {case:<26} {command:<7} rc={p.returncode} {seconds:5.1f}s {peak_mb:4.0f}MB  {message[:110]}"
        )
        sys.stdout.flush()
        return row

    _peak: dict[int, float] = {}


def _install_peak_tracking(runner: Runner) -> None:
    """Popen.communicate reaps with waitpid, which drops the child's rusage: wrap os.waitpid so the
    child is reaped with wait4 instead, and its own maximum resident set is kept per pid."""
    real_waitpid = os.waitpid

    def waitpid(pid, options):
        if pid > 0:
            got, status, usage = os.wait4(pid, options)
            if got:
                runner._peak[got] = usage.ru_maxrss / 1024
            return got, status
        return real_waitpid(pid, options)

    os.waitpid = waitpid  # type: ignore[assignment]


# -- inputs ---------------------------------------------------------------------------------------------


def world_readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)


def photo(size=(96, 96), index=1):
    from PIL import Image

    from vtok.demo import sample_images

    return Image.open(sample_images()[index]).convert("RGB").resize(size, Image.Resampling.LANCZOS)


def image_bombs(folder: Path) -> dict[str, Path]:
    """One folder per case, holding that one hostile image."""
    from PIL import Image

    cases: dict[str, bytes] = {}
    b = io.BytesIO()
    Image.new("P", (1, 1)).save(b, "GIF")
    gif = bytearray(b.getvalue())
    gif[6:10] = struct.pack("<HH", 10000, 10000)  # the logical screen: a 1x1 frame on 10000x10000
    cases["gif-10000x10000"] = bytes(gif)
    # A 38-byte WebP: the VP8L header of a 16383x6100 image and almost no data.
    vp8l = bytes([0x2F]) + ((16383 - 1) | ((6100 - 1) << 14)).to_bytes(4, "little") + b"\x00" * 4
    riff = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    cases["webp-16383x6100"] = b"RIFF" + struct.pack("<I", len(riff) + 1) + riff + b"\x00"
    b = io.BytesIO()
    Image.new("RGB", (16383, 6100), (200, 10, 10)).save(b, "WEBP", lossless=True)  # valid, flat, 3.9 kB
    cases["webp-valid-flat-100MP"] = b.getvalue()
    b = io.BytesIO()
    photo((64, 48)).save(b, "JPEG")
    jpeg = bytearray(b.getvalue())
    sof = jpeg.index(b"\xff\xc0")
    for side in (10000, 1000):
        jpeg[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
        cases[f"jpeg-patched-{side}"] = bytes(jpeg)
    b = io.BytesIO()
    photo((512, 512)).save(b, "PNG")
    cases["png-truncated"] = b.getvalue()[: len(b.getvalue()) // 2]
    b = io.BytesIO()
    photo((512, 512)).save(b, "JPEG")
    cases["jpeg-truncated"] = b.getvalue()[: len(b.getvalue()) // 3]
    cases["zero-bytes"] = b""
    # A PNG whose zTXt chunk inflates to 1 GB of zeros.
    b = io.BytesIO()
    photo((8, 8)).save(b, "PNG")
    png = b.getvalue()
    import zlib

    bomb = zlib.compress(b"\x00" * (1 << 30), 9)
    body = b"zTXt" + b"k\x00\x00" + bomb
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    cases["png-ztxt-bomb"] = png[:33] + chunk + png[33:]
    out = {}
    suffix = {"gif": ".gif", "webp": ".webp", "jpeg": ".jpg", "png": ".png", "zero": ".png"}
    for name, data in cases.items():
        (folder / name).mkdir(parents=True)
        path = folder / name / f"image{suffix[name.split('-')[0]]}"
        path.write_bytes(data)
        out[name] = path
    return out


def tampered_models(base: Path, folder: Path) -> dict[str, Path]:
    from safetensors.torch import load_file, save_file

    meta = json.loads((base / "config.json").read_text())
    changes = {
        "heads=0": {"heads": 0},
        "patch=0": {"patch": 0},
        "image_size=0": {"image_size": 0},
        "image_size=-32": {"image_size": -32},
        "channels=[]": {"channels": []},
        "num_tokens=-1": {"num_tokens": -1},
        "num_tokens=1e9": {"num_tokens": 10**9},
        "num_tokens=2e6": {"num_tokens": 2 * 10**6},
        "encoder_depth=1e5": {"encoder_depth": 10**5},
    }
    out = {}
    for name, change in changes.items():
        m = folder / name
        shutil.copytree(base, m)
        (m / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], **change}}))
        out[name] = m
    m = folder / "nested-json"
    shutil.copytree(base, m)
    (m / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    out["nested-json"] = m
    m = folder / "name=5"
    shutil.copytree(base, m)
    (m / "config.json").write_text(json.dumps({**meta, "name": 5}))
    out["name=5"] = m
    m = folder / "nan-weights"
    shutil.copytree(base, m)
    state = load_file(str(m / "model.safetensors"))
    key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(m / "model.safetensors"))
    out["nan-weights"] = m
    m = folder / "weights-header-10GB"  # a header claiming a tensor of 10 GB, and a few bytes of data
    shutil.copytree(base, m)
    header = json.dumps({"huge": {"dtype": "F32", "shape": [50_000, 50_000], "data_offsets": [0, 10**10]}}).encode()
    (m / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 64)
    out["weights-header-10GB"] = m
    m = folder / "weights-truncated"
    shutil.copytree(base, m)
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 2])
    out["weights-truncated"] = m
    m = folder / "no-config"
    shutil.copytree(base, m)
    (m / "config.json").unlink()
    out["no-config"] = m
    return out


def vtok_bombs(folder: Path) -> dict[str, Path]:
    """The issue's small files declaring huge images, for the shipped default model (valid CRC and
    payload: 1 token per tile, ANS-coded)."""
    import numpy as np

    import vtok
    from vtok.codec.entropy import ans_encode
    from vtok.codec.format import VtokFile, write_file
    from vtok.codec.tiling import TileLayout

    tok = vtok.load("default")
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, w, h, overlap in [
        ("4000x4000", 4000, 4000, 64),
        ("10000x10000", 10000, 10000, 64),
        ("1048576x1", 1 << 20, 1, 64),
        ("1048576x1-overlap0", 1 << 20, 1, 0),
        ("widest 585920x128", 585_920, 128, 32),  # the most tiles the default limit allows (6,103), in one row
        ("tallest 128x585920", 128, 585_920, 32),  # and in one column
    ]:
        count = TileLayout(w, h, tok.image_size, overlap).count
        counts = np.ones(count, dtype=np.int64)
        payload = ans_encode(np.zeros((count, tok.num_tokens), dtype=np.int64), counts, tok.prior)
        data = write_file(
            VtokFile(1, tok.weights_id(), w, h, overlap, counts.astype(np.uint8), payload, tok.prior.id())
        )
        out[name] = folder / f"{name.split()[0]}.vtok"
        out[name].write_bytes(data)
    data = write_file(
        VtokFile(
            1,
            tok.weights_id(),
            64,
            64,
            0,
            np.array([3], dtype=np.uint8),
            b"\x01\x00\x00\x00\x00\x00\x00\x00",
            tok.prior.id(),
        )
    )
    out["ans-last-word-zero"] = folder / "ans-last-word-zero.vtok"
    out["ans-last-word-zero"].write_bytes(data)
    return out


# -- the runs -------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer commands per case (encode and decode only)")
    ap.add_argument("--keep", type=Path, help="build the inputs here and keep them (default: a temporary folder)")
    ap.add_argument("--timeout-s", type=float, default=300.0)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    import numpy as np
    import torch

    import vtok
    from vtok.codec import encode_image

    root = Path(tempfile.mkdtemp(prefix="vtok_hostile_")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    runner = Runner(root, args.timeout_s)
    _install_peak_tracking(runner)
    torch.manual_seed(0)
    tiny = vtok.create_tokenizer("ordered1d-tiny")
    model = tiny.save_pretrained(root / "tiny")
    photos = root / "photos"
    photos.mkdir()
    for i in range(3):
        photo(index=i).save(photos / f"p{i}.png")
    good_vtok = root / "good.vtok"
    good_vtok.write_bytes(encode_image(np.asarray(photo()), tiny, tokens=4).data)
    images = image_bombs(root / "images")
    models = tampered_models(model, root / "models")
    bombs = vtok_bombs(root / "vtok")
    world_readable(root)
    out = root / "out"
    quick = args.quick

    def fresh(name: str) -> Path:
        path = out / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        path.chmod(0o777)
        return path

    # 1. hostile images, through every command that reads images
    for name, path in images.items():
        o = fresh(f"img-{name}")
        runner.run("image", name, ["encode", path, "-o", o / "x.vtok", "--model", model])
        runner.run("image", name, ["encode", path.parent, "-o", o / "dir", "--model", model])
        if quick:
            continue
        runner.run("image", name, ["demo", path, "--model", model, "--out", o / "sheet.png"])
        runner.run("image", name, ["eval", model, path.parent])
        runner.run("image", name, ["prior", model, path.parent, "--crops", "1", "--out", o / "m"])
        runner.run(
            "image",
            name,
            [
                "train",
                REPO / "configs" / "tiny.yaml",
                f"data.train_dir={path.parent}",
                f"out_dir={o / 'run'}",
                "optim.steps=1",
            ],
        )
        runner.run("image", name, ["bench", model, path.parent, "--out", o / "b", "--no-perceptual", "--codecs", ""])

    # 2. tampered model folders, through every command that loads a model
    for name, m in models.items():
        o = fresh(f"model-{name}")
        runner.run("model", name, ["encode", photos / "p1.png", "-o", o / "x.vtok", "--model", m])
        runner.run("model", name, ["decode", good_vtok, "-o", o / "x.png", "--model", m])
        if quick:
            continue
        runner.run("model", name, ["demo", "--model", m, "--out", o / "sheet.png"])
        runner.run("model", name, ["eval", m, photos])
        runner.run("model", name, ["prior", m, photos, "--crops", "1", "--out", o / "m"])
        runner.run("model", name, ["bench", m, photos, "--out", o / "b", "--no-perceptual", "--codecs", ""])

    # 3. file-system faults
    ro = fresh("read-only")
    ro.chmod(0o555)
    train = ["train", REPO / "configs" / "tiny.yaml", f"data.train_dir={photos}", "optim.steps=1"]
    writers = {
        "encode": lambda o: ["encode", photos / "p1.png", "-o", o / "x.vtok", "--model", model],
        "encode-dir": lambda o: ["encode", photos, "-o", o / "enc", "--model", model],
        "decode": lambda o: ["decode", good_vtok, "-o", o / "x.png", "--model", model],
        "demo": lambda o: ["demo", "--model", model, "--out", o / "sheet.png"],
        "eval --json": lambda o: ["eval", model, photos, "--json", o / "e.json"],
        "train": lambda o: [*train, f"out_dir={o / 'run'}"],
        "prior --out": lambda o: ["prior", model, photos, "--crops", "1", "--out", o / "m"],
        "bench --out": lambda o: ["bench", model, photos, "--out", o / "b", "--no-perceptual", "--codecs", ""],
    }
    blocker = out / "a-file"
    blocker.write_text("not a folder")
    blocker.chmod(0o666)
    for what, argv in writers.items():
        if quick and what not in ("encode", "decode"):
            continue
        runner.run("filesystem", "read-only folder", argv(ro))
        runner.run("filesystem", "output under a file", argv(blocker))
        full = fresh(f"full-{what.split()[0]}")
        runner.run(
            "filesystem",
            "full device (EFBIG)",
            argv(full),
            fsize=16,
            check=lambda full=full: _leftovers(full),
        )
    unreadable = fresh("unreadable")
    shutil.copy(good_vtok, unreadable / "a.vtok")
    shutil.copy(good_vtok, unreadable / "b.vtok")
    (unreadable / "a.vtok").chmod(0o000)
    o = fresh("unreadable-out")
    runner.run("filesystem", "unreadable .vtok", ["decode", unreadable / "a.vtok", "-o", o / "a.png", "--model", model])
    runner.run(
        "filesystem",
        "unreadable .vtok in folder",
        ["decode", unreadable, "-o", o / "dir", "--model", model],
        check=lambda: None if (o / "dir" / "b.png").is_file() else "the readable file was not decoded",
    )
    locked = root / "models" / "config-unreadable"
    shutil.copytree(model, locked)
    world_readable(locked)
    (locked / "config.json").chmod(0o000)
    for argv in (
        ["encode", photos / "p1.png", "-o", o / "y.vtok", "--model", locked],
        ["decode", good_vtok, "-o", o / "y.png", "--model", locked],
        ["demo", "--model", locked, "--out", o / "s.png"],
        ["eval", locked, photos],
    ):
        if quick and argv[0] not in ("encode", "decode"):
            continue
        runner.run("filesystem", "unreadable config.json", argv)
    odd = fresh("odd-names")
    try:
        photo(index=2).save(odd / os.fsdecode(b"caf\xe9.png"))
        photo(index=1).save(odd / "plain.png")
        world_readable(odd)
    except (OSError, UnicodeEncodeError):
        print("note: this file system refuses names that are not UTF-8: case left out")
    else:
        o = fresh("odd-out")
        runner.run(
            "filesystem",
            "non-UTF-8 name, strict out",
            ["encode", odd, "-o", o / "enc", "--model", model, "--tokens", "2"],
            expect="ok",
            check=lambda: None if len(list((o / "enc").glob("*.vtok"))) == 2 else "not every file was encoded",
        )
        runner.run(
            "filesystem",
            "non-UTF-8 name, strict out",
            ["decode", o / "enc", "-o", o / "dec", "--model", model],
            expect="ok",
            check=lambda: None if len(list((o / "dec").glob("*.png"))) == 2 else "not every file was decoded",
        )

    # 4. .vtok decompression bombs (the shipped default model)
    o = fresh("vtok-bombs")
    for name, path in bombs.items():
        if name.startswith(("widest", "tallest")):
            # valid and within the default limit: it must decode, in linear time, with a working set
            # (over the ~270 MB of Python, PyTorch and the model) under 200 MB whatever the shape
            runner.run("vtok", name, ["decode", path, "-o", o / "edge.png"], expect="ok", max_seconds=6103 * 0.02,
                       max_mb=DECODE_BASE_MB + 200)  # fmt: skip
        elif name == "4000x4000":
            # within the default budget: it must decode, in the time the README states (tiles x 20 ms)
            runner.run("vtok", name, ["decode", path, "-o", o / f"{name}.png"], expect="ok", max_seconds=3844 * 0.02)
            runner.run(
                "vtok", name + " --max-pixels", ["decode", path, "-o", o / "small.png", "--max-pixels", 20_000_000]
            )
        else:
            runner.run("vtok", name, ["decode", path, "-o", o / f"{name}.png"])
            runner.run("vtok", name + " tokens", ["decode", path, "-o", o / f"{name}.json", "--tokens-only"])

    rows = runner.rows
    failed = [r for r in rows if not r.passed]
    refused = [r for r in rows if r.expect == "error"]
    print()
    print(f"{len(rows)} runs: {len(rows) - len(failed)} as expected, {len(failed)} not")
    for group in ("image", "model", "filesystem", "vtok"):
        g = [r for r in rows if r.group == group]
        if g:
            print(
                f"  {group:<11} {len(g):>3} runs, {sum(r.passed for r in g):>3} as expected, "
                f"slowest {max(r.seconds for r in g):5.1f} s, peak {max(r.peak_mb for r in g):4.0f} MB"
            )
    if refused:
        hostile = [r for r in refused if r.group != "filesystem"]
        print(
            f"refusals: {sum(r.rc == 2 for r in refused)} of {len(refused)} with exit 2, slowest "
            f"{max(r.seconds for r in refused):.1f} s; hostile inputs refused within "
            f"{max((r.peak_mb for r in hostile if r.command != 'train'), default=0):.0f} MB "
            f"({max((r.peak_mb for r in hostile if r.command == 'train'), default=0):.0f} MB for train)"
        )
    for r in failed:
        print(f"FAILED {r.group} / {r.case} / {r.command}: rc={r.rc}, {r.peak_mb:.0f} MB: {r.message}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def _leftovers(folder: Path) -> str | None:
    """A failed write leaves no temporary sibling behind (and no half-written model folder)."""
    left = [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]
    return f"left behind: {', '.join(p.name for p in left[:3])}" if left else None


if __name__ == "__main__":
    sys.exit(main())
