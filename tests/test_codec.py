import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import vtok
import vtok.lm as vlm
from vtok.codec import FormatError, TokenPrior, decode_file, encode_image, fit_prior
from vtok.codec.entropy import ans_decode, ans_encode, pack_tokens, unpack_tokens
from vtok.codec.format import VtokFile, read_file, write_file
from vtok.codec.prior import symbol_alphabets
from vtok.codec.tiling import TileLayout, blend_tiles, split_tiles
from vtok.demo import sample_images


@pytest.fixture(scope="module")
def coder():
    """A tiny tokenizer with a prior fitted on real photo crops."""
    torch.manual_seed(0)
    tok = vtok.create_tokenizer("ordered1d-tiny")
    return tok


@pytest.fixture(scope="module")
def coder_with_prior(coder, photo_dirs):
    fit_prior(coder, photo_dirs[0], crops_per_image=4)
    return coder


@pytest.fixture(scope="module")
def photo():
    return np.asarray(Image.open(sample_images()[0]).convert("RGB"))[::4, ::4].copy()  # 128x128 real photo


@pytest.mark.parametrize("coding", ["bitpack", "ans"])
def test_file_round_trip_equals_in_memory_tokens(coder_with_prior, photo, coding):
    tok = coder_with_prior
    enc = encode_image(photo, tok, coding=coding, tokens=5)
    array, f = decode_file(enc.data, tok)
    assert array.shape == photo.shape
    layout = TileLayout(photo.shape[1], photo.shape[0], tok.image_size, f.overlap)
    tiles = split_tiles(photo, layout)
    expected_tokens = tok.encode(tiles)[:, :5]
    recon = tok.decode(expected_tokens)
    assert np.array_equal(array, blend_tiles(recon, layout))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_every_coding_decodes_exactly_what_was_encoded(coder_with_prior, data):
    tok = coder_with_prior
    t = data.draw(st.integers(1, 5))
    tokens = np.array(
        data.draw(
            st.lists(st.lists(st.integers(0, tok.codebook_size - 1), min_size=8, max_size=8), min_size=t, max_size=t)
        )
    )
    counts = np.array(data.draw(st.lists(st.integers(1, 8), min_size=t, max_size=t)))
    masked = tokens * (np.arange(8)[None, :] < counts[:, None])
    assert np.array_equal(
        unpack_tokens(pack_tokens(tokens, counts, tok.codebook_size), counts, 8, tok.codebook_size), masked
    )
    assert np.array_equal(ans_decode(ans_encode(tokens, counts, tok.prior), counts, 8, tok.prior), masked)


def test_ans_beats_bitpacking_on_skewed_tokens_and_tracks_cross_entropy():
    rng = np.random.default_rng(0)
    alphabets = [8, 5, 5, 5]
    skewed = rng.choice(1000, size=(400, 16), p=np.r_[np.full(10, 0.09), np.full(990, 0.1 / 990)])
    prior = TokenPrior.fit(skewed, alphabets)
    counts = np.full(400, 16)
    ans = len(ans_encode(skewed, counts, prior)) * 8
    packed = len(pack_tokens(skewed, counts, 1000)) * 8
    ideal = prior.cross_entropy_bits(skewed, counts)
    assert ans < 0.8 * packed
    assert ans <= ideal * 1.01 + 64


@pytest.mark.parametrize("size", [(1, 1), (1, 40), (37, 1), (31, 17), (97, 131), (200, 33)])
def test_tiles_reassemble_to_the_original_size(coder, size):
    w, h = size
    img = np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    enc = encode_image(img, coder, coding="bitpack", tokens=2)
    array, _ = decode_file(enc.data, coder)
    assert array.shape == (h, w, 3)
    out = vtok.decompress(enc.data, coder)
    assert out.size == (w, h)


def test_blending_identity_tiles_gives_back_the_image():
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    layout = TileLayout(90, 70, 32, 8)
    assert np.array_equal(blend_tiles(split_tiles(img, layout), layout), img)


