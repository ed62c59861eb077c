"""The token LM: model contract, exact probabilities, KV cache, sampling, save/load."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

import vtok
import vtok.lm as vlm
from vtok.errors import ConfigError, ModelLoadError, TokenError
from vtok.lm.sampling import filter_logits


def small_lm(alphabets=(2, 3), positions=3, classes=0, **overrides) -> vlm.TokenLM:
    torch.manual_seed(0)
    return vlm.create_lm("lm-tiny", list(alphabets), positions, num_classes=classes, **overrides).eval()


@pytest.mark.parametrize("name", vlm.list_lms())
def test_every_variant_trains(name):
    torch.manual_seed(0)
    model = vlm.create_lm(name, [8, 5], 8, num_classes=3, depth=1) if name != "lm-tiny" else small_lm((8, 5), 8, 3)
    model.train()
    tokens = torch.randint(0, 40, (2, 8))
    logits = model(tokens, torch.tensor([0, 3]))
    assert [tuple(lg.shape) for lg in logits] == [(2, 8, 8), (2, 8, 5)]
    loss = model.nll_from_logits(logits, tokens).mean()
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # class embeddings of classes not in the batch get no gradient; everything else must
    assert [n for n in missing if not n.startswith("start_embed")] == []


def test_probabilities_sum_to_one_over_every_sequence():
    """The digit-factored head is a proper distribution over whole tokens and sequences."""
    model = small_lm((2, 3), positions=2)
    all_tokens = torch.tensor(list(itertools.product(range(6), repeat=2)))  # (36, 2)
    p = model.log_prob(all_tokens).sum(1).exp2()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    # and a prefix's probability is the sum over its continuations
    first = model.log_prob(all_tokens[::6, :1])[:, 0].exp2()
    assert torch.allclose(first, p.view(6, 6).sum(1), atol=1e-5)


def test_cache_matches_full_recompute():
    model = small_lm((8, 5), positions=10, classes=2)
    tokens = torch.randint(0, 40, (3, 10))
    classes = torch.tensor([0, 1, 2])
    full = model.hidden(model.embed_inputs(tokens, classes))
    cache = model.new_cache(3)
    steps = [
        model.hidden(model.step_input(tokens[:, t - 1] if t else None, classes, t), cache)[:, 0] for t in range(10)
    ]
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)
    a = model.generate(4, seed=3, class_label=1, cfg=2.0)
    b = model.generate(4, seed=3, class_label=1, cfg=2.0, use_cache=False)
    assert torch.equal(a, b)


def test_generate_contract():
    model = small_lm((8, 5), positions=6, classes=2)
    model.classes = ["cat", "dog"]
    out = model.generate(5, num_tokens=4, seed=0)
    assert out.shape == (5, 4) and out.dtype == torch.long and 0 <= out.min() and out.max() < 40
    assert torch.equal(out, model.generate(5, num_tokens=4, seed=0))
    assert not torch.equal(out, model.generate(5, num_tokens=4, seed=1))
    greedy = [model.generate(3, top_k=1, seed=s, class_label="dog") for s in range(3)]
    assert all(torch.equal(greedy[0], g) for g in greedy) and torch.equal(greedy[0][0], greedy[0][1])
    for bad in ({"num_tokens": 7}, {"num_tokens": 0}, {"temperature": 0}, {"top_p": 1.5}, {"top_k": 0}, {"seed": -1}):
        with pytest.raises(ConfigError):
            model.generate(1, **bad)
    with pytest.raises(ConfigError, match="unknown class"):
        model.generate(1, class_label="wolf")
    with pytest.raises(ConfigError, match="without classes"):
        small_lm().generate(1, class_label=0)


def test_filter_logits():
    logits = np.log([[0.5, 0.3, 0.15, 0.05]])
    assert np.allclose(filter_logits(logits, 1.0, None, None), [[0.5, 0.3, 0.15, 0.05]])
    assert np.allclose(filter_logits(logits, 1.0, 2, None), [[0.625, 0.375, 0, 0]])
    top_p = filter_logits(logits, 1.0, None, 0.7)  # 0.5 + 0.3 reach 0.7: the rest goes
    assert np.allclose(top_p, [[0.625, 0.375, 0, 0]])
    assert filter_logits(logits, 1.0, None, 0.01)[0, 0] == 1.0  # the likeliest always stays
    assert np.allclose(filter_logits(logits, 0.5, None, None), np.array([[25, 9, 2.25, 0.25]]) / 36.5)


def test_log_prob_checks_tokens():
    model = small_lm()
    with pytest.raises(TokenError):
        model.log_prob(torch.tensor([[6, 0, 0]]))
    with pytest.raises(TokenError):
        model.log_prob(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(TokenError):
        model.log_prob(torch.zeros(1, 2))


def test_save_load_round_trip(tmp_path):
    model = small_lm((8, 5), positions=6, classes=2)
    model.classes, model.tokenizer_name, model.tokenizer_id = ["a", "b"], "default", "00112233"
    vlm.save_pretrained(model, tmp_path / "lm")
    back = vlm.load(tmp_path / "lm")
    assert back.classes == ["a", "b"] and back.tokenizer_id == "00112233" and back.config == model.config
    tokens = torch.randint(0, 40, (2, 6))
    assert torch.equal(back.log_prob(tokens), model.log_prob(tokens))
    assert vlm.lm_id(back) == vlm.lm_id(model)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 0}, "width"),
        ({"heads": 3}, "divisible"),
        ({"num_positions": 10**9}, "num_positions"),
        ({"alphabets": []}, "alphabets"),
        ({"depth": "4"}, "depth"),
        ({"bogus": 1}, "unknown"),
    ],
)
def test_tampered_config_refused(tmp_path, change, message):
    vlm.save_pretrained(small_lm(), tmp_path / "lm")
    path = tmp_path / "lm" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"].update(change)
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=message):
        vlm.load(tmp_path / "lm")


def test_nan_weights_and_missing_files_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    vlm.save_pretrained(small_lm(), tmp_path / "lm")
    weights = tmp_path / "lm" / "model.safetensors"
    state = load_file(str(weights))
    state["norm.weight"][0] = math.nan
    save_file(state, str(weights))
    with pytest.raises(ModelLoadError, match="NaN"):
        vlm.load(tmp_path / "lm")
    weights.unlink()
    with pytest.raises(ModelLoadError, match="missing model.safetensors"):
        vlm.load(tmp_path / "lm")
    with pytest.raises(ModelLoadError):
        vlm.load(tmp_path / "nowhere")


def _rewrite_header(weights, change) -> None:
    """Rewrite model.safetensors' JSON header with `change` applied, its data bytes left as they are."""
    import struct

    raw = weights.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    change(header)
    body = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n :])


