import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image

from vtok.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_subprocess(*args, cwd=None):
    """`python -m vtok ...` in a child process: kept for what only a real process shows (the entry
    point); everything else runs in-process (conftest.run_cli), without starting torch again."""
    return subprocess.run(
        [sys.executable, "-m", "vtok", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "ordered1d-tiny" in out and "grid2d-tiny" in out
    lms = out.split("pretrained token LMs")[1]
    assert "default" in lms and "lm-tiny" in out  # the shipped LM and the LM architectures are listed too


def test_demo_on_a_model_folder_and_given_images(tiny_model_dir, photo_dirs, tmp_path, capsys):
    images = sorted(photo_dirs[1].glob("*"))[:2]
    out = tmp_path / "sheet.png"
    assert main(["demo", *map(str, images), "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and str(out) in text
    sheet = Image.open(out)
    assert sheet.width > 4 * 128 and sheet.height > 2 * 128  # original + 4 prefix lengths, 2 rows
    searched = tmp_path / "searched.png"
    argv = ["demo", *map(str, images), "--model", str(tiny_model_dir), "--out", str(searched), "--effort", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "effort" in text.splitlines()[0] and len(text.splitlines()) == 1 + 2 * 2 * 4 + 1  # 2 images x 2 rows x 4 k
    assert Image.open(searched).height > 1.8 * sheet.height  # each image's searched row beside its own


def test_eval_prints_table_and_writes_json(tiny_model_dir, photo_dirs, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(tiny_model_dir), str(photo_dirs[1]), "--json", str(out)]) == 0
    assert "SSIM" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["k"] for r in data["rows"]] == [1, 2, 4, 8]
    assert data["num_images"] == 6
    assert 0 < data["codebook_usage"] <= 1


@pytest.mark.slow
def test_train_from_the_command_line(photo_dirs, tmp_path):
    out = tmp_path / "run"
    result = run_subprocess(
        "train", REPO / "configs" / "tiny.yaml", f"data.train_dir={photo_dirs[0]}", f"out_dir={out}", "optim.steps=6"
    )
    assert result.returncode == 0, result.stderr
    assert (out / "model" / "model.safetensors").is_file() and (out / "config.yaml").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["demo", "/no/such/image.jpg"], "no such file"),
        (["demo", "--model", "/no/such/model"], "neither a model folder"),
        (["eval", "/no/such/model", "."], "neither a model folder"),
        (["train", "/no/such/config.yaml"], "no such config file"),
        (["train", str(REPO / "configs" / "tiny.yaml"), "optim.nope=1"], "unknown config key"),
    ],
)
def test_user_mistakes_are_one_line_errors(args, message, capsys):
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vtok: error:") and message in lines[0]


def test_eval_on_an_empty_folder_and_a_folder_of_junk(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(["eval", tiny_model_dir, tmp_path], capsys)
    assert code == 2 and "no image files" in err
    (tmp_path / "a.jpg").write_bytes(b"junk")
    code, _, err = run_cli(["eval", tiny_model_dir, tmp_path], capsys)
    assert code == 2 and "could be read" in err and "Traceback" not in err


def test_demo_on_a_non_image_file(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    code, _, err = run_cli(["demo", bad, "--model", tiny_model_dir, "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and "not a readable image" in err


@pytest.mark.parametrize("command", ["train", "lm-train"])
def test_overrides_are_accepted_on_either_side_of_resume(command):
    from vtok.cli import parse_args

    args = parse_args([command, "runs/x", "optim.lr=0.1", "--resume", "threads=4", "log_every=2"])
    assert args.resume and args.overrides == ["optim.lr=0.1", "threads=4", "log_every=2"]
    with pytest.raises(SystemExit):
        parse_args([command, "runs/x", "--resume", "--no-such-flag"])
    with pytest.raises(SystemExit):
        parse_args(["encode", "a.png", "-o", "b", "threads=4"])  # only train commands take overrides


def test_encode_to_a_file_name_of_another_kind_is_refused_not_made_a_folder(tmp_path, capsys):
    from vtok.demo import sample_images

    code, out, err = run_cli(["encode", sample_images()[0], "-o", tmp_path / "x.png", "--tokens", "1"], capsys)
    assert code == 2 and "x.png" in err and ".vtok" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_a_skipped_file_is_named_once_and_a_first_prior_needs_no_note(tiny_model_dir, photo_dirs, tmp_path, capsys):
    from vtok.demo import sample_images

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(sample_images()[0].read_bytes())
    (folder / "bad.jpg").write_bytes(b"not a jpeg at all")
    code, out, err = run_cli(
        ["encode", folder, "-o", tmp_path / "out", "--model", tiny_model_dir, "--tokens", "1"], capsys
    )
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert code == 2 and len(skipped) == 1 and skipped[0].count("bad.jpg") == 1
    code, out, err = run_cli(["prior", tiny_model_dir, photo_dirs[1], "--crops", "1", "--out", tmp_path / "m"], capsys)
    assert code == 0 and "previous prior" not in out  # the tiny model had none
    code, out, err = run_cli(["prior", tmp_path / "m", photo_dirs[1], "--crops", "1", "--out", tmp_path / "m2"], capsys)
    assert code == 0 and "previous prior" in out
