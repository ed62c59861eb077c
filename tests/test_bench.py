import json

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.bench import available_codecs, run_bench, summarize, write_report
from vtok.bench.run import frechet_distance
from vtok.cli import main
from vtok.demo import sample_images
from vtok.metrics import ms_ssim, token_statistics


@pytest.fixture(scope="module")
def small_photo():
    return Image.open(sample_images()[1]).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)


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


def test_small_end_to_end_bench_writes_parsable_reports(tiny_model_dir, photo_dirs, tmp_path):
    result = run_bench([tiny_model_dir], photo_dirs[1], codecs=("jpeg", "webp"), limit=3, progress=False)
    ks = [1, 2, 4, 8]
    assert len(result.records) == 3 * len(ks)  # every image at every k: none dropped
    for rec in result.records:
        for codec in ("jpeg", "webp"):
            c = rec["codecs"][codec]
            assert c["at_budget"] is None or c["at_budget"]["bytes"] <= rec["file_bytes"]
            assert c["smallest_bytes"] > 0
    files = write_report(result, tmp_path / "report", folder=photo_dirs[1])
    data = json.loads(files["json"].read_text())
    assert data["summary"] == json.loads(json.dumps(summarize(result), default=float))
    assert "| 8 |" in files["markdown"].read_text()
    for key in ("quality_vs_bytes_png", "quality_vs_bytes_svg", "quality_vs_k_png", "tokens_png", "sheet_png", "html"):
        assert files[key].is_file() and files[key].stat().st_size > 0
    assert Image.open(files["sheet_png"]).width > 3 * 32


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