@pytest.mark.parametrize(
    "shape, dropped",
    [([10**6, 10**6], False), ([5], False), (None, True)],
    ids=["terabytes", "small", "dropped"],
)
def test_weights_header_of_other_shapes_is_refused_before_the_data_is_read(tmp_path, monkeypatch, shape, dropped):
    """The LM's safetensors header is checked against the model config.json builds: a tensor of
    another shape (even terabytes) or a missing one is refused with a one-line ModelLoadError before
    any tensor data is read."""
    vlm.save_pretrained(small_lm(), tmp_path / "lm")

    def change(header):
        if dropped:
            del header["norm.weight"]
        else:
            header["norm.weight"] = {**header["norm.weight"], "shape": shape}

    _rewrite_header(tmp_path / "lm" / "model.safetensors", change)
    monkeypatch.setattr("safetensors.torch.load_file", lambda *a, **k: pytest.fail("the data was read"))
    with pytest.raises(ModelLoadError, match=r"do not match config.json .*'norm.weight'") as info:
        vlm.load(tmp_path / "lm")
    assert "\n" not in str(info.value)


def test_weights_header_of_absurd_length_is_refused(tmp_path):
    import struct

    vlm.save_pretrained(small_lm(), tmp_path / "lm")
    (tmp_path / "lm" / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    with pytest.raises(ModelLoadError, match="header"):
        vlm.load(tmp_path / "lm")


@pytest.mark.parametrize("depth", [40, 100_000])
def test_config_nested_too_deeply_is_refused(tmp_path, depth):
    """A config.json nested deeper than any vtok writes: refused, by the depth check once parsed
    (40 levels) or by the parser's recursion limit (100,000 levels), never a RecursionError."""
    vlm.save_pretrained(small_lm(), tmp_path / "lm")
    path = tmp_path / "lm" / "config.json"
    if depth < 1000:
        meta = json.loads(path.read_text())
        meta["notes"] = json.loads("[" * depth + "]" * depth)  # a valid config otherwise
        path.write_text(json.dumps(meta))
    else:
        path.write_text("[" * depth + "]" * depth)
    with pytest.raises(ModelLoadError, match="nested too deeply"):
        vlm.load(tmp_path / "lm")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "vtok-tokenizer"}, "not a vtok token LM config"),
        ({"format_version": 2}, "format_version 2 is not supported"),
        ({"config": [1]}, "needs 'config'"),
        ({"tokenizer": [1], "classes": "ab"}, "classes must be a list"),
    ],
)
def test_tampered_top_level_fields_refused(tmp_path, change, message):
    vlm.save_pretrained(small_lm(), tmp_path / "lm")
    path = tmp_path / "lm" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ModelLoadError, match=message):
        vlm.load(tmp_path / "lm")