def test_adaptive_length_meets_its_target_or_reports(coder_with_prior, photo):
    tok = coder_with_prior
    low = encode_image(photo, tok, psnr=5.0)  # trivially reachable: one token per tile
    assert low.unmet_tiles == 0 and low.counts.max() == 1
    high = encode_image(photo, tok, psnr=60.0)  # unreachable for an untrained tiny model
    assert high.unmet_tiles == high.tiles and high.counts.min() == tok.num_tokens
    mid = encode_image(photo, tok, ssim=0.05)
    array, f = decode_file(mid.data, tok)
    layout = TileLayout(photo.shape[1], photo.shape[0], tok.image_size, f.overlap)
    tiles = split_tiles(photo, layout)
    recon = tok.decode_prefixes(tok.encode(tiles), torch.from_numpy(mid.counts))
    met = vtok.metrics.ssim(recon, tiles) >= 0.05
    assert met.sum() == mid.tiles - mid.unmet_tiles
    shorter = torch.from_numpy(np.maximum(mid.counts - 1, 1))
    worse = vtok.metrics.ssim(tok.decode_prefixes(tok.encode(tiles), shorter), tiles)
    assert not (worse[torch.from_numpy(mid.counts) > 1] >= 0.05).all()  # one token fewer would miss somewhere


def test_perceptual_target(coder_with_prior, photo):
    loose = encode_image(photo, coder_with_prior, perceptual=1e6)  # any reconstruction is close enough
    assert loose.unmet_tiles == 0 and loose.counts.max() == 1
    strict = encode_image(photo, coder_with_prior, perceptual=0.0)  # only a perfect copy would do
    assert strict.unmet_tiles == strict.tiles and strict.counts.min() == coder_with_prior.num_tokens


def test_max_bytes_is_never_exceeded(coder_with_prior, photo):
    for budget in (60, 100, 400):
        enc = encode_image(photo, coder_with_prior, max_bytes=budget)
        assert len(enc.data) <= budget
    with pytest.raises(vtok.VtokError, match="smallest"):
        encode_image(photo, coder_with_prior, max_bytes=5)


def test_only_one_target_and_known_codings(coder, photo):
    with pytest.raises(vtok.ConfigError):
        encode_image(photo, coder, tokens=2, psnr=20)
    with pytest.raises(vtok.ConfigError):
        encode_image(photo, coder, coding="zip")


def test_other_model_is_refused(coder, photo):
    data = encode_image(photo, coder, coding="bitpack", tokens=1).data
    torch.manual_seed(1)
    other = vtok.create_tokenizer("ordered1d-tiny")
    with pytest.raises(FormatError, match="another model"):
        decode_file(data, other)


def _refresh_crc(body: bytes) -> bytes:
    return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))


def _as_version_3(data: bytes, tok) -> bytes:
    f = read_file(data, tok.image_size, tok.num_tokens)
    f.version = 3
    return write_file(f)


def test_hostile_files(coder, photo):
    data = encode_image(photo, coder, coding="bitpack", tokens=3).data
    v3 = _as_version_3(data, coder)
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "bit flip": data[:12] + bytes([data[12] ^ 0x10]) + data[13:],
        "wrong magic": b"JP" + data[2:],
        "reserved flags": _refresh_crc(data[:2] + bytes([data[2] | 0x40]) + data[3:]),
        "bad coding": _refresh_crc(data[:2] + bytes([data[2] | 0x03]) + data[3:]),
        "unknown shipped model": _refresh_crc(data[:2] + bytes([data[2] | 0x04, 0xFE]) + data[7:]),
        "v3 wrong magic": b"JPEG" + v3[4:],
        "v3 wrong version": _refresh_crc(v3[:4] + b"\x09" + v3[5:]),
        "v3 claims version 4": _refresh_crc(v3[:4] + b"\x04" + v3[5:]),
        "v3 bad coding": _refresh_crc(v3[:5] + b"\x07" + v3[6:]),
    }
    for name, blob in cases.items():
        with pytest.raises(FormatError):
            decode_file(blob, coder)
            pytest.fail(f"{name} was accepted")
    f = read_file(data, coder.image_size, coder.num_tokens)
    absurd = write_file(VtokFile(f.coding, f.model_id, 1 << 20, 1 << 20, 0, np.zeros(0), b""))
    with pytest.raises(vtok.LimitError, match="over the limit of 100,000,000 pixels: raise it with --max-pixels"):
        decode_file(absurd, coder)
    too_many = write_file(
        VtokFile(f.coding, f.model_id, f.width, f.height, f.overlap, np.full(len(f.counts), 200), f.payload)
    )
    with pytest.raises(FormatError, match="token counts"):
        decode_file(too_many, coder)
    # A bit-packed payload whose ids exceed the codebook (16 bits hold 65535 > 64000 etc.).
    big = write_file(VtokFile(0, f.model_id, f.width, f.height, f.overlap, f.counts, b"\xff" * len(f.payload)))
    with pytest.raises(vtok.VtokError):
        decode_file(big, coder)


