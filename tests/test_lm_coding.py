"""LM-coded .vtok files: exact round trips, the numpy coding path held to the torch model, errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

import vtok
import vtok.lm as vlm
from vtok.codec.format import token_check
from vtok.codec.lm_coding import CHUNK, _digit_probs, lm_decode, lm_encode
from vtok.errors import ConfigError, FormatError, TokenError
from vtok.lm.stepper import NumpyStepper, TorchStepper


def lm_for(tok: vtok.Tokenizer, seed: int = 0, trained: bool = True) -> vlm.TokenLM:
    torch.manual_seed(seed)
    lm = vlm.create_lm("lm-tiny", tok.model.quantizer.symbol_alphabets(), tok.num_tokens)
    if trained:  # a few steps on one repeated sequence, so that its predictions are far from uniform
        target = torch.arange(tok.num_tokens)[None].repeat(8, 1) * 7 % tok.codebook_size
        opt = torch.optim.Adam(lm.parameters(), 3e-2)
        for _ in range(30):
            opt.zero_grad()
            lm.nll(target).mean().backward()
            opt.step()
    lm.tokenizer_name, lm.tokenizer_id = tok.name, tok.weights_id().hex()
    return lm.eval()


def test_stepper_matches_the_torch_model(tiny):
    lm = lm_for(tiny)
    tokens = torch.randint(0, tiny.codebook_size, (3, tiny.num_tokens))
    classes = np.full(3, lm.null_class)
    stepper = NumpyStepper(lm, classes, tiny.num_tokens)
    reference = TorchStepper(lm, classes, tiny.num_tokens)
    expected = lm.hidden(lm.embed_inputs(tokens, lm.check_classes(None, 3))).detach()
    digits = lm.to_digits(tokens).numpy()
    for t in range(tiny.num_tokens):
        h = stepper.step(tokens[:, t - 1].numpy() if t else None)
        assert np.allclose(h, expected[:, t].double().numpy(), atol=1e-5)
        assert np.allclose(stepper.recompute(tokens[:, :t].numpy()), h, atol=1e-9)  # without the cache
        torch_h = reference.step(tokens[:, t - 1].numpy() if t else None)
        assert np.allclose(torch_h.double().numpy(), h, atol=1e-5)
        assert np.allclose(reference.recompute(tokens[:, :t].numpy()).double().numpy(), h, atol=1e-5)
        assert np.allclose(reference.head_logits(torch_h, 0), stepper.head_logits(h, 0), atol=1e-5)
        u = h
        for j in range(len(lm.alphabets)):
            p = _digit_probs(stepper, u, j)
            u = stepper.add_digit(u, digits[:, t, j], j)
            q = lm.digit_logits(expected[:, t], torch.from_numpy(digits[:, t]), j).softmax(-1).detach().double().numpy()
            assert np.allclose(p, q, atol=1e-5) and np.allclose(p.sum(1), 1) and p.min() > 0


def test_round_trip_exact_over_several_chunks(tiny):
    lm = lm_for(tiny)
    rng = np.random.default_rng(0)
    n = CHUNK + 6
    tokens = rng.integers(0, tiny.codebook_size, (n, tiny.num_tokens))
    counts = rng.integers(1, tiny.num_tokens + 1, n)
    payload = lm_encode(tokens, counts, lm)
    back = lm_decode(payload, counts, tiny.num_tokens, lm)
    keep = np.arange(tiny.num_tokens)[None] < counts[:, None]
    assert np.array_equal(back, np.where(keep, tokens, 0))
    # the code length is the model's: within a few bytes of its negative log-likelihood
    predictable = (np.arange(tiny.num_tokens)[None].repeat(4, 0) * 7) % tiny.codebook_size
    full = np.full(4, tiny.num_tokens)
    ideal_bits = float(-lm.log_prob(torch.from_numpy(predictable)).sum())
    coded = lm_encode(predictable, full, lm)
    assert len(coded) * 8 <= ideal_bits + 64 + 32
    assert len(coded) < len(lm_encode(predictable, full, lm_for(tiny, trained=False)))


def test_exact_across_threads_and_after_save_load(tiny, tmp_path):
    lm = lm_for(tiny)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, tiny.codebook_size, (5, tiny.num_tokens))
    counts = np.array([tiny.num_tokens, 1, 3, tiny.num_tokens, 2])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        payload = lm_encode(tokens, counts, lm)
        vlm.save_pretrained(lm, tmp_path / "lm")
        torch.set_num_threads(2)
        back = lm_decode(payload, counts, tiny.num_tokens, vlm.load(tmp_path / "lm"))
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(back[0], tokens[0]) and np.array_equal(back[2, :3], tokens[2, :3])


def test_corrupt_lm_file_is_a_format_error(tiny, photo_dirs):
    """An LM file's CRC covers its decoded tokens: a flipped payload bit cannot decode silently."""
    image = sorted(photo_dirs[1].iterdir())[0]
    lm = lm_for(tiny)
    data = vtok.compress(image, tiny, lm=lm)
    for at in (-6, -8, -12):
        bad = bytearray(data)
        bad[at] ^= 0x21
        with pytest.raises(FormatError):
            vtok.decompress(bytes(bad), tiny, lm=lm)
    counts = np.full(2, tiny.num_tokens)
    for garbage in (b"", b"\x01", bytes(range(256)) * 3):  # payload level: tokens or a TokenError, nothing else
        try:
            out = lm_decode(garbage, counts, tiny.num_tokens, lm)
            assert out.shape == (2, tiny.num_tokens) and out.min() >= 0 and out.max() < tiny.codebook_size
        except TokenError:
            pass