def test_config_too_large_is_refused(tmp_path):
    vlm.save_pretrained(small_lm(), tmp_path / "lm")
    path = tmp_path / "lm" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "notes": "x" * (5 << 20)}))
    with pytest.raises(ModelLoadError, match="too large"):
        vlm.load(tmp_path / "lm")


def test_names_resolve_as_for_tokenizers(tmp_path, monkeypatch):
    """A bare shipped name loads the shipped LM even beside a folder of that name (with a warning);
    './name' loads the folder; a file or an unknown name is a one-line ModelLoadError."""
    model = small_lm()
    vlm.save_pretrained(model, tmp_path / "default")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="shipped LM 'default', not the folder ./default"):
        shipped = vlm.load("default")
    assert shipped.config != model.config
    assert vlm.lm_id(vlm.load("./default")) == vlm.lm_id(model)
    with pytest.raises(ModelLoadError, match="a file, not an LM folder"):
        vlm.load("default/config.json")
    with pytest.raises(ModelLoadError) as info:
        vlm.load(tmp_path / "nowhere")
    assert str(info.value).startswith(f"{tmp_path / 'nowhere'}: neither an LM folder, a shipped LM (shipped: default)")


def test_save_keeps_a_model_card_and_ids_do_not_change(tmp_path):
    model = small_lm()
    folder = vlm.save_pretrained(model, tmp_path / "lm")
    (folder / "README.md").write_text("# card\n")
    before = vlm.lm_id(model)
    vlm.save_pretrained(model, folder)
    assert (folder / "README.md").read_text() == "# card\n"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert vlm.lm_id(vlm.load(folder)) == before


def test_tokenizer_must_match(tmp_path, tiny):
    model = vlm.create_lm("lm-tiny", tiny.model.quantizer.symbol_alphabets(), tiny.num_tokens)
    model.tokenizer_id = "deadbeef"
    with pytest.raises(ModelLoadError, match="deadbeef"):
        vlm.load_tokenizer_for(model, tiny)
    model.tokenizer_id = tiny.weights_id().hex()
    assert vlm.load_tokenizer_for(model, tiny) is tiny
    other = vlm.create_lm("lm-tiny", [2, 2], tiny.num_tokens)
    with pytest.raises(ModelLoadError, match="does not fit"):
        vlm.load_tokenizer_for(other, tiny)


def test_lm_is_a_subpackage_not_a_root_name():
    assert vtok.lm is vlm and "lm" not in vtok.__all__  # its names: test_public_api


def test_generate_refuses_a_cache_too_large():
    with pytest.raises(ConfigError, match="per call"):
        small_lm().generate(10**8)


def test_numpy_and_torch_sampling_agree(monkeypatch):
    """Few rows sample through float64 numpy, many through torch: the same draws either way."""
    import vtok.lm.stepper as stepper

    model = small_lm((8, 5), positions=6, classes=2)
    small = model.generate(9, seed=5, class_label=1, cfg=1.5)  # 18 rows with guidance: torch
    monkeypatch.setattr(stepper, "NUMPY_MAX_ROWS", 64)
    assert torch.equal(small, model.generate(9, seed=5, class_label=1, cfg=1.5))
    assert torch.equal(model.generate(9, seed=5, use_cache=False), model.generate(9, seed=5))


def test_unseeded_sampling_follows_torch_manual_seed():
    model = small_lm((8, 5), positions=4)
    torch.manual_seed(11)
    a = model.generate(3)
    torch.manual_seed(11)
    assert torch.equal(a, model.generate(3))