def test_version_3_files_still_decode(coder_with_prior, photo):
    for coding in ("bitpack", "ans"):
        data = encode_image(photo, coder_with_prior, coding=coding, tokens=5).data
        v3 = _as_version_3(data, coder_with_prior)
        assert v3[:5] == b"VTOK\x03" and data[:2] == b"vt"
        assert np.array_equal(
            np.asarray(vtok.decompress(v3, coder_with_prior)), np.asarray(vtok.decompress(data, coder_with_prior))
        )


@pytest.mark.parametrize("coding", ["ans", "bitpack", "lm"])
def test_a_shipped_model_one_tile_file_spends_at_most_12_bytes_besides_its_payload(photo, coding):
    tok = vtok.load("default")
    for k in (1, 16, 64):
        data = encode_image(photo, tok, coding=coding, tokens=k, lm="default" if coding == "lm" else None).data
        f = read_file(data, tok.image_size, tok.num_tokens)
        assert len(data) - len(f.payload) <= 12, (k, len(data), len(f.payload))
        assert f.model_id == tok.weights_id()  # the one-byte name stands for the full ids
        assert (f.prior_id == tok.prior.id()) if coding == "ans" else True
        assert np.array_equal(vtok.read_tokens(data).padded(0)[:, :k], tok.encode(photo, num_tokens=k).numpy())


def test_every_shipped_model_and_coder_has_a_one_byte_name():
    """The compact container names shipped models by an index into SHIPPED_IDS: a shipped model,
    prior or LM that changes must get its entries (old ones stay, for old files)."""
    from vtok.codec.format import SHIPPED_IDS
    from vtok.codec.resolve import lm_id_of

    for name in vtok.shipped_models():
        tok = vtok.load(name)
        assert (tok.weights_id(), 0, None) in SHIPPED_IDS.values()
        if tok.prior is not None:
            assert (tok.weights_id(), 1, tok.prior.id()) in SHIPPED_IDS.values()
    for name in vlm.shipped_lms():
        lm = vlm.load(name)
        tok = vtok.load(lm.tokenizer_name or "default")
        assert (tok.weights_id(), 2, lm_id_of(lm)) in SHIPPED_IDS.values()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"VTOK\x03", b"VTOK\x02", b"VTOK\x01", b"vt"]))
def test_parser_never_crashes_on_random_bytes(blob, head):
    data = head + blob
    try:  # resealed, so that the parser gets past the checksum and meets the random fields
        read_file(_refresh_crc(data) if len(data) >= 8 else data, 32, 8)
    except FormatError:
        pass


_FLAT_FILES: dict[int, bytes] = {}


def _flat_file(coder) -> bytes:
    """One small file per tokenizer, encoded once for all of hypothesis's examples."""
    if id(coder) not in _FLAT_FILES:
        _FLAT_FILES[id(coder)] = encode_image(
            np.full((40, 40, 3), 90, np.uint8), coder, coding="bitpack", tokens=2
        ).data
    return _FLAT_FILES[id(coder)]


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_single_byte_corruption_is_always_caught(coder, position, value):
    data = _flat_file(coder)
    i = position % len(data)
    if data[i] == value:
        return
    corrupted = data[:i] + bytes([value]) + data[i + 1 :]
    with pytest.raises(vtok.VtokError):
        decode_file(corrupted, coder)


