"""Hugging Face conventions: from_pretrained(name | folder | hub id) and push_to_hub, all offline; token LMs load alike.

The Hub is never contacted: hub ids resolve through a Hugging Face cache laid out by the test
(HF_HUB_CACHE + HF_HUB_OFFLINE=1), and HfApi is replaced by a recorder for pushes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

import vtok
import vtok.lm as vlm
from vtok.hub import HUB_FILES, parse_hub_id

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture()
def batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 3, 32, 32)


def _same_model(a: vtok.Tokenizer, b: vtok.Tokenizer, batch: torch.Tensor) -> bool:
    return torch.equal(a.encode(batch), b.encode(batch))


def _fake_hub_cache(root: Path, repo_id: str, snapshots: dict[str, Path], refs: dict[str, str]) -> Path:
    """The layout huggingface_hub keeps on disk: models--user--repo/{snapshots/<sha>/..., refs/<name>}."""
    storage = root / f"models--{repo_id.replace('/', '--')}"
    for sha, folder in snapshots.items():
        shutil.copytree(folder, storage / "snapshots" / sha)
    (storage / "refs").mkdir(parents=True)
    for name, sha in refs.items():
        (storage / "refs" / name).write_text(sha)
    return root


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path):
    """Point huggingface_hub at an empty cache under tmp_path with the network switched off."""
    constants = pytest.importorskip("huggingface_hub.constants", reason="the 'hub' extra (in 'dev') is not installed")
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once, at import; it may already be imported by now.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture()
def no_hub_package(monkeypatch):
    """Make ``import huggingface_hub`` fail, as when the 'hub' extra is not installed."""
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("user/repo", ("user/repo", None)),
        ("user/repo@main", ("user/repo", "main")),
        (f"some-org/vtok_small.v2@{SHA}", ("some-org/vtok_small.v2", SHA)),
        ("user/repo@refs/pr/1", ("user/repo", "refs/pr/1")),
        ("default", None),
        ("a/b/c", None),
        ("/abs/path", None),
        ("./rel/path", None),
        ("../up", None),
        ("user/", None),
        ("user/repo@", None),
        ("user/re..po", None),
        ("user/-repo", None),
        ("user name/repo", None),
    ],
)
def test_parse_hub_id(text, parsed):
    assert parse_hub_id(text) == parsed


# -- (a) local folders and shipped names --------------------------------------------------


def test_from_pretrained_local_folder(tiny, tmp_path, batch, no_hub_package):
    folder = tiny.save_pretrained(tmp_path / "saved")
    for spec in (folder, str(folder)):
        assert _same_model(vtok.Tokenizer.from_pretrained(spec), tiny, batch)


def test_local_folder_wins_over_hub_id(tiny, tmp_path, monkeypatch, batch, no_hub_package):
    """A relative folder spelled like a Hub id loads from disk; the Hub is not consulted."""
    tiny.save_pretrained(tmp_path / "user" / "repo")
    monkeypatch.chdir(tmp_path)
    assert _same_model(vtok.load("user/repo"), tiny, batch)


def test_shipped_name_needs_no_hub(no_hub_package):
    assert vtok.Tokenizer.from_pretrained("default").num_tokens == 64


# -- (b) hub ids through a Hugging Face cache ---------------------------------------------


def test_hub_id_resolves_through_the_hf_cache(tiny, tmp_path, offline_hub, batch):
    torch.manual_seed(5)
    other = vtok.create_tokenizer("ordered1d-tiny")
    main_dir, old_dir = tiny.save_pretrained(tmp_path / "main"), other.save_pretrained(tmp_path / "old")
    (main_dir / "pytorch_model.bin").write_bytes(b"a pickle vtok must never read")
    _fake_hub_cache(offline_hub, "user/repo", {SHA: main_dir, OTHER_SHA: old_dir}, {"main": SHA, "v1": OTHER_SHA})

    assert _same_model(vtok.Tokenizer.from_pretrained("user/repo"), tiny, batch)
    assert _same_model(vtok.load("user/repo@main"), tiny, batch)
    assert _same_model(vtok.load("user/repo@v1"), other, batch)
    assert _same_model(vtok.load(f"user/repo@{OTHER_SHA}"), other, batch)
    assert not _same_model(tiny, other, batch)


def test_hub_id_not_in_cache_offline_is_one_line_model_load_error(offline_hub):
    with pytest.raises(vtok.ModelLoadError) as info:
        vtok.load("user/absent")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("user/absent: no such local folder")
    assert "loading it from the Hugging Face Hub failed" in message and "network" in message


def test_hub_repo_without_safetensors_is_refused(tiny, tmp_path, offline_hub):
    """A repository with pickled weights only is not loaded: vtok reads safetensors, never pickles."""
    folder = tiny.save_pretrained(tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    torch.save(tiny.model.state_dict(), folder / "pytorch_model.bin")
    _fake_hub_cache(offline_hub, "user/pickled", {SHA: folder}, {"main": SHA})
    with pytest.raises(vtok.ModelLoadError, match="no model.safetensors.*never pickled"):
        vtok.load("user/pickled")


def test_hub_id_without_the_extra_names_the_pip_command(no_hub_package):
    with pytest.raises(vtok.OptionalDependencyError) as info:
        vtok.load("user/not-here")
    message = str(info.value)
    assert "\n" not in message
    assert "'user/not-here' was not found as a local folder" in message
    assert "Hugging Face Hub" in message
    assert "pip install 'vtok[hub]'" in message


@pytest.mark.parametrize("spec", ["no-such-model", "a/b/c", "./not/here", "user/repo@"])
def test_neither_name_folder_nor_hub_id(spec, no_hub_package):
    with pytest.raises(vtok.ModelLoadError) as info:
        vtok.load(spec)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{spec}: neither a model folder, a shipped model")
    assert "Hugging Face Hub id" in message


def test_a_file_is_not_a_model_folder(tmp_path, no_hub_package):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(vtok.ModelLoadError, match="a file, not a model folder"):
        vtok.load(tmp_path / "model.safetensors")


# -- (b') token LMs resolve the same way -----------------------------------------------------


def _small_lm(seed: int) -> vlm.TokenLM:
    torch.manual_seed(seed)
    return vlm.create_lm("lm-tiny", [2, 3], 3).eval()


def test_lm_hub_id_resolves_through_the_hf_cache(tmp_path, offline_hub, monkeypatch):
    """vtok.lm.load("user/repo[@rev]") goes through the same download as tokenizers (HF cache, offline)."""
    import vtok.hub

    main, old = _small_lm(0), _small_lm(1)
    main_dir, old_dir = vlm.save_pretrained(main, tmp_path / "main"), vlm.save_pretrained(old, tmp_path / "old")
    (main_dir / "pytorch_model.bin").write_bytes(b"a pickle vtok must never read")
    _fake_hub_cache(offline_hub, "user/lm", {SHA: main_dir, OTHER_SHA: old_dir}, {"main": SHA, "v1": OTHER_SHA})
    asked: list[tuple[str, str]] = []
    real_download = vtok.hub.download

    def recording_download(hub_id, what="tokenizer"):
        asked.append((hub_id, what))
        return real_download(hub_id, what)

    monkeypatch.setattr(vtok.hub, "download", recording_download)

    tokens = torch.tensor([[0, 5, 2], [4, 1, 3]])
    assert torch.equal(vlm.load("user/lm").log_prob(tokens), main.log_prob(tokens))
    assert vlm.lm_id(vlm.load("user/lm@main")) == vlm.lm_id(main)
    assert vlm.lm_id(vlm.load("user/lm@v1")) == vlm.lm_id(old) != vlm.lm_id(main)
    assert vlm.lm_id(vlm.load(f"user/lm@{OTHER_SHA}")) == vlm.lm_id(old)
    assert asked == [(spec, "token LM") for spec in ("user/lm", "user/lm@main", "user/lm@v1", f"user/lm@{OTHER_SHA}")]


def test_lm_local_folder_wins_over_hub_id(tmp_path, monkeypatch, no_hub_package):
    model = _small_lm(0)
    vlm.save_pretrained(model, tmp_path / "user" / "lm")
    monkeypatch.chdir(tmp_path)
    assert vlm.lm_id(vlm.load("user/lm")) == vlm.lm_id(model)


def test_lm_hub_repo_without_safetensors_is_refused(tmp_path, offline_hub):
    folder = vlm.save_pretrained(_small_lm(0), tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    _fake_hub_cache(offline_hub, "user/pickled-lm", {SHA: folder}, {"main": SHA})
    with pytest.raises(vtok.ModelLoadError, match="no model.safetensors; it is not a vtok token LM.*never pickled"):
        vlm.load("user/pickled-lm")


def test_lm_hub_id_offline_and_without_the_extra(offline_hub, monkeypatch):
    with pytest.raises(vtok.ModelLoadError) as info:
        vlm.load("user/absent")
    assert str(info.value).startswith("user/absent: no such local folder") and "\n" not in str(info.value)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(vtok.OptionalDependencyError, match=r"pip install 'vtok\[hub\]'"):
        vlm.load("user/absent")


# -- (c) push_to_hub ------------------------------------------------------------------------


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records calls and copies what would be uploaded."""

    calls: list[tuple[str, dict]] = []
    uploaded: Path

    def __init__(self, token=None, **kwargs):
        self.calls.append(("init", {"token": token, **kwargs}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", {"repo_id": repo_id, "folder_path": folder_path, **kwargs}))
        shutil.copytree(folder_path, self.uploaded)  # the temporary folder is gone after the call
        return f"https://huggingface.co/{repo_id}/commit/{SHA}"


@pytest.fixture()
def recording_api(monkeypatch, tmp_path):
    hf = pytest.importorskip("huggingface_hub", reason="the 'hub' extra (in 'dev') is not installed")
    monkeypatch.setattr(RecordingHfApi, "calls", [])
    monkeypatch.setattr(RecordingHfApi, "uploaded", tmp_path / "uploaded", raising=False)
    monkeypatch.setattr(hf, "HfApi", RecordingHfApi)
    return RecordingHfApi


def test_push_to_hub_uploads_safetensors_config_and_card(tiny, recording_api, batch):
    url = tiny.push_to_hub("user/my-tokenizer", private=True, token="hf_test")

    assert url == f"https://huggingface.co/user/my-tokenizer/commit/{SHA}"
    kinds = [kind for kind, _ in recording_api.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    init, create, upload = (kwargs for _, kwargs in recording_api.calls)
    assert init["token"] == "hf_test"
    assert create["repo_id"] == "user/my-tokenizer" and create["exist_ok"] is True and create["private"] is True
    assert upload["repo_id"] == "user/my-tokenizer"
    assert set(upload["allow_patterns"]) == set(HUB_FILES)
    assert not Path(upload["folder_path"]).exists()  # a temporary folder, cleaned up

    uploaded = recording_api.uploaded
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (uploaded / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vtok\n")
    assert 'vtok.load("user/my-tokenizer")' in card
    assert _same_model(vtok.load(uploaded), tiny, batch)  # what was pushed loads back


def test_push_to_hub_carries_the_prior_and_a_given_card(recording_api):
    tok = vtok.load("default")
    tok.push_to_hub("user/default-copy", model_card="# my card\n", commit_message="first", revision="dev")
    _, upload = recording_api.calls[-1]
    assert upload["commit_message"] == "first" and upload["revision"] == "dev"
    uploaded = recording_api.uploaded
    assert (uploaded / "prior.safetensors").is_file()
    assert (uploaded / "README.md").read_text() == "# my card\n"
    assert vtok.load(uploaded).prior is not None


@pytest.mark.parametrize("repo_id", ["no-slash", "user/repo@main", "a/b/c"])
def test_push_to_hub_refuses_bad_repo_ids(tiny, repo_id, recording_api):
    with pytest.raises(vtok.ConfigError, match="not a Hugging Face Hub repository id"):
        tiny.push_to_hub(repo_id)
    assert recording_api.calls == []


def test_push_to_hub_without_the_extra_names_the_pip_command(tiny, no_hub_package):
    with pytest.raises(vtok.OptionalDependencyError, match=r"pip install 'vtok\[hub\]'"):
        tiny.push_to_hub("user/repo")
