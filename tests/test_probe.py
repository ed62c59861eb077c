"""vtok probe: linear probes of what k tokens know."""

import json

import numpy as np
import pytest
import torch
from conftest import _real_photos, run_cli
from PIL import Image

import vtok
from vtok.metrics import probe as P


def test_ridge_recovers_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20))
    y_signal = x @ rng.normal(size=(20, 5)) + 0.1 * rng.normal(size=(60, 5))
    y_noise = rng.normal(size=(60, 5))
    fold = P._folds(np.zeros(60), 5, 0)
    kernel = x @ x.T
    assert P._r2(P._cross_validated(kernel, y_signal, fold, 0), y_signal, fold) > 0.9
    assert P._r2(P._cross_validated(kernel, y_noise, fold, 0), y_noise, fold) < 0.05
    feats = rng.normal(size=(30, 8))
    assert P._identified(feats + 0.01 * rng.normal(size=feats.shape), feats) == 1.0
    assert P._identified(rng.normal(size=feats.shape), feats) < 0.3
    labels = (x[:, 0] > 0).astype(int)
    assert P._accuracy(kernel, labels, P._folds(labels, 5, 0), 0) > 0.85
    assert P._chance(labels) == pytest.approx(max(labels.mean(), 1 - labels.mean()))


def test_folds_are_stratified_and_seeded():
    labels = np.array([0] * 10 + [1] * 5)
    fold = P._folds(labels, 5, 3)
    assert all((labels[fold == f] == 1).sum() == 1 for f in range(5))
    assert (P._folds(labels, 5, 3) == fold).all() and not (P._folds(labels, 5, 4) == fold).all()


def test_token_features_codes_and_onehot():
    tok = vtok.load("default")
    tokens = torch.tensor([[0, 63999], [1, 2]])
    codes = P.token_features(tok, tokens, "codes")
    onehot = P.token_features(tok, tokens, "onehot")
    assert codes.shape == (2, 2, 6) and onehot.shape == (2, 2, 39)
    assert (onehot.sum(-1) == 6).all() and onehot[0, 0, 0] == 1 and onehot[0, 1, 7] == 1
    with pytest.raises(vtok.VtokError, match="representation"):
        P.token_features(tok, tokens, "pixels")


@pytest.fixture(scope="module")
def two_kinds(tmp_path_factory):
    """Two sub-folders of real-photo crops, one washed with red and one with blue: a folder probe must
    separate them."""
    root = tmp_path_factory.mktemp("kinds")
    rng = np.random.default_rng(0)
    photos = _real_photos()
    for kind, tint in (("red", (230, 40, 40)), ("blue", (40, 40, 230))):
        (root / kind).mkdir()
        for i in range(10):
            im = photos[i % len(photos)]
            side = int(min(im.size) * rng.uniform(0.4, 1.0))
            left, top = int(rng.integers(0, im.width - side + 1)), int(rng.integers(0, im.height - side + 1))
            a = np.asarray(im.crop((left, top, left + side, top + side)).resize((128, 128)), dtype=np.float32)
            Image.fromarray(np.clip(0.5 * a + 0.5 * np.array(tint), 0, 255).astype(np.uint8)).save(
                root / kind / f"{i}.png"
            )
    return root


def test_probe_reads_what_the_tokens_know(two_kinds, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    result = P.probe(vtok.load("default"), two_kinds, folds=4, progress=False)
    assert result.num_images == 20 and [r.k for r in result.rows] == [1, 2, 4, 8, 16, 32, 64]
    assert result.folders == ["blue", "red"] and result.chance_folder is not None
    assert result.rows[0].top1_folder >= 0.9  # the first token carries the tint
    assert result.rows[-1].identified > result.rows[0].identified  # 64 tokens show a photo better than 1
    assert all(0 <= r.kept_class <= 1 for r in result.rows)
    text = result.table()
    assert "R² tokens" in text and "chance" in text and "quantized codes" in text
    assert json.loads(json.dumps(result.to_dict()))["rows"][0]["k"] == 1
    pytest.importorskip("matplotlib")
    assert result.plot(tmp_path / "probe.png").stat().st_size > 1000


def test_probe_cli(two_kinds, tmp_path, capsys):
    pytest.importorskip("efficientnet_lite_pytorch")
    rc, out, _ = run_cli(
        ["probe", "default", two_kinds, "--json", tmp_path / "p.json", "--folds", "2", "--limit", "8"], capsys
    )
    assert rc == 0 and "R² tokens" in out
    assert json.loads((tmp_path / "p.json").read_text())["num_images"] == 8
    rc, _, err = run_cli(["probe", "default", two_kinds, "--limit", "3"], capsys)
    assert rc != 0 and "needs at least" in err and "Traceback" not in err
    rc, _, err = run_cli(["probe", "default", tmp_path / "nothing-here"], capsys)
    assert rc != 0 and err.count("\n") == 1
