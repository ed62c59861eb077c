import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

import vtok
from vtok.codec import decode_file, encode_image, fit_prior
from vtok.codec.tiling import TileLayout, split_tiles
from vtok.demo import sample_images


def _cli(argv, capsys):
    return run_cli(argv, capsys)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vtok: error:"), stderr
    return lines[0]


def _photo(size: tuple[int, int], index: int = 1) -> np.ndarray:
    return np.asarray(Image.open(sample_images()[index]).convert("RGB").resize(size, Image.Resampling.LANCZOS))


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """Three small real photos, to fit priors on."""
    folder = tmp_path_factory.mktemp("prior_photos")
    for i in range(3):
        Image.fromarray(_photo((48, 48), i)).save(folder / f"{i}.png")
    return folder


def test_refitting_the_prior_keeps_bitpacked_files_and_names_the_prior_for_ans(
    tiny, photo_dirs, small_folder, tmp_path
):
    photo = _photo((64, 48))
    fit_prior(tiny, photo_dirs[0], crops_per_image=2)
    folder = tiny.save_pretrained(tmp_path / "model")
    before = vtok.load(folder)
    packed = encode_image(photo, before, coding="bitpack", tokens=5).data
    ans = encode_image(photo, before, coding="ans", tokens=5).data
    expected, _ = decode_file(packed, before)

    refit = vtok.load(folder)
    fit_prior(refit, small_folder, crops_per_image=2)
    refit.save_pretrained(folder)
    after = vtok.load(folder)  # a fresh load of the folder with its new prior.safetensors

    array, _ = decode_file(packed, after)
    assert np.array_equal(array, expected)
    assert np.array_equal(np.asarray(vtok.decompress(packed, after)), expected)
    with pytest.raises(vtok.FormatError, match="prior") as info:
        decode_file(ans, after)
    assert after.prior.id() != before.prior.id()
    assert before.prior.id().hex() in str(info.value)
    assert np.array_equal(decode_file(ans, before)[0], expected)  # the old prior still decodes its file


