"""Resource budgets and hostile inputs, as properties: the work a .vtok file, an image file or a
model folder may order is bounded before any of it is done, and every hostile input of each class
(mutated .vtok files of every coding method, images whose headers lie, tampered weights, file-system
faults) ends in vtok's own error, in one line.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import _real_photos, run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import vtok
from vtok import images
from vtok.codec import decode_file, decompress, encode_image, read_tokens
from vtok.codec.compress import decode_to_png
from vtok.codec.format import CODINGS, VtokFile, read_file, write_file
from vtok.codec.prior import TokenPrior, symbol_alphabets
from vtok.codec.tiling import (
    TileLayout,
    blend_bands,
    blend_tiles,
    check_budget,
    level_seams,
    strips,
    tile_rows,
)
from vtok.demo import sample_images
from vtok.images import MAX_PIXELS_PER_BYTE, image_size, load_image

QUICK = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def coder() -> vtok.Tokenizer:
    """A tiny tokenizer (32-pixel tiles, 8 tokens) with a prior, so that every coding method works."""
    torch.manual_seed(0)
    tok = vtok.create_tokenizer("ordered1d-tiny")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, tok.codebook_size, (64, tok.num_tokens))
    tok.prior = TokenPrior.fit(tokens, symbol_alphabets(tok.model.quantizer))
    return tok


@pytest.fixture(scope="module")
def token_lm(coder):
    """An untrained tiny token LM for the tiny tokenizer: what LM-coded files are coded under."""
    import vtok.lm

    torch.manual_seed(0)
    lm = vtok.lm.create_lm("lm-tiny", coder.model.quantizer.symbol_alphabets(), coder.num_tokens)
    lm.tokenizer_name, lm.tokenizer_id = coder.name, coder.weights_id().hex()
    return lm.eval()


@pytest.fixture(scope="module")
def seeds(coder, token_lm) -> dict[str, list[bytes]]:
    """Real files of every coding method format.py declares: one and several tiles, with overlap."""
    rng = np.random.default_rng(1)
    out = {}
    for coding in CODINGS.values():
        lm = token_lm if coding.name == "lm" else None
        out[coding.name] = [
            encode_image(
                rng.integers(0, 256, (h, w, 3), dtype=np.uint8), coder, coding=coding.name, tokens=k, lm=lm
            ).data
            for h, w, k in [(32, 32, 8), (40, 70, 3), (1, 1, 1)]
        ]
    return out


def _reseal(body: bytes) -> bytes:
    return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4])) if len(body) > 4 else body


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


# -- the budget -------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    w=st.integers(1, 1 << 20),
    h=st.integers(1, 1 << 20),
    tile=st.sampled_from([8, 32, 128]),
    overlap_quarters=st.integers(0, 2),
    max_pixels=st.integers(1, 10**9),
)
def test_the_budget_counts_the_image_and_its_tiles(w, h, tile, overlap_quarters, max_pixels):
    layout = TileLayout(w, h, tile, tile * overlap_quarters // 4)
    over = w * h > max_pixels or layout.count * tile * tile > max_pixels
    try:
        check_budget(layout, max_pixels)
    except vtok.LimitError as e:
        assert over and f"{max_pixels:,}" in str(e) and "--max-pixels" in str(e) and "\n" not in str(e)
    else:
        assert not over


def _declaring(coder, w: int, h: int, overlap: int = 0) -> bytes:
    """A valid bit-packed file of the tiny model declaring w x h pixels, one token per tile."""
    count = TileLayout(w, h, coder.image_size, overlap).count
    counts = np.ones(count, dtype=np.uint8)
    payload = bytes(-(-count * 10 // 8))  # token 0 in every tile
    return write_file(VtokFile(0, coder.weights_id(), w, h, overlap, counts, payload))


def test_a_file_over_the_budget_is_refused_before_its_counts_are_read(coder):
    """The issue's shapes, scaled to the tiny model: thin and wide, or many tiles of a small stride."""
    wide = _declaring(coder, 1 << 20, 1, 16)  # 65,535 tiles of 32x32: 67 M pixels to decode for 1 M shown
    start = time.perf_counter()
    with pytest.raises(vtok.LimitError, match="65,535 tiles of 32x32 .* over the limit of 10,000,000 pixels"):
        decompress(wide, coder, max_pixels=10_000_000)
    with pytest.raises(vtok.LimitError):
        read_tokens(wide, coder, max_pixels=10_000_000)
    assert time.perf_counter() - start < 1.0
    head = wide[: len(wide) // 2]  # the budget comes before the counts: a file cut there still says so
    with pytest.raises(vtok.LimitError):
        read_file(_reseal(head), coder.image_size, coder.num_tokens, max_pixels=10_000_000)


def test_the_limit_can_be_raised(coder, tmp_path, capsys):
    data = _declaring(coder, 300, 200, 8)  # 104 tiles: 106,496 pixels to decode
    with pytest.raises(vtok.LimitError, match="104 tiles"):
        decode_file(data, coder, max_pixels=100_000)
    array, _ = decode_file(data, coder, max_pixels=110_000)
    assert array.shape == (200, 300, 3)
    path, folder = tmp_path / "a.vtok", coder.save_pretrained(tmp_path / "model")
    path.write_bytes(data)
    rc, _, err = run_cli(
        ["decode", path, "-o", tmp_path / "a.png", "--model", folder, "--max-pixels", "100000"], capsys
    )
    assert rc == 2 and "over the limit of 100,000 pixels" in err and len(err.strip().splitlines()) == 1
    rc, _, _ = run_cli(["decode", path, "-o", tmp_path / "a.png", "--model", folder, "--max-pixels", "110000"], capsys)
    assert rc == 0 and Image.open(tmp_path / "a.png").size == (300, 200)
    rc, _, err = run_cli(["decode", path, "-o", tmp_path / "b.png", "--max-pixels", "0"], capsys)
    assert rc == 2 and "positive" in err


def test_encode_checks_the_budget_from_the_header_before_reading_pixels(coder, tmp_path, monkeypatch, capsys):
    path = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.open(sample_images()[1]).convert("RGB").resize((300, 200)))).save(path)

    def never(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    with monkeypatch.context() as m:
        m.setattr(sys.modules["vtok.codec.compress"], "load_image", never)  # the name is shadowed by compress()
        with pytest.raises(vtok.LimitError, match="over the limit of 100,000 pixels"):
            encode_image(path, coder, tokens=2, overlap=8, max_pixels=100_000)
    assert encode_image(path, coder, tokens=2, overlap=8, max_pixels=110_000).tiles == 104
    folder = coder.save_pretrained(tmp_path / "model")
    argv = ["encode", path, "-o", tmp_path / "x.vtok", "--model", folder, "--overlap", "8"]
    rc, _, err = run_cli([*argv, "--max-pixels", "100000"], capsys)
    assert rc == 2 and "--max-pixels" in err
    assert run_cli([*argv, "--max-pixels", "110000"], capsys)[0] == 0


@settings(max_examples=30, deadline=None)
@given(w=st.integers(1, 150), h=st.integers(1, 150), tile=st.sampled_from([8, 16, 32]), overlap=st.integers(0, 16))
def test_banded_blending_is_bit_identical_to_blending_whole(w, h, tile, overlap):
    """blend_bands (what decoding uses, one tile row at a time, seams levelled) against a direct
    whole-image blend of the levelled tiles; strips get the same pixels as the whole image."""
    overlap = min(overlap, tile // 2)
    layout = TileLayout(w, h, tile, overlap)
    tiles = torch.rand(layout.count, 3, tile, tile, generator=torch.Generator().manual_seed(w * 1000 + h))
    rows = (tiles[r * layout.nx : (r + 1) * layout.nx] for r in range(layout.ny))
    levelled = torch.cat(list(level_seams(rows, overlap)))
    whole = _blend_whole(levelled, layout)
    assert np.array_equal(blend_tiles(tiles, layout), whole)
    bands = list(blend_bands(tile_rows(tiles, layout), layout))
    assert len(bands) == layout.ny and all(b.shape[0] <= tile for b in bands)
    # Strips of a few tiles' width (what decoding a wide image does) make the same pixels
    for width in (1, 2 * tile, 3 * tile + 5):
        out = np.zeros_like(whole)
        parts = strips(layout, max_width=width)
        assert parts[0].x0 == 0 and parts[-1].x1 == w and all(a.x1 == b.x0 for a, b in zip(parts, parts[1:]))
        for strip in parts:
            rows = (
                [tiles[r * layout.nx + strip.columns.start : r * layout.nx + strip.columns.stop]]
                for r in range(layout.ny)
            )
            y = 0
            for band in blend_bands(rows, layout, strip):
                out[y : y + len(band), strip.x0 : strip.x1] = band
                y += len(band)
        assert np.array_equal(out, whole), width


def _blend_whole(tiles: torch.Tensor, layout: TileLayout) -> np.ndarray:
    """The pre-banding implementation: every tile into one float canvas."""
    from vtok.codec.tiling import _ramp

    s, st_, o = layout.tile, layout.stride, layout.overlap
    acc = torch.zeros(3, st_ * layout.ny + o, st_ * layout.nx + o)
    weight = torch.zeros(1, *acc.shape[1:])
    for i, tile in enumerate(tiles):
        r, c = divmod(i, layout.nx)
        w = _ramp(s, o, r > 0, r < layout.ny - 1)[:, None] * _ramp(s, o, c > 0, c < layout.nx - 1)[None, :]
        acc[:, r * st_ : r * st_ + s, c * st_ : c * st_ + s] += tile * w
        weight[:, r * st_ : r * st_ + s, c * st_ : c * st_ + s] += w
    out = (acc / weight.clamp_min(1e-8))[:, : layout.height, : layout.width]
    return (out.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def test_the_png_written_band_by_band_holds_the_decoded_pixels(coder):
    photo = np.asarray(Image.open(sample_images()[0]).convert("RGB").resize((90, 70)))
    data = encode_image(photo, coder, tokens=5).data
    png, f = decode_to_png(data, coder)
    array, _ = decode_file(data, coder)
    assert (f.width, f.height) == (90, 70)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), array)


# -- 1. mutated .vtok files of every coding method --------------------------------------------------------


@QUICK
@given(
    method=st.sampled_from(sorted(CODINGS)),
    which=st.integers(0, 2),
    flips=st.lists(st.tuples(st.integers(10, 400), st.integers(0, 255)), max_size=3),
    cut=st.integers(0, 400),
    size=st.one_of(st.none(), st.tuples(st.integers(0, 1 << 21), st.integers(0, 1 << 21), st.integers(0, 20))),
    reseal=st.booleans(),
)
@example(method=1, which=0, flips=[], cut=400, size=None, reseal=True)
def test_a_mutated_file_of_any_coding_decodes_or_raises_a_vtok_error(
    coder, token_lm, seeds, method, which, flips, cut, size, reseal
):
    data = bytearray(seeds[CODINGS[method].name][which])
    if size is not None:  # field-aware: a new declared size, the rest of the file unchanged
        start = 14 if CODINGS[method].has_id else 10
        tail = data[start:]
        for _ in range(3):  # skip the old width, height and overlap varints
            while tail[0] & 0x80:
                tail = tail[1:]
            tail = tail[1:]
        data = bytearray(data[:start] + _varint(size[0]) + _varint(size[1]) + _varint(size[2]) + tail)
    for pos, value in flips:
        data[pos % len(data)] = value
    blob = bytes(data[: max(1, cut)] if cut < len(data) else data)
    blob = _reseal(blob) if reseal else blob
    start = time.perf_counter()
    try:
        array, f = decode_file(blob, coder, token_lm)
    except vtok.VtokError as e:
        assert "\n" not in str(e)
    else:
        assert array.shape == (f.height, f.width, 3)
    assert time.perf_counter() - start < 5.0


# -- 2. images whose header claims more than the file holds -----------------------------------------------


def _encoded(fmt: str, size=(64, 48)) -> bytes:
    b = io.BytesIO()
    im = Image.open(sample_images()[1]).convert("RGB").resize(size)
    (im.convert("P") if fmt == "GIF" else im).save(b, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return b.getvalue()


def _patch_size(fmt: str, data: bytes, w: int, h: int) -> bytes:
    b = bytearray(data)
    if fmt == "JPEG":
        i = b.index(b"\xff\xc0")
        b[i + 5 : i + 9] = struct.pack(">HH", h, w)
    elif fmt == "GIF":
        b[6:10] = struct.pack("<HH", w, h)
    elif fmt == "PNG":
        b[16:24] = struct.pack(">II", w, h)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    elif fmt == "WEBP":  # lossless: 14-bit sides minus one after the 0x2f signature
        i = b.index(b"VP8L") + 8
        bits = int.from_bytes(b[i + 1 : i + 5], "little") & ~((1 << 28) - 1)
        b[i + 1 : i + 5] = (bits | (w - 1) | ((h - 1) << 14)).to_bytes(4, "little")
    return bytes(b)


@QUICK
@given(
    fmt=st.sampled_from(["JPEG", "GIF", "PNG", "WEBP"]),
    w=st.integers(1, 16383),
    h=st.integers(1, 16383),
    cut=st.one_of(st.none(), st.integers(1, 2000)),
)
@example(fmt="GIF", w=10000, h=10000, cut=None)
@example(fmt="WEBP", w=16383, h=6100, cut=None)
@example(fmt="JPEG", w=10000, h=10000, cut=None)
@example(fmt="JPEG", w=1000, h=1000, cut=None)
def test_an_image_whose_header_lies_is_an_image_error_at_once(tmp_path_factory, fmt, w, h, cut):
    """A real image's header patched to another size, perhaps cut: it loads at the size it
    declares, or it is an ImageError; bombs (over 1 MP and 1024 pixels per byte) before decoding."""
    data = _patch_size(fmt, _encoded("WEBP" if fmt == "WEBP" else fmt), w, h)
    data = data[:cut] if cut is not None else data
    path = tmp_path_factory.mktemp("img") / f"x.{fmt.lower()}"
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        im = load_image(path)
    except vtok.ImageError as e:
        assert "\n" not in str(e)
    else:
        pixels = im.width * im.height  # a GIF's size also covers its frame, whatever the screen says
        assert pixels <= max(w, 64) * max(h, 48) and (pixels <= 1 << 20 or pixels <= MAX_PIXELS_PER_BYTE * len(data))
    if cut is None and 1 << 20 < w * h <= images.MAX_PIXELS and w * h > MAX_PIXELS_PER_BYTE * len(data):
        with pytest.raises(vtok.ImageError, match="pixels per byte"):  # from the header, nothing decoded
            image_size(path)
    assert time.perf_counter() - start < 5.0


def test_the_issue_image_bombs_are_refused_from_the_header(tmp_path, monkeypatch):
    gif = _patch_size("GIF", _encoded("GIF", (1, 1)), 10000, 10000)
    jpeg = _patch_size("JPEG", _encoded("JPEG"), 10000, 10000)
    small_jpeg = _patch_size("JPEG", _encoded("JPEG"), 1000, 1000)  # 1 MP: the JPEG floor, not the ratio
    screen = bytearray(_encoded("GIF", (200, 200)))
    screen[6:10] = struct.pack("<HH", 5000, 5000)  # a 200x200 frame on a 5000x5000 screen, in 20 kB
    screen += b"\x00" * 30000  # padded so that the ratio alone would not catch it
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("pixels were decoded"))
    for name, data, match in [
        ("gif", gif, "pixels per byte"),
        ("jpeg", jpeg, "pixels per byte"),
        ("small.jpeg", small_jpeg, "needs at least 3906 bytes"),
        ("screen.gif", bytes(screen), "first frame is 200x200"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(vtok.ImageError, match=match):
            load_image(tmp_path / name)


@pytest.mark.slow
def test_real_photos_never_trip_the_header_checks(tmp_path):
    """vtok's sample photos and scikit-image's, as JPEG (baseline, progressive, quality 5), PNG,
    GIF and WebP, full size and as large 2x upscales."""
    for i, im in enumerate(_real_photos()):
        for scale in (1, 2):
            big = im.resize((im.width * scale, im.height * scale)) if scale > 1 else im
            for fmt, kwargs in [
                ("JPEG", {}),
                ("JPEG", {"progressive": True, "quality": 5}),
                ("PNG", {}),
                ("GIF", {}),
                ("WEBP", {"quality": 5}),
            ]:
                path = tmp_path / f"{i}_{scale}.{fmt.lower()}"
                big.save(path, fmt, **kwargs)
                assert image_size(path) == big.size, (path, path.stat().st_size)


def test_a_header_claiming_more_than_the_limit_names_it(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(path)
    with pytest.raises(vtok.ImageError, match="over the limit of 1,000,000 pixels: raise it with --max-pixels"):
        image_size(path, max_pixels=1_000_000)
    assert images.image_size(path, max_pixels=10_000_000) == (3000, 3000)


# -- 3. tampered weights ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return vtok.create_tokenizer("ordered1d-tiny").save_pretrained(tmp_path_factory.mktemp("w") / "model")


@QUICK
@given(
    key=st.integers(0, 10**6),
    shape=st.lists(st.integers(0, 10**6), max_size=4),
    dtype=st.sampled_from(["F32", "F16", "I64", "BOOL", "X"]),
    drop=st.booleans(),
)
def test_a_weights_header_that_does_not_fit_the_config_is_refused_unread(
    weights_dir, tmp_path_factory, key, shape, dtype, drop
):
    """Shapes (even of terabytes) in model.safetensors' header are checked against the model the
    config builds before any data is read."""
    import json

    folder = tmp_path_factory.mktemp("t") / "m"
    shutil.copytree(weights_dir, folder)
    raw = (folder / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    names = sorted(k for k in header if k != "__metadata__")
    name = names[key % len(names)]
    if drop:
        del header[name]
    else:
        header[name] = {**header[name], "shape": shape, "dtype": dtype}
    body = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n :])
    with pytest.MonkeyPatch.context() as m:
        m.setattr("safetensors.torch.load_file", lambda *a, **k: pytest.fail("the data was read"))
        if not drop and tuple(shape) == tuple(json.loads(raw[8 : 8 + n])[name]["shape"]):
            return  # the same shape: not this test's case
        with pytest.raises(vtok.ModelLoadError) as info:
            vtok.load(folder)
    assert "\n" not in str(info.value)


def test_a_weights_header_of_absurd_length_is_refused(weights_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(weights_dir, folder)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    with pytest.raises(vtok.ModelLoadError, match="header"):
        vtok.load(folder)


def test_a_prior_of_the_wrong_shape_is_refused_unread(weights_dir, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    shutil.copytree(weights_dir, folder)
    save_file({"probs_0": torch.full((3, 2), 0.5, dtype=torch.float64)}, str(folder / "prior.safetensors"))
    monkeypatch.setattr("safetensors.numpy.load_file", lambda *a, **k: pytest.fail("the data was read"))
    with pytest.raises(vtok.ModelLoadError, match="prior does not match"):
        vtok.load(folder)
    assert load_file  # the torch loader is what model.safetensors uses


# -- 4. file-system faults, any errno, every writing command ----------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    code=st.sampled_from(
        [errno.EACCES, errno.ENOSPC, errno.EROFS, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.ENOTDIR]
    ),
    command=st.sampled_from(["encode", "decode"]),
)
def test_any_write_error_is_one_line_naming_the_output(coder, weights_dir, tmp_path_factory, capsys, code, command):
    from vtok import files

    root = tmp_path_factory.mktemp("fs")
    folder = coder.save_pretrained(root / "model")
    image = root / "in.png"
    Image.open(sample_images()[1]).convert("RGB").resize((40, 40)).save(image)
    source = root / "in.vtok"
    source.write_bytes(encode_image(image, coder, tokens=2).data)
    target = root / "out" / ("x.vtok" if command == "encode" else "x.png")

    def fail(self, *args, **kwargs):
        raise OSError(code, os.strerror(code))

    argv = (
        ["encode", image, "-o", target, "--model", folder, "--tokens", "2"]
        if command == "encode"
        else ["decode", source, "-o", target, "--model", folder]
    )
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Path, "write_bytes", fail)
        capsys.readouterr()
        rc, _, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0] == f"vtok: error: {target}: {os.strerror(code)}"
    assert not target.exists() and not [p for p in target.parent.glob(".*.tmp")]
    assert files  # the module every write goes through


@pytest.mark.parametrize("shape", [(600, 41), (300, 5), (120, 90)])
def test_measuring_in_stripes_equals_measuring_whole(shape):
    """encode_image's PSNR/SSIM of a large image, stripe by stripe, against the metrics on it whole."""
    from vtok.codec.compress import _measure, _to_tensor
    from vtok.metrics.pixel import psnr, ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    p, s = _measure(a, b)
    assert p == pytest.approx(float(psnr(_to_tensor(a), _to_tensor(b))), abs=1e-4)
    assert s == pytest.approx(float(ssim(_to_tensor(a), _to_tensor(b))), abs=1e-5)


def test_levelling_spreads_a_step_between_tiles_and_keeps_what_they_agree_on():
    """Two flat tiles of different grey (what adaptive lengths give a smooth sky): blended over the
    overlap alone the step is a steep ramp; levelled, it is spread over half a tile each side. Two
    tiles that agree in the overlap (texture, no offset) are left exactly as they were."""
    layout = TileLayout(56, 32, 32, 8)  # two tiles side by side
    flat = torch.stack([torch.full((3, 32, 32), 0.3), torch.full((3, 32, 32), 0.5)])
    plain = blend_tiles(flat, layout, level=False)
    assert np.array_equal(plain, _blend_whole(flat, layout))
    steep = np.abs(np.diff(plain[..., 0].astype(int), axis=1)).max()
    levelled = blend_tiles(flat, layout)
    gentle = np.abs(np.diff(levelled[..., 0].astype(int), axis=1)).max()
    assert steep >= 6 and gentle <= steep / 2, (steep, gentle)
    row = levelled[0, :, 0].astype(int)
    assert abs(row[0] - 0.3 * 255) <= 1 and abs(row[-1] - 0.5 * 255) <= 1  # beyond half a tile: untouched
    assert abs(row[28] - 0.4 * 255) <= 2 and 0.3 * 255 + 5 < row[20] < row[36] < 0.5 * 255 - 5  # a long ramp
    texture = torch.rand(3, 32, 56, generator=torch.Generator().manual_seed(0))
    agree = torch.stack([texture[:, :, :32], texture[:, :, 24:]])  # the same pixels in the overlap
    assert np.array_equal(blend_tiles(agree, layout), _blend_whole(agree, layout))
    tall = TileLayout(32, 56, 32, 8)  # the same two tiles one above the other: levelled between rows
    assert np.array_equal(blend_tiles(flat, tall), levelled.transpose(1, 0, 2))
    assert np.array_equal(blend_tiles(flat, tall, level=False), plain.transpose(1, 0, 2))


def test_a_tile_row_of_the_wrong_length_is_refused_not_stretched():
    """Levelling pairs each tile with its neighbours; a row short of tiles must not broadcast."""
    layout = TileLayout(80, 80, 32, 8)  # 3 x 3 tiles
    tiles = torch.rand(9, 3, 32, 32)
    rows = [[tiles[:1]], [tiles[3:6]], [tiles[6:9]]]
    with pytest.raises(ValueError, match="1 tiles, the strip 3"):
        list(blend_bands(rows, layout))
