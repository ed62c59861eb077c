"""Pre-tokenized shards: content, resuming after a kill, reading back; the lm-train and generate commands."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.errors import ConfigError, ImageError
from vtok.shards import ShardSettings, TokenShards, TokenShardStream, tokenize_images

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Two class folders of real-photo crops, one unreadable file, one image at the top."""
    root = tmp_path_factory.mktemp("labelled")
    assets = sorted((ROOT / "src" / "vtok" / "assets").glob("*.jpg"))
    rng = random.Random(0)
    for c, label in enumerate(["cats", "cups"]):
        (root / label).mkdir()
        with Image.open(assets[c + 1]) as im:
            im = im.convert("RGB")
            for i in range(5):
                side = int(min(im.size) * rng.uniform(0.5, 1.0))
                box = (rng.randint(0, im.width - side), rng.randint(0, im.height - side))
                im.crop((*box, box[0] + side, box[1] + side)).resize((96, 96)).save(root / label / f"{i}.png")
    (root / "cups" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("RGB", (80, 60), (200, 30, 30)).save(root / "top.png")
    return root


def test_rows_views_labels_and_metadata(labelled, tmp_path, tiny_model_dir):
    tok = vtok.load(tiny_model_dir)
    result = tokenize_images(labelled, tmp_path / "s", tok, ShardSettings(flip=True, crops=2, images_per_shard=3))
    assert result.images == 11 and result.rows == 11 * 4
    assert [u["path"] for u in result.unreadable] == ["cups/broken.jpg"]
    shards = TokenShards(tmp_path / "s")
    assert shards.tokens.shape == (44, tok.num_tokens) and shards.label_names == ["cats", "cups"]
    counts = Counter(zip(shards.keys, shards.views))
    assert set(counts.values()) == {1} and len({k for k, _ in counts}) == 11
    assert {v for _, v in counts} == {"original", "flip", "crop0", "crop1"}
    by_key = dict(zip(shards.keys, shards.labels))
    assert by_key["cats/0.png"] == 0 and by_key["cups/0.png"] == 1 and by_key["top.png"] == -1
    # the original view's tokens are exactly what the tokenizer gives the image
    i = next(j for j, (k, v) in enumerate(zip(shards.keys, shards.views)) if k == "cats/3.png" and v == "original")
    assert np.array_equal(shards.tokens[i], tok.encode(labelled / "cats" / "3.png")[0].numpy())
    assert shards.tokenizer_id == tok.weights_id().hex()
    streamed = sorted((tuple(t.tolist()), label) for t, label in TokenShardStream(tmp_path / "s", seed=1))
    assert streamed == sorted((tuple(t), int(label)) for t, label in zip(shards.tokens.tolist(), shards.labels))


def test_rerun_skips_and_other_settings_refused(labelled, tmp_path, tiny_model_dir):
    tok = vtok.load(tiny_model_dir)
    settings = ShardSettings(images_per_shard=4)
    first = tokenize_images(labelled, tmp_path / "s", tok, settings)
    assert first.shards_written == 3
    again = tokenize_images(labelled, tmp_path / "s", tok, settings)
    assert again.shards_written == 0 and again.rows == first.rows
    with pytest.raises(ConfigError, match="another run"):
        tokenize_images(labelled, tmp_path / "s", tok, ShardSettings(images_per_shard=4, flip=True))
    with pytest.raises(ImageError):
        tokenize_images(tmp_path / "nowhere", tmp_path / "t", tok)


def _tokenize_cmd(images: Path, out: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "vtok.cli", "tokenize", str(images), "--out", str(out), "--model", str(model),
            "--crops", "3", "--images-per-shard", "2", "--batch-size", "4"]  # fmt: skip


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_restart(labelled, tmp_path, tiny_model_dir):
    """Killed while shards are being written, then started again: every image exactly once."""
    images = tmp_path / "images"
    shutil.copytree(labelled, images)
    for i in range(12):  # more images, so that the kill lands mid-run
        shutil.copy(labelled / "cats" / f"{i % 5}.png", images / "cats" / f"extra{i}.png")
    out = tmp_path / "shards"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_tokenize_cmd(images, out, tiny_model_dir), env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("shard-*.parquet")):
        time.sleep(0.01)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list(out.glob("shard-*.parquet")))
    assert 1 <= written and not (out / "manifest.json").exists() or written == 12
    done = subprocess.run(_tokenize_cmd(images, out, tiny_model_dir), env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "skipped 1 unreadable" in done.stdout  # broken.jpg, counted and listed
    shards = TokenShards(out)
    counts = Counter(zip(shards.keys, shards.views))
    assert len({k for k, _ in counts}) == 23 and set(counts.values()) == {1} and len(shards) == 23 * 4
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.slow
def test_lm_train_then_generate_cli(labelled, tmp_path, tiny_model_dir, capsys):
    from conftest import run_cli

    assert run_cli(["tokenize", str(labelled), "--out", str(tmp_path / "s"), "--model", str(tiny_model_dir),
                    "--flip"], capsys)[0] == 1  # fmt: skip
    config = tmp_path / "lm.yaml"
    config.write_text(
        f"model: {{name: lm-tiny}}\ndata: {{train: {tmp_path / 's'}, val: {tmp_path / 's'}}}\n"
        f"optim: {{steps: 12, batch_size: 8, warmup_steps: 2}}\nout_dir: {tmp_path / 'run'}\n"
        f"eval_every: 6\ncheckpoint_every: 6\nsamples: 2\ntokenizer: {tiny_model_dir}\n"
    )
    code, out, err = run_cli(["lm-train", str(config), "--max-minutes", "0.00001"], capsys)
    assert code == 0 and "stopped at step 1 of 12 (time limit)" in out, err
    code, out, err = run_cli(["lm-train", str(tmp_path / "run"), "optim.lr=0.1", "--resume"], capsys)
    assert code == 2 and "optim.lr" in err  # a resume may not change the run
    code, out, err = run_cli(["lm-train", str(config), "--resume"], capsys)
    assert code == 0, err
    rows = (tmp_path / "run" / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,elapsed_s,val_bits_per_token") and [r.split(",")[0] for r in rows[1:]] == [
        "1",
        "6",
        "12",
    ]
    assert (tmp_path / "run" / "samples" / "step_000012.png").is_file()
    code, out, err = run_cli(["lm-train", str(config), f"model.init_from={tmp_path / 'run' / 'model'}",
                              f"out_dir={tmp_path / 'warm'}", "optim.steps=1", "optim.lr=1e-9"], capsys)  # fmt: skip
    assert code == 0, err
    warm_bits = float((tmp_path / "warm" / "eval.csv").read_text().splitlines()[1].split(",")[2])
    assert abs(warm_bits - float(rows[-1].split(",")[2])) < 0.05  # it starts where the first run ended
    other = vtok.lm.load(tmp_path / "run" / "model")
    other.tokenizer_id = "ab" * (len(other.tokenizer_id) // 2)  # as if a fine-tune had moved the tokens
    vtok.lm.save_pretrained(other, tmp_path / "other")
    warm_other = [
        str(config),
        f"model.init_from={tmp_path / 'other'}",
        f"out_dir={tmp_path / 'warm2'}",
        "optim.steps=1",
    ]
    code, out, err = run_cli(["lm-train", *warm_other], capsys)
    assert code == 2 and "init_from_other_tokenizer" in err and len(err.strip().splitlines()) == 1
    assert run_cli(["lm-train", *warm_other, "model.init_from_other_tokenizer=true"], capsys)[0] == 0
    lm = vtok.lm.load(tmp_path / "run" / "model")
    assert lm.classes == ["cats", "cups"] and lm.tokenizer_id == vtok.load(tiny_model_dir).weights_id().hex()

    gen = tmp_path / "gen"
    code, out, err = run_cli(["generate", str(tmp_path / "run" / "model"), "-n", "3", "--tokens", "5", "--class",
                              "cups", "--cfg", "2", "--seed", "4", "--model", str(tiny_model_dir), "--out", str(gen)], capsys)  # fmt: skip
    assert code == 0, err
    tokens = np.load(gen / "tokens.npy")
    assert tokens.shape == (3, 5) and json.loads((gen / "tokens.json").read_text())["tokens"] == tokens.tolist()
    assert (
        len(list(gen.glob("sample_*.png"))) == 3
        and (gen / "sheet.png").is_file()
        and (gen / "progressive.png").is_file()
    )
    assert torch.equal(torch.from_numpy(tokens), lm.generate(3, num_tokens=5, class_label="cups", cfg=2.0, seed=4))
    code, out, err = run_cli(
        ["generate", str(tmp_path / "run" / "model"), "--class", "dogs", "--out", str(gen)], capsys
    )
    assert code == 2 and "unknown class" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_processes_under_torchrun_split_the_shards(labelled, tmp_path, tiny_model_dir):
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vtok.cli",
           "tokenize", str(labelled), "--out", str(out), "--model", str(tiny_model_dir), "--images-per-shard", "2"]  # fmt: skip
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert "skipped 1 unreadable" in done.stdout, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["file"] for s in manifest["shards"]] == [f"shard-{i:05d}.parquet" for i in range(6)]
    shards = TokenShards(out)
    assert sorted(shards.keys) == sorted({*shards.keys}) and len(shards) == 11


def test_tampered_manifest_is_one_vtok_error(labelled, tmp_path, tiny_model_dir):
    tokenize_images(labelled, tmp_path / "s", vtok.load(tiny_model_dir), ShardSettings(images_per_shard=4))
    manifest = tmp_path / "s" / "manifest.json"
    good = json.loads(manifest.read_text())
    for change in (
        {"num_tokens": 3},
        {"labels": 5},
        {"shards": [{"file": "../../elsewhere.parquet"}]},
        {"tokenizer": None},
    ):
        manifest.write_text(json.dumps({**good, **change}))
        with pytest.raises(vtok.VtokError):
            TokenShards(tmp_path / "s")
    manifest.write_text("{not json")
    with pytest.raises(vtok.VtokError):
        TokenShards(tmp_path / "s")