def test_compress_with_an_lm(tiny, tmp_path, photo_dirs):
    image = sorted(photo_dirs[1].iterdir())[0]
    lm = lm_for(tiny)
    data = vtok.compress(image, tiny, lm=lm)
    assert data[:2] == b"vt" and data[2] & 0x03 == 2  # the compact container (version 4), coding 2
    plain = vtok.compress(image, tiny, coding="bitpack")
    tokens = vtok.read_tokens(plain, tiny)
    coded = vtok.read_tokens(data, tiny, lm=lm)
    assert coded.coding == "lm" and all(np.array_equal(a, b) for a, b in zip(coded.tokens, tokens.tokens))
    assert np.array_equal(np.asarray(vtok.decompress(data, tiny, lm=lm)), np.asarray(vtok.decompress(plain, tiny)))
    with pytest.raises(FormatError, match="does not ship"):
        vtok.decompress(data, tiny)
    with pytest.raises(FormatError, match="coded under token LM"):
        vtok.decompress(data, tiny, lm=lm_for(tiny, seed=1))
    vlm.save_pretrained(lm, tmp_path / "lm")
    assert vtok.read_tokens(data, tiny, lm=tmp_path / "lm").coding == "lm"  # a folder works as well
    other = vlm.create_lm("lm-tiny", tiny.model.quantizer.symbol_alphabets(), tiny.num_tokens)
    other.tokenizer_id = "0badf00d"
    with pytest.raises(ConfigError, match="0badf00d"):
        vtok.compress(image, tiny, lm=other)
    with pytest.raises(ConfigError, match="needs a token LM"):
        vtok.compress(image, tiny, coding="lm")
    with pytest.raises(ConfigError, match="coding is 'ans'"):
        vtok.compress(image, tiny, coding="ans", lm=lm)


