import json

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.demo import sample_images


def test_prefix_property_and_deterministic_encode(tiny):
    x = torch.rand(3, 3, 40, 50)
    full = tiny.encode(x)
    assert full.shape == (3, tiny.num_tokens) and full.dtype == torch.int64
    assert torch.equal(tiny.encode(x), full)
    for k in range(1, tiny.num_tokens + 1):
        assert torch.equal(tiny.encode(x, num_tokens=k), full[:, :k])
        assert tiny.decode(full[:, :k]).shape == (3, 3, tiny.image_size, tiny.image_size)


def test_decode_range_and_accepts_1d_lists_and_numpy(tiny):
    tokens = tiny.encode(torch.rand(1, 3, 32, 32))
    img = tiny.decode(tokens)
    assert img.min() >= 0 and img.max() <= 1
    assert torch.equal(tiny.decode(tokens[0].tolist()), img)
    assert torch.equal(tiny.decode(tokens.numpy()), img)


def test_accepts_paths_pil_numpy_and_tensors_alike(tiny):
    path = sample_images()[0]
    pil = Image.open(path).convert("RGB")
    arr = np.asarray(pil)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    by_path = tiny.encode(path)
    assert torch.equal(tiny.encode(pil), by_path)
    assert torch.equal(tiny.encode(arr), by_path)
    assert torch.equal(tiny.encode([path, pil]), by_path.repeat(2, 1))
    assert tiny.encode(t).shape == by_path.shape  # tensor resize path differs slightly from PIL's
    assert tiny.encode(np.asarray(pil.convert("L"))).shape == (1, tiny.num_tokens)


def test_save_load_gives_identical_outputs(tiny, tmp_path):
    x = torch.rand(2, 3, 32, 32)
    tiny.save_pretrained(tmp_path / "m")
    again = vtok.load(tmp_path / "m")
    assert torch.equal(again.encode(x), tiny.encode(x))
    tokens = tiny.encode(x)
    assert torch.equal(again.decode(tokens[:, :3]), tiny.decode(tokens[:, :3]))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["architecture"] == "ordered1d" and meta["config"]["num_tokens"] == tiny.num_tokens


@pytest.mark.parametrize("k", [0, -1, 9, 2.0, True])
def test_bad_num_tokens(tiny, k):
    with pytest.raises(vtok.TokenError):
        tiny.encode(torch.rand(1, 3, 32, 32), num_tokens=k)


@pytest.mark.parametrize(
    "tokens",
    [
        torch.tensor([[0, 1, 10**6]]),  # id out of range
        torch.tensor([[-1, 0]]),
        torch.zeros(1, 9, dtype=torch.long),  # longer than K
        torch.zeros(1, 0, dtype=torch.long),  # empty
        torch.zeros(2, 2, 2, dtype=torch.long),  # wrong rank
        torch.zeros(1, 3),  # float dtype
        "abc",
    ],
)
def test_bad_tokens(tiny, tokens):
    with pytest.raises(vtok.TokenError):
        tiny.decode(tokens)


@pytest.mark.parametrize(
    "images",
    [
        torch.rand(1, 4, 32, 32),  # four channels
        torch.rand(3, 32, 32) * 2 - 1,  # [-1, 1] instead of [0, 1]
        torch.full((1, 3, 8, 8), float("nan")),
        torch.zeros(1, 3, 8, 8, dtype=torch.int32),
        np.zeros((4, 4, 5), dtype=np.uint8),
        np.zeros((4, 4, 3), dtype=np.float32) + 7,
        [],
        12,
    ],
)
def test_bad_images(tiny, images):
    with pytest.raises(vtok.ImageError):
        tiny.encode(images)


def test_one_pixel_image(tiny):
    assert tiny.encode(Image.new("RGB", (1, 1), "red")).shape == (1, tiny.num_tokens)


def test_model_folder_problems_are_model_load_errors(tiny, tmp_path):
    with pytest.raises(vtok.ModelLoadError, match="neither"):
        vtok.load(tmp_path / "does-not-exist")
    folder = tiny.save_pretrained(tmp_path / "m")
    (folder / "model.safetensors").rename(tmp_path / "weights.bak")
    with pytest.raises(vtok.ModelLoadError, match="missing model.safetensors"):
        vtok.load(folder)
    (tmp_path / "weights.bak").rename(folder / "model.safetensors")

    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["width"] = 64  # weights no longer match: strict loading refuses
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(vtok.ModelLoadError, match="do not match"):
        vtok.load(folder)

    meta["config"]["widht"] = 64
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(vtok.ModelLoadError, match="widht"):
        vtok.load(folder)

    (folder / "config.json").write_text("{not json")
    with pytest.raises(vtok.ModelLoadError, match="JSON"):
        vtok.load(folder)

    tiny.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(vtok.ModelLoadError, match="unreadable"):
        vtok.load(folder)


def test_state_dict_holds_no_derived_buffers(tiny):
    keys = tiny.model.state_dict().keys()
    assert not [k for k in keys if k.endswith("_levels") or k.endswith("_basis")]


def test_clean_state_dict_strips_wrapper_prefixes():
    from vtok.tokenizer import clean_state_dict

    assert list(clean_state_dict({"module._orig_mod.a.b": 1})) == ["a.b"]
