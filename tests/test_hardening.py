"""Hostile and unlucky inputs: payloads that pass the checksum and still do not decode, file-system
errors (read-only folders, unreadable files, full disks, names that are not UTF-8), tampered model
configs, and exports killed half way. Each must end in one typed error, never a traceback, a huge
allocation or a half-written model folder.

The tests may run as root, whom permissions do not stop: read-only folders and unreadable files
are simulated by making the calls vtok goes through fail as the system would.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import vtok
from vtok import files
from vtok.codec import FormatError, TokenPrior, decompress, encode_image, read_tokens
from vtok.codec.format import VtokFile, write_file
from vtok.codec.prior import symbol_alphabets
from vtok.demo import sample_images
from vtok.registry import ARCHITECTURES, variant_config

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vtok: error:"), stderr
    return lines[0]


def _photo(size=(40, 40), index=1) -> Image.Image:
    return Image.open(sample_images()[index]).convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _uniform_prior(tok: vtok.Tokenizer) -> TokenPrior:
    alphabets = symbol_alphabets(tok.model.quantizer)
    return TokenPrior([np.full((tok.num_tokens, a), 1.0 / a) for a in alphabets])


@pytest.fixture(scope="module")
def ans_model(tmp_path_factory) -> tuple[vtok.Tokenizer, Path]:
    """A tiny tokenizer with a prior, and its saved folder (for --model)."""
    torch.manual_seed(0)
    tok = vtok.create_tokenizer("ordered1d-tiny")
    tok.prior = _uniform_prior(tok)
    folder = tok.save_pretrained(tmp_path_factory.mktemp("ans_model") / "model")
    return tok, folder


def _ans_file(tok: vtok.Tokenizer, payload: bytes, counts=(3,), width=32, height=32) -> bytes:
    """A .vtok file with a valid checksum around any payload."""
    return write_file(
        VtokFile(1, tok.weights_id(), width, height, 0, np.array(counts, dtype=np.uint8), payload, tok.prior.id())
    )


# -- 1. payloads that pass the checksum but do not decode ----------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"\x00\x00\x00\x00", b"\x01\x00\x00\x00\x00\x00\x00\x00", b"\xff\xff\xff"],
    ids=["zero-word", "last-word-zero", "data-left-over"],
)
def test_a_payload_the_coder_refuses_is_a_format_error(ans_model, payload):
    tok, _ = ans_model
    data = _ans_file(tok, payload)
    with pytest.raises(FormatError, match="payload"):
        read_tokens(data, tok)
    with pytest.raises(FormatError, match="payload"):
        decompress(data, tok)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.binary(max_size=40),
    counts=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    coding=st.sampled_from([0, 1]),
)
@example(payload=b"\x07\x00\x00\x00\x00\x00\x00\x00", counts=[8], coding=1)
def test_any_payload_decodes_or_is_a_format_error(ans_model, payload, counts, coding):
    tok, _ = ans_model
    width = 32 * len(counts)  # one row of tiles, no overlap
    f = VtokFile(coding, tok.weights_id(), width, 32, 0, np.array(counts, dtype=np.uint8), payload, tok.prior.id())
    try:
        tokens = read_tokens(write_file(f), tok)
    except FormatError:
        return
    assert [len(t) for t in tokens.tokens] == counts
    assert all(((t >= 0) & (t < tok.codebook_size)).all() for t in tokens.tokens)


def test_a_folder_decode_goes_on_past_a_file_that_does_not_decode(ans_model, tmp_path, capsys):
    tok, folder = ans_model
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.vtok").write_bytes(encode_image(np.asarray(_photo()), tok, coding="ans", tokens=4).data)
    (src / "bad.vtok").write_bytes(_ans_file(tok, b"\x01\x00\x00\x00\x00\x00\x00\x00"))
    rc, out, err = run_cli(["decode", src, "-o", tmp_path / "out", "--model", folder], capsys)
    assert rc == 2 and "Traceback" not in err
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "bad.png").exists()
    assert "skipped" in err and "bad.vtok" in err and "1 of 2 file(s) could not be decoded" in err


# -- 2. file-system errors -------------------------------------------------------------------------------


@pytest.fixture()
def read_only(monkeypatch):
    """read_only(folder): from then on, creating anything in `folder` (or below) fails with EACCES,
    as in a read-only folder: through the calls every vtok write goes through."""
    folders: list[Path] = []

    def refused(where) -> bool:
        where = Path(os.path.abspath(where))
        return any(where == f or f in where.parents for f in folders)

    def deny(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    real_mkstemp, real_mkdtemp, real_mkdir = tempfile.mkstemp, tempfile.mkdtemp, os.mkdir

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if dir is not None and refused(dir):
            deny(Path(dir, f"{prefix}abcd1234{suffix}"))
        return real_mkstemp(suffix, prefix, dir, text)

    def mkdtemp(suffix=None, prefix=None, dir=None):
        if dir is not None and refused(dir):
            deny(Path(dir, f"{prefix}abcd1234{suffix}"))
        return real_mkdtemp(suffix, prefix, dir)

    def mkdir(path, mode=0o777, *, dir_fd=None):
        if refused(Path(path).parent):
            deny(path)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(os, "mkdir", mkdir)

    def mark(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(Path(os.path.abspath(folder)))
        return folder

    return mark


@pytest.fixture()
def unreadable(monkeypatch):
    """unreadable(path): reading `path` fails with EACCES, as a file without read permission."""
    paths: set[str] = set()
    real_read_bytes, real_read_text = Path.read_bytes, Path.read_text

    def check(self):
        if os.path.abspath(self) in paths:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(self))

    def read_bytes(self):
        check(self)
        return real_read_bytes(self)

    def read_text(self, *args, **kwargs):
        check(self)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(Path, "read_text", read_text)
    return lambda path: paths.add(os.path.abspath(path))


@pytest.fixture()
def full_disk(monkeypatch):
    """Every file write fails with ENOSPC after the file is made, as on a full device."""

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)):
            no_space(self)
        return real_save(self, fp, *args, **kwargs)  # into memory: no disk involved

    monkeypatch.setattr(Path, "write_bytes", no_space)
    monkeypatch.setattr(Path, "write_text", no_space)
    monkeypatch.setattr(Image.Image, "save", save)


@pytest.fixture()
def image_file(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    _photo().save(path)
    return path


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]


def test_encode_into_a_read_only_folder_is_one_line(tiny_model_dir, image_file, tmp_path, read_only, capsys):
    ro = read_only(tmp_path / "ro")
    rc, _, err = run_cli(
        ["encode", image_file, "-o", ro / "x.vtok", "--model", tiny_model_dir, "--tokens", "2"], capsys
    )
    assert rc == 2
    assert _one_error_line(err) == f"vtok: error: {ro / 'x.vtok'}: Permission denied"
    rc, _, err = run_cli(["encode", image_file.parent, "-o", ro / "sub", "--model", tiny_model_dir], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {ro / 'sub'}: Permission denied"


def test_decode_into_a_read_only_folder_is_one_line(ans_model, tmp_path, read_only, capsys):
    tok, folder = ans_model
    source = tmp_path / "a.vtok"
    source.write_bytes(encode_image(np.asarray(_photo()), tok, tokens=2).data)
    ro = read_only(tmp_path / "ro")
    rc, _, err = run_cli(["decode", source, "-o", ro / "a.png", "--model", folder], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {ro / 'a.png'}: Permission denied"


def test_demo_and_eval_into_a_read_only_folder_are_one_line(tiny_model_dir, photo_dirs, tmp_path, read_only, capsys):
    ro = read_only(tmp_path / "ro")
    rc, _, err = run_cli(["demo", "--model", tiny_model_dir, "--out", ro / "sheet.png"], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {ro / 'sheet.png'}: Permission denied"
    rc, out, err = run_cli(["eval", tiny_model_dir, photo_dirs[1], "--json", ro / "e" / "eval.json"], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {ro / 'e'}: Permission denied"
    assert "SSIM" in out  # the table came first


def test_train_into_a_read_only_out_dir_is_one_line(photo_dirs, tmp_path, read_only, capsys):
    ro = read_only(tmp_path / "ro")
    config = REPO / "configs" / "tiny.yaml"
    argv = ["train", config, f"data.train_dir={photo_dirs[0]}", f"out_dir={ro / 'run'}", "optim.steps=1"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and "Traceback" not in err
    assert _one_error_line(err) == f"vtok: error: {ro / 'run'}: Permission denied"


def test_prior_into_a_read_only_folder_is_one_line(tiny_model_dir, photo_dirs, tmp_path, read_only, capsys):
    ro = read_only(tmp_path / "ro")
    rc, _, err = run_cli(["prior", tiny_model_dir, photo_dirs[1], "--crops", "1", "--out", ro / "model"], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {ro / 'model'}: Permission denied"


def test_an_unreadable_vtok_file_is_one_line_and_skipped_in_a_folder(ans_model, tmp_path, unreadable, capsys):
    tok, folder = ans_model
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        (src / f"{name}.vtok").write_bytes(encode_image(np.asarray(_photo()), tok, tokens=2).data)
    unreadable(src / "a.vtok")
    rc, _, err = run_cli(["decode", src / "a.vtok", "-o", tmp_path / "a.png", "--model", folder], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {src / 'a.vtok'}: Permission denied"
    rc, _, err = run_cli(["decode", src, "-o", tmp_path / "out", "--model", folder], capsys)
    assert rc == 2 and "Traceback" not in err and f"skipped {src / 'a.vtok'}: Permission denied" in err
    assert (tmp_path / "out" / "b.png").is_file()
    with pytest.raises(FormatError, match="Permission denied"):
        decompress(src / "a.vtok", folder)


def test_an_unreadable_config_is_a_model_load_error(tiny_model_dir, tmp_path, unreadable, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    unreadable(folder / "config.json")
    with pytest.raises(vtok.ModelLoadError, match="Permission denied"):
        vtok.load(folder)
    rc, _, err = run_cli(["demo", "--model", folder, "--out", tmp_path / "s.png"], capsys)
    assert rc == 2 and "config.json: Permission denied" in _one_error_line(err)


def test_an_output_under_a_regular_file_is_one_line(tiny_model_dir, image_file, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    rc, _, err = run_cli(["encode", image_file.parent, "-o", blocker / "out", "--model", tiny_model_dir], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {blocker / 'out'}: Not a directory"
    rc, _, err = run_cli(["demo", "--model", tiny_model_dir, "--out", blocker / "sheet.png"], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {blocker}: File exists"  # made as a folder
    with pytest.raises(OSError, match="file.txt"):
        vtok.load(tiny_model_dir).save_pretrained(blocker / "model")


def test_a_full_disk_is_one_line_and_leaves_no_files(ans_model, image_file, tmp_path, full_disk, capsys):
    tok, folder = ans_model
    rc, _, err = run_cli(["encode", image_file, "-o", tmp_path / "x.vtok", "--model", folder, "--tokens", "2"], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {tmp_path / 'x.vtok'}: No space left on device"
    source = tmp_path / "a.vtok"
    with open(source, "wb") as f:  # Path.write_bytes is what the full disk refuses
        f.write(encode_image(np.asarray(_photo()), tok, tokens=2).data)
    rc, _, err = run_cli(["decode", source, "-o", tmp_path / "a.png", "--model", folder], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {tmp_path / 'a.png'}: No space left on device"
    rc, _, err = run_cli(["demo", "--model", folder, "--out", tmp_path / "sheet.png"], capsys)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {tmp_path / 'sheet.png'}: No space left on device"
    assert not (tmp_path / "x.vtok").exists() and not (tmp_path / "a.png").exists()
    assert _no_temp_files(tmp_path)


def test_main_turns_any_os_error_into_one_line(monkeypatch, capsys):
    def broken():
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/some/file")

    monkeypatch.setattr("vtok.registry.list_tokenizers", broken)
    rc, _, err = run_cli(["list"], capsys)
    assert rc == 2 and _one_error_line(err) == "vtok: error: /some/file: Input/output error"


def test_a_file_name_that_is_not_utf8_does_not_stop_a_folder_run(tiny_model_dir, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes on disk: a surrogate in Python's str
    try:
        _photo().save(src / odd)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    _photo(index=2).save(src / "plain.png")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    from vtok.cli import main

    rc = main(["encode", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--tokens", "2"])
    stdout.flush()
    text = stdout.buffer.getvalue().decode("utf-8")
    assert rc == 0
    assert (tmp_path / "out" / "plain.vtok").is_file() and (tmp_path / "out" / os.fsdecode(b"caf\xe9.vtok")).is_file()
    assert "caf\\udce9.png" in text and "plain.png" in text


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root is not stopped by permissions")
def test_a_really_read_only_folder(tiny_model_dir, image_file, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, _, err = run_cli(["encode", image_file, "-o", ro / "x.vtok", "--model", tiny_model_dir], capsys)
    finally:
        ro.chmod(0o755)
    assert rc == 2 and _one_error_line(err) == f"vtok: error: {ro / 'x.vtok'}: Permission denied"


# -- 3. tampered model folders ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_meta(tiny_model_dir) -> dict:
    return json.loads((tiny_model_dir / "config.json").read_text())


def _tampered(tiny_model_dir, folder: Path, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.safetensors").exists():
        shutil.copy(tiny_model_dir / "model.safetensors", folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture()
def nothing_built(monkeypatch):
    """Fail the test if any model is constructed: a refused config must be refused before that."""

    def refuse(config):
        raise AssertionError(f"a model was built from {config}")

    for name, (config_cls, _) in list(ARCHITECTURES.items()):
        monkeypatch.setitem(ARCHITECTURES, name, (config_cls, refuse))


TAMPERED = [
    {"heads": 0},
    {"heads": -2},
    {"patch": 0},
    {"image_size": 0},
    {"image_size": -32},
    {"image_size": 36},  # not a multiple of patch * 2**(stages - 1)
    {"image_size": 1 << 20},
    {"channels": []},
    {"channels": [16, -32]},
    {"channels": [16] * 9},
    {"channels": "16"},
    {"num_tokens": -1},
    {"num_tokens": 0},
    {"num_tokens": 10**9},
    {"num_tokens": 2 * 10**6},
    {"encoder_depth": 10**5},
    {"decoder_depth": -1},
    {"blocks_per_stage": 10**4},
    {"width": 30, "heads": 4},  # not divisible
    {"width": "32"},
    {"width": 32.0},
    {"width": True},
    {"width": 8192, "encoder_depth": 256},  # in range, but about 2e11 parameters
    {"norm": "batch"},
    {"quantizer": {"name": 5}},
    {"quantizer": {"name": ["fsq"]}},
    {"quantizer": {"levels": [8, 5]}},
]


@pytest.mark.parametrize("change", TAMPERED, ids=[json.dumps(c)[:40] for c in TAMPERED])
def test_a_tampered_config_is_refused_before_any_model_is_built(
    tiny_model_dir, tiny_meta, tmp_path, change, nothing_built
):
    meta = {**tiny_meta, "config": {**tiny_meta["config"], **change}}
    with pytest.raises(vtok.ModelLoadError) as info:
        vtok.load(_tampered(tiny_model_dir, tmp_path / "m", meta))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "quantizer",
    [
        {"name": "fsq", "levels": [1 << 20] * 3},
        {"name": "fsq", "levels": [65536] * 16},
        {"name": "fsq", "levels": []},
        {"name": "vq", "codebook_size": 10**9, "dim": 8},
        {"name": "vq", "codebook_size": 4096, "dim": 10**6},
        {"name": "vq", "codebook_size": 1 << 20, "dim": 1024},
    ],
)
def test_a_quantizer_too_large_is_refused_before_it_is_allocated(tiny_model_dir, tiny_meta, tmp_path, quantizer):
    meta = {**tiny_meta, "config": {**tiny_meta["config"], "quantizer": quantizer}}
    with pytest.raises(vtok.ModelLoadError, match="quantizer"):
        vtok.load(_tampered(tiny_model_dir, tmp_path / "m", meta))


def test_a_legacy_config_with_tampered_levels_is_refused(tiny_model_dir, tiny_meta, tmp_path):
    config = {k: v for k, v in tiny_meta["config"].items() if k != "quantizer"}
    meta = {**tiny_meta, "config": {**config, "quantizer": "fsq", "fsq_levels": 5}}
    with pytest.raises(vtok.ModelLoadError, match="fsq_levels"):
        vtok.load(_tampered(tiny_model_dir, tmp_path / "m", meta))


@pytest.mark.parametrize(
    "change",
    [{"name": 5}, {"name": ["a"]}, {"architecture": 3}, {"config": [1]}],
    ids=["int-name", "list-name", "int-architecture", "list-config"],
)
def test_tampered_top_level_fields_are_refused(tiny_model_dir, tiny_meta, tmp_path, change):
    with pytest.raises(vtok.ModelLoadError):
        vtok.load(_tampered(tiny_model_dir, tmp_path / "m", {**tiny_meta, **change}))


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_refused(tiny_model_dir, tmp_path, depth):
    folder = _tampered(tiny_model_dir, tmp_path / "m", {})
    (folder / "config.json").write_text("[" * depth + "]" * depth)
    with pytest.raises(vtok.ModelLoadError, match="nested too deeply"):
        vtok.load(folder)


def test_a_huge_config_or_number_is_refused(tiny_model_dir, tiny_meta, tmp_path):
    folder = _tampered(tiny_model_dir, tmp_path / "m", {**tiny_meta, "notes": "x" * (2 << 20)})
    with pytest.raises(vtok.ModelLoadError, match="too large"):
        vtok.load(folder)
    text = json.dumps(tiny_meta).replace('"num_tokens": 8', '"num_tokens": 1' + "0" * 5000)
    (folder / "config.json").write_text(text)
    with pytest.raises(vtok.ModelLoadError):
        vtok.load(folder)


_BAD_VALUES = st.one_of(
    st.integers(-(10**12), 0),
    st.integers(10**5, 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
)


@pytest.fixture(scope="module")
def scratch_model(tiny_model_dir, tmp_path_factory) -> Path:
    return _tampered(tiny_model_dir, tmp_path_factory.mktemp("scratch") / "m", {})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(variant_config("ordered1d-tiny")[1])), value=_BAD_VALUES)
def test_any_tampered_value_loads_or_is_a_model_load_error(tiny_model_dir, tiny_meta, scratch_model, key, value):
    meta = {**tiny_meta, "config": {**tiny_meta["config"], key: value}}
    _tampered(tiny_model_dir, scratch_model, meta)
    try:
        tok = vtok.load(scratch_model)
    except vtok.ModelLoadError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(tok, vtok.Tokenizer)


def test_weights_with_nan_are_refused_naming_the_tensor(tiny_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    state["grid_pos"][0, 0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(vtok.ModelLoadError, match="grid_pos"):
        vtok.load(folder)


def test_the_shipped_default_and_a_copy_of_its_legacy_config_still_load(tmp_path):
    """Configs written before quantizers had their own section still load, and validate."""
    shipped = vtok.load("default")
    source = Path(vtok.__file__).parent / "weights" / "default"
    copy = tmp_path / "default-copy"
    shutil.copytree(source, copy)
    meta = json.loads((source / "config.json").read_text())
    levels = meta["config"].pop("quantizer")["levels"]
    meta["config"].update(quantizer="fsq", fsq_levels=levels, vq_codebook_size=4096, vq_dim=8)
    (copy / "config.json").write_text(json.dumps(meta))
    again = vtok.load(copy)
    assert again.weights_id() == shipped.weights_id() and again.num_tokens == 64
    assert again.model.config.quantizer == {"name": "fsq", "levels": levels}


def test_the_size_estimate_matches_every_registered_variant():
    for name in vtok.list_tokenizers():
        architecture, config = variant_config(name)
        settings_ = ARCHITECTURES[architecture][0](**config)
        real = sum(p.numel() for p in vtok.create_tokenizer(name).model.parameters())
        assert abs(settings_.estimated_parameters() - real) <= 0.02 * real, name


def test_create_tokenizer_checks_overrides_the_same_way():
    with pytest.raises(vtok.ConfigError, match="heads"):
        vtok.create_tokenizer("ordered1d-tiny", heads=0)
    with pytest.raises(vtok.ConfigError, match="num_tokens"):
        vtok.create_tokenizer("ordered1d-tiny", num_tokens=10**9)


# -- 4. exports that are whole or absent -----------------------------------------------------------------


def _two_tokenizers() -> tuple[vtok.Tokenizer, vtok.Tokenizer]:
    torch.manual_seed(0)
    a = vtok.create_tokenizer("ordered1d-tiny")
    torch.manual_seed(1)
    b = vtok.create_tokenizer("ordered1d-tiny")
    b.name = "b"
    return a, b


def _fail_on(monkeypatch, name: str, error: BaseException) -> None:
    """Writing a file called `name` (or a temporary file for it), by whatever Path method, raises `error`."""
    for method in ("write_bytes", "write_text"):
        real = getattr(Path, method)

        def fake(self, *args, _real=real, **kwargs):
            if self.name == name or self.name.startswith(f".{name}."):
                raise error
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, fake)


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["full-disk", "interrupted"],
)
def test_an_export_that_fails_half_way_leaves_the_old_folder_whole(tmp_path, monkeypatch, error):
    a, b = _two_tokenizers()
    a.prior = _uniform_prior(a)
    folder = a.save_pretrained(tmp_path / "model")
    _fail_on(monkeypatch, "config.json", error)
    with pytest.raises(type(error)):
        b.save_pretrained(folder)
    monkeypatch.undo()
    loaded = vtok.load(folder)
    assert loaded.weights_id() == a.weights_id() and loaded.prior is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


def test_an_export_replaces_the_whole_folder(tmp_path, monkeypatch):
    a, b = _two_tokenizers()
    a.prior = _uniform_prior(a)
    folder = a.save_pretrained(tmp_path / "model")
    (folder / "README.md").write_text("# my model card\n")
    for swap in ("exchange", "two renames"):
        if swap == "two renames":
            monkeypatch.setattr(files, "_exchange", lambda new, path: False)
        b.save_pretrained(folder)
        loaded = vtok.load(folder)
        assert loaded.weights_id() == b.weights_id() and loaded.name == "b"
        assert loaded.prior is None  # a prior fitted for a's weights does not stay beside b's
        assert (folder / "README.md").read_text() == "# my model card\n"  # other files are kept
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_export_into_the_working_directory_or_through_a_link(tmp_path, monkeypatch):
    a, b = _two_tokenizers()
    folder = a.save_pretrained(tmp_path / "model")
    monkeypatch.chdir(folder)
    b.save_pretrained(".")
    assert Path.cwd() == folder and vtok.load("./").weights_id() == b.weights_id()
    (folder / "notes").mkdir()
    monkeypatch.chdir(folder / "notes")  # inside it: renaming the folder would strand the process too
    a.save_pretrained(folder)
    assert Path.cwd().is_dir() and vtok.load(folder).weights_id() == a.weights_id()
    link = tmp_path / "link"
    link.symlink_to(folder)
    a.save_pretrained(link)
    assert link.is_symlink() and vtok.load(folder).weights_id() == a.weights_id()


def _leftover(path: Path, age_s: float, folder: bool = False) -> Path:
    if folder:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"half")
        os.utime(path / "model.safetensors", (time.time() - age_s,) * 2)
    else:
        path.write_bytes(b"half")
    os.utime(path, (time.time() - age_s,) * 2)
    return path


def test_temporary_siblings_left_by_a_kill_are_removed_on_the_next_write(tmp_path, monkeypatch):
    a, _ = _two_tokenizers()
    stale = [
        _leftover(tmp_path / ".model.k1ll3d_x.tmp", 120, folder=True),
        _leftover(tmp_path / ".x.vtok.abc_1234.tmp", 120),
    ]
    fresh = _leftover(tmp_path / ".model.w0rk1ng_.tmp", 5, folder=True)  # maybe a writer still at work
    other = _leftover(tmp_path / ".y.vtok.abc_1234.tmp", 120)  # another target's: not touched
    monkeypatch.setattr(files, "_leftovers", {})  # as in a new process (a kill ends the old one)
    a.save_pretrained(tmp_path / "model")
    files.write_atomic(tmp_path / "x.vtok", b"data")
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and other.exists()
    assert (tmp_path / "x.vtok").read_bytes() == b"data"


def test_a_very_wide_file_decodes_in_strips_of_bounded_width(tiny, monkeypatch):
    """Memory must not grow with the width: blending works on strips of at most STRIP_WIDTH
    columns, and `vtok decode`'s PNG of an image wider than one strip goes through a spool file.
    The pixels are those of the whole-image decode."""
    import io
    import sys

    from vtok.codec import tiling
    from vtok.codec.format import VtokFile, write_file

    compress_module = sys.modules["vtok.codec.compress"]
    monkeypatch.setattr(tiling, "STRIP_WIDTH", 200)  # several strips without a huge test file
    layout = tiling.TileLayout(1000, 40, tiny.image_size, 8)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, tiny.codebook_size, (layout.count, tiny.num_tokens))
    counts = rng.integers(1, tiny.num_tokens + 1, layout.count)
    from vtok.codec.entropy import pack_tokens

    data = write_file(
        VtokFile(0, tiny.weights_id(), 1000, 40, 8, counts, pack_tokens(tokens, counts, tiny.codebook_size)),
        tile=tiny.image_size,
    )
    widths = []
    real_blend = compress_module.blend_bands
    monkeypatch.setattr(
        compress_module,
        "blend_bands",
        lambda rows, lay, strip=None: widths.append(strip.x1 - strip.x0) or real_blend(rows, lay, strip),
    )
    monkeypatch.setattr(compress_module, "strips", lambda lay: tiling.strips(lay, 200))
    image, _ = compress_module.decode_file(data, tiny)
    assert len(widths) > 3 and max(widths) <= 200
    png, _ = compress_module.decode_to_png(data, tiny)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), image)
    monkeypatch.setattr(compress_module, "strips", lambda lay: tiling.strips(lay, 10**9))
    whole, _ = compress_module.decode_file(data, tiny)
    assert np.array_equal(whole, image)