def test_prior_save_load_and_mismatch(coder_with_prior, tmp_path):
    tok = coder_with_prior
    folder = tok.save_pretrained(tmp_path / "m")
    again = vtok.load(folder)
    assert again.prior is not None and again.fingerprint() == tok.fingerprint()
    bad = TokenPrior([np.full((3, a), 1.0 / a) for a in symbol_alphabets(tok.model.quantizer)])
    bad.save(folder / "prior.safetensors")
    with pytest.raises(vtok.ModelLoadError, match="prior does not match"):
        vtok.load(folder)


def test_ans_without_prior_is_a_clear_error(photo):
    tok = vtok.create_tokenizer("ordered1d-tiny")
    with pytest.raises(vtok.ConfigError, match="no token prior"):
        encode_image(photo, tok, coding="ans")


def test_mean_allocation_meets_the_mean_with_no_more_bits_than_a_fixed_k(coder_with_prior, photo):
    from vtok.codec import allocate_prefix_lengths

    tok = coder_with_prior
    layout = TileLayout(photo.shape[1], photo.shape[0], tok.image_size, 4)
    tiles = split_tiles(photo, layout)
    tokens = tok.encode(tiles)
    bits = tok.prior.prefix_bits(tokens.numpy())
    for k in (2, 4):  # both on the allocation's ladder
        fixed = vtok.metrics.ssim(tok.decode(tokens[:, :k]), tiles).mean().item()
        counts, met = allocate_prefix_lengths(tok, tiles, tokens, "ssim", fixed)
        assert met
        achieved = vtok.metrics.ssim(tok.decode_prefixes(tokens, counts), tiles).mean().item()
        assert achieved >= fixed - 1e-6
        assert bits[np.arange(len(tokens)), counts.numpy() - 1].sum() <= bits[:, k - 1].sum() + 1e-6
    counts, met = allocate_prefix_lengths(tok, tiles, tokens, "ssim", 2.0)  # SSIM cannot exceed 1
    assert not met and counts.min() == tok.num_tokens
    enc = encode_image(photo, tok, ssim=0.2, allocation="mean")
    assert decode_file(enc.data, tok)[0].shape == photo.shape
    with pytest.raises(vtok.ConfigError, match="allocation"):
        encode_image(photo, tok, ssim=0.2, allocation="greedy")


def test_decoding_files_loads_a_model_folder_once_and_again_when_it_changes(
    coder_with_prior, photo, tmp_path, monkeypatch
):
    import sys

    resolve_module = sys.modules["vtok.codec.resolve"]
    folder = tmp_path / "model"
    coder_with_prior.save_pretrained(folder)
    data = encode_image(photo, coder_with_prior, tokens=3).data
    loads = []
    real_load = resolve_module.load
    monkeypatch.setattr(resolve_module, "load", lambda name: loads.append(name) or real_load(name))
    resolve_module._load_cached.cache_clear()
    for _ in range(3):
        vtok.decompress(data, str(folder))
    assert len(loads) == 1
    prior = folder / "prior.safetensors"
    prior.write_bytes(prior.read_bytes())  # a refitted prior: the same folder, a newer file
    import os

    os.utime(prior, ns=(prior.stat().st_atime_ns, prior.stat().st_mtime_ns + 10**9))
    vtok.decompress(data, str(folder))
    assert len(loads) == 2


@given(st.lists(st.integers(1, 64), min_size=12, max_size=12), st.sampled_from([2, 4]))
@settings(max_examples=60, deadline=None)
def test_neighbouring_tiles_keep_lengths_within_a_ratio(lengths, ratio):
    """Adaptive lengths are only raised, and no tile keeps fewer than 1/ratio of a neighbour's tokens."""
    from vtok.codec.rate import limit_neighbour_ratio

    before = torch.tensor(lengths)
    after = limit_neighbour_ratio(before, 4, 3, ratio)
    assert (after >= before).all() and after.max() == before.max()
    grid = after.view(3, 4)
    for a, b in ((grid[1:], grid[:-1]), (grid[:, 1:], grid[:, :-1])):
        assert (a * ratio >= b).all() and (b * ratio >= a).all()
    assert torch.equal(limit_neighbour_ratio(after, 4, 3, ratio), after)  # already within: unchanged
    one = torch.tensor([1, 64])
    assert limit_neighbour_ratio(one, 2, 1, 4).tolist() == [16, 64]