def _reseal(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def as_version_3(data: bytes, tok) -> bytes:
    """A version-4 file rewritten in the version-3 layout (what vtok wrote before the compact container)."""
    from vtok.codec.format import read_file, write_file

    f = read_file(data, tok.image_size, tok.num_tokens)
    f.version = 3
    if f.tokens_crc is not None:  # an LM file's checksum also covers its tokens
        f.token_bytes = token_check(vtok.read_tokens(data, tok, lm=lm_for(tok)).padded(0), f.counts)
    return write_file(f)


def test_version_2_and_3_files_still_decode_and_cannot_claim_lm_coding(tiny, photo_dirs):
    image = sorted(photo_dirs[1].iterdir())[0]
    v4 = vtok.compress(image, tiny, coding="bitpack", tokens=5)
    v3 = as_version_3(v4, tiny)
    assert v3[:5] == b"VTOK\x03" and len(v3) > len(v4)
    v2 = _reseal(v3[:4] + b"\x02" + v3[5:])  # bit-packed and ANS files kept their layout in version 3
    expected = np.asarray(vtok.decompress(v4, tiny))
    assert np.array_equal(np.asarray(vtok.decompress(v2, tiny)), expected)
    assert np.array_equal(np.asarray(vtok.decompress(v3, tiny)), expected)
    lm_file = vtok.compress(image, tiny, lm=lm_for(tiny), tokens=5)
    lm_v3 = as_version_3(lm_file, tiny)
    assert np.array_equal(np.asarray(vtok.decompress(lm_v3, tiny, lm=lm_for(tiny))), expected)
    with pytest.raises(FormatError, match="coding method 2"):
        vtok.decompress(_reseal(lm_v3[:4] + b"\x02" + lm_v3[5:]), tiny)


@pytest.mark.slow
def test_cli_encode_decode_with_lm(tiny_model_dir, tmp_path, photo_dirs, capsys):
    from conftest import run_cli

    tok = vtok.load(tiny_model_dir)
    vlm.save_pretrained(lm_for(tok), tmp_path / "lm")
    image = sorted(photo_dirs[1].iterdir())[0]
    code, out, err = run_cli(["encode", image, "-o", tmp_path / "a.vtok", "--model", tiny_model_dir, "--lm",
                              tmp_path / "lm"], capsys)  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(
        ["decode", tmp_path / "a.vtok", "-o", tmp_path / "a.png", "--model", tiny_model_dir], capsys
    )
    assert code == 2 and "--lm FOLDER" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["decode", tmp_path / "a.vtok", "-o", tmp_path / "a.png", "--model", tiny_model_dir,
                              "--lm", tmp_path / "lm"], capsys)  # fmt: skip
    assert code == 0, err
    reference = vtok.decompress(vtok.compress(image, tok, coding="bitpack"), tok)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(reference))


def test_shipped_default_lm_codes_files_the_default_tokenizer_reads():
    """The shipped pair: `vtok.lm.load("default")` learned the shipped tokenizer's tokens, and a
    file it codes decodes with no LM named (found by its id) to the ANS file's exact tokens."""
    lm = vlm.load("default")
    tok = vlm.load_tokenizer_for(lm)
    assert tok.weights_id().hex() == lm.tokenizer_id and lm.num_tokens == tok.num_tokens
    from vtok.demo import ASSETS  # the bundled photos

    photo = sorted(ASSETS.glob("*.jpg"))[0]
    data = vtok.compress(photo, "default", lm="default", tokens=24)
    ans = vtok.compress(photo, "default", coding="ans", tokens=24)
    coded, reference = vtok.read_tokens(data), vtok.read_tokens(ans)
    assert coded.coding == "lm" and all(np.array_equal(a, b) for a, b in zip(coded.tokens, reference.tokens))


def test_generate_default_cli(tmp_path, capsys):
    from conftest import run_cli

    code, out, err = run_cli(
        ["generate", "default", "-n", "2", "--tokens", "3", "--seed", "1", "--out", tmp_path], capsys
    )
    assert code == 0, err
    tokens = np.load(tmp_path / "tokens.npy")
    assert tokens.shape == (2, 3) and torch.equal(torch.from_numpy(tokens), vlm.load("default").generate(2, 3, seed=1))