def test_prior_refuses_to_overwrite_a_shipped_model_in_place(small_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, _, stderr = _cli(["prior", "default", small_folder, "--crops", "1"], capsys)
    assert rc == 2
    assert "--out" in _one_error_line(stderr)
    assert not (tmp_path / "default").exists() and _files(tmp_path) == []


def test_prior_with_out_writes_a_new_model_folder(tiny_model_dir, small_folder, tmp_path, capsys):
    out = tmp_path / "with_prior"
    rc, stdout, stderr = _cli(["prior", tiny_model_dir, small_folder, "--crops", "1", "--out", out], capsys)
    assert rc == 0, stderr
    tok = vtok.load(out)
    assert tok.prior is not None and tok.prior.id().hex() in stdout
    assert not (tiny_model_dir / "prior.safetensors").exists()


def test_encoding_folders_mirrors_their_tree(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    for sub, index in (("a", 0), ("b", 1)):
        (src / sub).mkdir(parents=True)
        Image.fromarray(_photo((40, 40), index)).save(src / sub / "x.png")
    out = tmp_path / "out"
    rc, stdout, stderr = _cli(["encode", src, "-o", out, "--model", tiny_model_dir, "--tokens", "3"], capsys)
    assert rc == 0, stderr
    assert _files(out) == [Path(p) for p in ("a", "a/x.vtok", "b", "b/x.vtok")]
    a, b = (out / "a" / "x.vtok").read_bytes(), (out / "b" / "x.vtok").read_bytes()
    assert a != b
    tok = vtok.load(tiny_model_dir)
    assert np.array_equal(np.asarray(vtok.decompress(a, tok)).shape, (40, 40, 3))

    pngs = tmp_path / "pngs"
    rc, _, stderr = _cli(["decode", out, "-o", pngs, "--model", tiny_model_dir], capsys)
    assert rc == 0, stderr
    assert (pngs / "a" / "x.png").is_file() and (pngs / "b" / "x.png").is_file()


def test_a_folder_into_one_vtok_file_is_refused_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(_photo((40, 40), i)).save(src / f"{i}.png")
    before = _files(tmp_path)
    rc, _, stderr = _cli(["encode", src, "-o", tmp_path / "single.vtok", "--model", tiny_model_dir], capsys)
    assert rc == 2
    assert "single.vtok" in _one_error_line(stderr)
    assert _files(tmp_path) == before
    # A folder holding a single image is a folder too.
    (src / "1.png").unlink()
    rc, _, stderr = _cli(["encode", src, "-o", tmp_path / "single.vtok", "--model", tiny_model_dir], capsys)
    assert rc == 2 and not (tmp_path / "single.vtok").exists()


def test_decode_without_model_finds_the_shipped_model(tmp_path, capsys):
    photo = _photo((150, 100))
    path = tmp_path / "photo.vtok"
    path.write_bytes(vtok.compress(photo, "default", tokens=4))
    out = tmp_path / "out.png"
    rc, stdout, stderr = _cli(["decode", path, "-o", out], capsys)
    assert rc == 0, stderr
    decoded = Image.open(out)
    assert decoded.size == (150, 100)
    assert np.array_equal(np.asarray(decoded), np.asarray(vtok.decompress(path)))
    assert "150x100" in stdout


def test_a_file_from_an_unknown_model_asks_for_its_folder(tiny, tmp_path, capsys):
    path = tmp_path / "photo.vtok"
    path.write_bytes(encode_image(_photo((32, 32)), tiny, coding="bitpack").data)
    with pytest.raises(vtok.FormatError, match="does not ship"):
        vtok.read_tokens(path)
    rc, _, stderr = _cli(["decode", path, "-o", tmp_path / "out.png"], capsys)
    assert rc == 2 and "--model" in _one_error_line(stderr)


def test_read_tokens_of_one_tile_equals_encode():
    tok = vtok.load("default")
    image = _photo((128, 128))
    expected = tok.encode(image)
    for k in (1, 5, tok.num_tokens):
        tokens = vtok.read_tokens(vtok.compress(image, "default", tokens=k))
        assert (tokens.columns, tokens.rows) == (1, 1) and tokens.counts.tolist() == [k]
        assert len(tokens.tokens) == 1 and tokens.tokens[0].dtype == np.int64
        assert torch.equal(torch.from_numpy(tokens.tokens[0])[None], expected[:, :k])
        assert (tokens.width, tokens.height, tokens.tile) == (128, 128, 128)


@pytest.mark.parametrize("coding", ["bitpack", "ans"])
def test_read_tokens_of_many_tiles_equals_encode_of_the_tiles(tiny, photo_dirs, tmp_path, coding):
    if coding == "ans":
        fit_prior(tiny, photo_dirs[0], crops_per_image=1)
    image = _photo((90, 50))
    enc = encode_image(image, tiny, coding=coding, tokens=6, overlap=4)
    path = tmp_path / "photo.vtok"
    path.write_bytes(enc.data)
    tokens = vtok.read_tokens(path, tiny)
    layout = TileLayout(90, 50, tiny.image_size, 4)
    assert (tokens.columns, tokens.rows) == (layout.nx, layout.ny)
    assert tokens.columns > 1 and tokens.rows > 1 and len(tokens.tokens) == tokens.columns * tokens.rows
    assert (tokens.width, tokens.height, tokens.overlap, tokens.coding) == (90, 50, 4, coding)
    expected = tiny.encode(split_tiles(image, layout))[:, :6]
    assert torch.equal(torch.from_numpy(np.stack(tokens.tokens)), expected)


@pytest.fixture(scope="module")
def uneven_file(tmp_path_factory):
    """A file of the shipped model whose tiles keep different numbers of tokens (flat grey needs
    fewer than a photo)."""
    image = np.concatenate([np.full((128, 128, 3), 128, np.uint8), _photo((128, 128))], axis=1)
    enc = encode_image(image, "default", psnr=18.0)
    assert len(set(enc.counts.tolist())) > 1, f"tile counts {enc.counts} are all equal; pick another target"
    path = tmp_path_factory.mktemp("uneven") / "uneven.vtok"
    path.write_bytes(enc.data)
    return path


def test_decode_tokens_only_json(uneven_file, tmp_path, capsys):
    out = tmp_path / "tokens.json"
    rc, stdout, stderr = _cli(["decode", uneven_file, "-o", out, "--tokens-only"], capsys)
    assert rc == 0, stderr
    data = json.loads(out.read_text())
    assert {"width", "height", "tile", "overlap", "columns", "rows", "model", "coding", "counts", "tokens"} <= set(data)
    expected = vtok.read_tokens(uneven_file)
    assert (data["width"], data["height"], data["columns"], data["rows"]) == (256, 128, expected.columns, 1)
    assert data["counts"] == expected.counts.tolist()
    assert [len(row) for row in data["tokens"]] == data["counts"]
    assert data["tokens"] == [row.tolist() for row in expected.tokens]
    assert all(isinstance(t, int) for row in data["tokens"] for t in row)
    assert str(out) in stdout and f"{sum(data['counts'])} tokens" in stdout


def test_decode_tokens_only_npy(uneven_file, tmp_path, capsys):
    out = tmp_path / "tokens.npy"
    rc, _, stderr = _cli(["decode", uneven_file, "-o", out, "--tokens-only", "npy"], capsys)
    assert rc == 0, stderr
    array = np.load(io.BytesIO(out.read_bytes()), allow_pickle=False)
    expected = vtok.read_tokens(uneven_file)
    assert array.dtype == np.int64 and array.shape == (len(expected.tokens), int(expected.counts.max()))
    for row, tokens, count in zip(array, expected.tokens, expected.counts):
        assert row[:count].tolist() == tokens.tolist()
        assert (row[count:] == -1).all()
    assert (array == -1).any() and (array[:, 0] >= 0).all()


def test_decode_tokens_only_of_a_folder_writes_one_file_each(uneven_file, tmp_path, capsys):
    out = tmp_path / "tokens"
    rc, _, stderr = _cli(["decode", uneven_file.parent, "-o", out, "--tokens-only", "npy"], capsys)
    assert rc == 0, stderr
    assert _files(out) == [Path("uneven.npy")]


def test_encode_reports_bytes_tokens_and_the_quality_reached(tmp_path, capsys):
    source = tmp_path / "photo.png"
    Image.fromarray(_photo((128, 128))).save(source)
    out = tmp_path / "photo.vtok"
    rc, stdout, stderr = _cli(["encode", source, "-o", out, "--tokens", "8"], capsys)
    assert rc == 0, stderr
    line = stdout.strip().splitlines()[-1]
    size = out.stat().st_size
    assert f"{size} bytes" in line and "8 tokens" in line and "PSNR" in line and "SSIM" in line
    enc = encode_image(source, "default", tokens=8)
    assert f"PSNR {enc.psnr:.2f} dB" in line and f"SSIM {enc.ssim:.3f}" in line
    decoded = vtok.decompress(out)
    reference = torch.from_numpy(_photo((128, 128))).permute(2, 0, 1)[None].float() / 255
    recon = torch.from_numpy(np.asarray(decoded)).permute(2, 0, 1)[None].float() / 255
    assert abs(float(vtok.metrics.psnr(recon, reference)) - enc.psnr) < 0.05


def test_resolution_is_a_coding_choice(tiny_model_dir):
    """scale codes a smaller (or larger) copy and the file keeps the size to show; "auto" picks the
    size that decodes closest to the original within a byte budget, never worse than full size."""
    import vtok.codec
    from vtok.codec.format import read_file
    from vtok.errors import ConfigError

    tok = vtok.load(tiny_model_dir)
    image = _photo((140, 90))  # 140 wide, 90 high
    half = vtok.codec.encode_image(image, tok, tokens=4, scale=0.5)
    full = vtok.codec.encode_image(image, tok, tokens=4, scale=1.0)
    f = read_file(half.data, tok.image_size, tok.num_tokens)
    assert f.display == (140, 90) and (f.width, f.height) == (70, 45) and half.coded_size == (70, 45)
    assert len(half.data) < len(full.data) and half.tiles < full.tiles
    assert vtok.decompress(half.data, tok).size == (140, 90)
    budget = len(full.data)
    auto = vtok.codec.encode_image(image, tok, max_bytes=budget)
    at_full = vtok.codec.encode_image(image, tok, max_bytes=budget, scale=1.0)
    assert len(auto.data) <= budget and auto.psnr >= at_full.psnr - 1e-9
    assert np.asarray(vtok.decompress(auto.data, tok)).shape == (90, 140, 3)
    double = vtok.codec.encode_image(image, tok, tokens=2, scale=2)  # larger than the image works too
    assert double.coded_size == (280, 180) and vtok.decompress(double.data, tok).size == (140, 90)
    for bad in (0, -1, 0.05, 5, "big", True):
        with pytest.raises(ConfigError):
            vtok.codec.encode_image(image, tok, tokens=2, scale=bad)
    with pytest.raises(ConfigError, match="max_bytes"):
        vtok.codec.encode_image(image, tok, tokens=2, scale="auto")


def test_a_display_size_over_the_limit_is_refused_before_decoding(tiny_model_dir):
    import vtok.codec
    from vtok.codec.format import read_file, write_file

    tok = vtok.load(tiny_model_dir)
    data = vtok.codec.encode_image(_photo((90, 140)), tok, tokens=2, scale=0.5).data
    f = read_file(data, tok.image_size, tok.num_tokens)
    f.display = (16 * f.width, 16 * f.height)  # the largest display a coded size may ask for
    assert vtok.decompress(write_file(f, tile=tok.image_size), tok).size == f.display
    with pytest.raises(vtok.LimitError, match="shown at"):
        vtok.decompress(write_file(f, tile=tok.image_size), tok, max_pixels=f.display[0] * f.display[1] - 1)
    f.display = (16 * f.width + 1, f.height)
    with pytest.raises(vtok.FormatError, match="more than 16x"):
        vtok.decompress(write_file(f, tile=tok.image_size), tok)


def test_encoder_side_search_makes_better_tokens_that_decode_as_any_other(tiny_model_dir):
    """effort > 0 searches each tile's latents through the decoder: at a fixed length the file is
    closer to the image (never worse: a tile keeps the encoder's tokens when they score better),
    deterministic, and an ordinary file."""
    import vtok.codec
    from vtok.codec.search import EFFORT_LEVELS, search_tokens
    from vtok.errors import ConfigError

    tok = vtok.load(tiny_model_dir)
    image = _photo((64, 48))
    plain = vtok.codec.encode_image(image, tok, tokens=4, coding="bitpack")
    searched = vtok.codec.encode_image(image, tok, tokens=4, coding="bitpack", effort=2)
    assert searched.psnr > plain.psnr
    assert searched.data == vtok.codec.encode_image(image, tok, tokens=4, coding="bitpack", effort=2).data
    full = tok.num_tokens  # all K tokens are searched too, and a byte budget's length
    assert (
        vtok.codec.encode_image(image, tok, tokens=full, effort=1).psnr
        > vtok.codec.encode_image(image, tok, tokens=full).psnr
    )
    budget = len(vtok.codec.encode_image(image, tok, tokens=full, coding="bitpack").data)
    at_budget = vtok.codec.encode_image(image, tok, max_bytes=budget, coding="bitpack", scale=1.0, effort=1)
    assert len(at_budget.data) <= budget
    assert at_budget.psnr > vtok.codec.encode_image(image, tok, max_bytes=budget, coding="bitpack", scale=1.0).psnr
    assert np.asarray(vtok.decompress(searched.data, tok)).shape == (48, 64, 3)
    tiles = torch.rand(3, 3, tok.image_size, tok.image_size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(search_tokens(tok, tiles, 0), tok.encode(tiles))
    every = search_tokens(tok, tiles, 1)  # no length given: every prefix is kept good
    assert every.shape == (3, tok.num_tokens) and set(EFFORT_LEVELS) == {0, 1, 2, 3}
    for bad in (-1, 4, 1.5, "2", True):
        with pytest.raises(ConfigError, match="effort"):
            vtok.codec.encode_image(image, tok, tokens=4, effort=bad)


def test_a_searched_file_spends_the_bytes_its_search_saved():
    """At a byte budget the search's tokens cost fewer bytes than the encoder's (the rate term):
    the room left buys more tokens, never a file over the budget."""
    import vtok.codec
    from vtok.demo import sample_images

    tok = vtok.load("default")
    image = Image.open(sample_images()[0]).convert("RGB").resize((128, 128))
    plain = vtok.codec.encode_image(image, tok, max_bytes=100, scale=1.0)
    searched = vtok.codec.encode_image(image, tok, max_bytes=100, scale=1.0, effort=1)
    assert len(plain.data) <= 100 and len(searched.data) <= 100
    assert searched.counts[0] > plain.counts[0] and searched.psnr > plain.psnr + 0.3
    decoded, f = vtok.codec.decode_file(searched.data, tok)
    assert f.counts[0] == searched.counts[0]  # the file holds the tokens that were measured
    diff = decoded.astype(np.float64) - np.array(image, dtype=np.float64)
    assert 10 * np.log10(255.0**2 / np.mean(diff**2)) == pytest.approx(searched.psnr, abs=0.01)


def test_the_search_counts_bits_under_the_coder_the_file_uses(monkeypatch):
    """Files coded under a token LM are searched for the LM's bits: the rate term's exact bits are
    the LM's own negative log-likelihood of the kept tokens (digit for digit, the quantizer's digit
    order), the search is handed the LM, and the searched LM-coded file is smaller and closer to
    the image than the plain one, and decodes to what was measured."""
    import importlib
    import math

    import vtok.codec
    import vtok.lm as vlm
    from vtok.codec.search import _lm_bit_tables, _soft_bits
    from vtok.demo import sample_images
    from vtok.metrics.pixel import psnr

    tok, lm = vtok.load("default"), vlm.load("default").eval()
    image = Image.open(sample_images()[1]).convert("RGB").resize((128, 128))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    q = tok.model.quantizer
    with torch.no_grad():
        z = tok.model.encode_latents(x)
        ids = q.quantize(z).indices
        tables = _lm_bit_tables(tok.model, lm, z)
        for k in (64, 16):  # positions past a tile's length cost nothing
            kept = (torch.arange(64) < k).float()[None]
            bits = _soft_bits(torch.round(q.bound(z)), tables, q.half_width, kept)
            assert float(bits) == pytest.approx(float(lm.nll(ids)[:, :k].sum()) / math.log(2), rel=1e-4)
    handed = []
    compress = importlib.import_module("vtok.codec.compress")  # the module, not vtok.codec.compress()
    real_search = compress.search_tokens
    monkeypatch.setattr(compress, "search_tokens", lambda *a, **kw: handed.append(kw["lm"]) or real_search(*a, **kw))
    plain = vtok.codec.encode_image(image, tok, tokens=64, lm=lm)
    searched = vtok.codec.encode_image(image, tok, tokens=64, lm=lm, effort=1)
    assert handed and all(h is lm for h in handed)
    assert len(searched.data) < len(plain.data) and searched.psnr > plain.psnr
    decoded = torch.from_numpy(np.array(vtok.decompress(searched.data, tok, lm=lm))).permute(2, 0, 1)[None] / 255
    reference = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None] / 255
    assert float(psnr(decoded, reference)) == pytest.approx(searched.psnr, abs=0.01)
    assert not lm.training


def test_cli_encode_with_effort_and_scale(tiny_model_dir, tmp_path, capsys):
    from conftest import run_cli

    Image.fromarray(_photo((96, 64))).save(tmp_path / "a.png")
    code, out, err = run_cli(["encode", tmp_path / "a.png", "-o", tmp_path / "a.vtok", "--model", tiny_model_dir,
                              "--tokens", "3", "--effort", "1", "--scale", "0.5"], capsys)  # fmt: skip
    assert code == 0, err
    assert "coded at 48x32" in out
    code, out, err = run_cli(
        ["decode", tmp_path / "a.vtok", "-o", tmp_path / "a_out.png", "--model", tiny_model_dir], capsys
    )
    assert code == 0, err
    assert Image.open(tmp_path / "a_out.png").size == (96, 64)
    code, _, err = run_cli(["encode", tmp_path / "a.png", "-o", tmp_path / "b.vtok", "--model", tiny_model_dir,
                            "--effort", "7"], capsys)  # fmt: skip
    assert code == 2 and "effort" in err and len(err.strip().splitlines()) == 1
