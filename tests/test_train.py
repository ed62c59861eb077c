import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vtok
from vtok.train import Trainer, load_config
from vtok.train.trainer import sample_prefix_lengths

REPO = Path(__file__).resolve().parents[1]


def _cfg(photo_dirs, out, *extra):
    train, val = photo_dirs
    return load_config(
        REPO / "configs" / "tiny.yaml",
        [f"data.train_dir={train}", f"data.val_dir={val}", f"out_dir={out}", "threads=1", *extra],
    )


def test_config_layers_and_rejects_unknown_keys(tmp_path):
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["optim.steps=7", "model.overrides.num_tokens=4"])
    assert cfg.optim.steps == 7 and cfg.optim.batch_size == 8 and cfg.model.overrides == {"num_tokens": 4}
    assert cfg.loss.ssim == 0.2  # default kept where the file says nothing
    with pytest.raises(vtok.ConfigError, match="stpes"):
        load_config(None, ["optim.stpes=3"])
    with pytest.raises(vtok.ConfigError, match="number"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(vtok.ConfigError, match="key=value"):
        load_config(None, ["optim.steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(vtok.ConfigError, match="YAML"):
        load_config(bad)
    with pytest.raises(vtok.ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")


def test_prefix_lengths_cover_short_and_full():
    k = sample_prefix_lengths(4000, 64, 0.25, torch.Generator().manual_seed(0))
    assert k.min() == 1 and k.max() == 64
    assert 0.2 < (k == 64).float().mean() < 0.3
    assert (k <= 4).float().mean() > 0.2  # short prefixes are trained often


@pytest.mark.slow
def test_real_training_lowers_loss_and_raises_psnr(photo_dirs, tmp_path):
    cfg = _cfg(
        photo_dirs,
        tmp_path / "run",
        "optim.steps=200",
        "optim.batch_size=16",
        "optim.lr=3e-3",
        "eval_every=40",
        "log_every=20",
    )
    folder = Trainer(cfg).fit()
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    # Each batch draws its own prefix lengths, so compare averages of several logged steps.
    mean = lambda rs, key: sum(float(r[key]) for r in rs) / len(rs)  # noqa: E731
    assert mean(rows[-3:], "loss") < 0.9 * mean(rows[:3], "loss")
    assert mean(rows[-3:], "psnr") > mean(rows[:3], "psnr") + 1.0
    evals = list(csv.DictReader((tmp_path / "run" / "eval.csv").open()))
    assert float(evals[-1]["psnr_k8"]) > float(evals[0]["psnr_k8"]) + 0.3  # held-out photo improves too
    tok = vtok.load(folder)
    assert tok.num_tokens == 8
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert sorted((tmp_path / "run" / "samples").glob("*.png"))


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(photo_dirs, tmp_path):
    steps = ["optim.steps=400", "checkpoint_every=10", "eval_every=1000", "optim.batch_size=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vtok", "train", str(REPO / "configs" / "tiny.yaml"), "threads=1", "data.val_dir=null"]
    run = lambda out, *extra: cmd + [f"data.train_dir={photo_dirs[0]}", f"out_dir={out}", *steps, *extra]  # noqa: E731

    killed = tmp_path / "killed"
    proc = subprocess.Popen(run(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert 0 < state["step"] < 400, "the run finished before it could be killed; raise optim.steps"
    subprocess.run(run(killed, "--resume"), env=env, check=True, capture_output=True)

    straight = tmp_path / "straight"
    subprocess.run(run(straight), env=env, check=True, capture_output=True)
    a = load_file(killed / "model" / "model.safetensors")
    b = load_file(straight / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


@pytest.mark.slow
def test_unreadable_training_files_are_skipped_and_counted(photo_dirs, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    for p in sorted(photo_dirs[0].rglob("*.jpg"))[:3]:
        (train / p.name).write_bytes(p.read_bytes())
    (train / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = load_config(
        REPO / "configs" / "tiny.yaml", [f"data.train_dir={train}", f"out_dir={tmp_path / 'r'}", "optim.steps=2"]
    )
    trainer = Trainer(cfg)
    assert len(trainer.train_files) == 3 and len(trainer.unreadable) == 1
    # A file whose header reads but whose data is cut short fails later, while training: counted too.
    good = sorted(train.glob("*.jpg"))[0]
    good.write_bytes(good.read_bytes()[:400])
    trainer = Trainer(cfg)
    trainer.fit()
    assert any(good.name in p for p in trainer.unreadable)


def test_empty_training_folder_is_a_clear_error(tmp_path):
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"data.train_dir={tmp_path}", f"out_dir={tmp_path / 'r'}"])
    with pytest.raises(vtok.ImageError, match="no readable images"):
        Trainer(cfg)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(photo_dirs, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "vtok", "train", str(REPO / "configs" / "tiny.yaml"),
        f"data.train_dir={photo_dirs[0]}", f"out_dir={out}", "optim.steps=12", "threads=1",
        "model.overrides.quantizer={name: vq, codebook_size: 64, dim: 4}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    tok = vtok.load(out / "model")
    assert tok.codebook_size == 64
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert int(rows[-1]["step"]) == 12
    assert float(rows[-1]["images_per_s"]) > 0


def test_decoder_only_training_keeps_every_token(photo_dirs, tmp_path):
    first = Trainer(_cfg(photo_dirs, tmp_path / "a", "optim.steps=3", "optim.batch_size=4")).fit()
    cfg = _cfg(
        photo_dirs,
        tmp_path / "b",
        "optim.steps=12",
        "optim.batch_size=4",
        "optim.lr=3e-3",
        f"model.init_from={first}",
        "model.trainable=decoder",
    )
    second = Trainer(cfg).fit()
    before, after = vtok.load(first), vtok.load(second)
    images = torch.rand(6, 3, 32, 32)
    assert torch.equal(before.encode(images), after.encode(images))
    old, new = before.model.state_dict(), after.model.state_dict()
    moved = {name for name in old if not torch.equal(old[name], new[name])}
    assert moved and not any(name.split(".")[0] in after.model.encoder_parts for name in moved)
    assert any(name.startswith("decoder.") for name in moved)
    with pytest.raises(vtok.ConfigError, match="init_from"):
        Trainer(_cfg(photo_dirs, tmp_path / "c", "model.trainable=decoder"))
    with pytest.raises(vtok.ConfigError, match="trainable"):
        Trainer(_cfg(photo_dirs, tmp_path / "d", "model.trainable=encoder"))


def test_a_pixel_refinement_grows_on_weights_made_without_it(photo_dirs, tmp_path):
    """model.overrides.refine adds blocks.PixelRefine: warm-started from weights without it, the
    model decodes exactly as they did until trained; then only the decoder side moves."""
    first = Trainer(_cfg(photo_dirs, tmp_path / "a", "optim.steps=3", "optim.batch_size=4")).fit()
    grown = _cfg(photo_dirs, tmp_path / "b", "optim.steps=10", "optim.batch_size=4", "optim.lr=3e-3",
                 f"model.init_from={first}", "model.trainable=decoder", "model.overrides.refine=8")  # fmt: skip
    trainer = Trainer(grown)
    before = vtok.load(first)
    images = torch.rand(4, 3, 32, 32)
    tokens = before.encode(images)
    with torch.no_grad():
        assert torch.equal(trainer.model.decode(tokens), before.model.decode(tokens))
    after = vtok.load(trainer.fit())
    assert after.model.config.refine == 8 and after.model.head.refine is not None
    assert torch.equal(after.encode(images), tokens)
    refine = after.model.state_dict()["head.refine.conv_out.weight"]
    assert refine.abs().sum() > 0  # it trained
    assert not torch.allclose(after.decode(tokens), before.decode(tokens))
    with pytest.raises(vtok.ConfigError, match="init_from"):  # only parts that start as the identity may be missing
        Trainer(_cfg(photo_dirs, tmp_path / "c", f"model.init_from={first}", "model.overrides.width=48"))


def test_a_deeper_decoder_grows_on_weights_made_without_it(photo_dirs, tmp_path):
    """model.overrides.decoder_depth past the source's: the new transformer blocks start as zero
    residuals, so the grown model decodes exactly as the source until trained, then they learn."""
    first = Trainer(_cfg(photo_dirs, tmp_path / "a", "optim.steps=3", "optim.batch_size=4")).fit()
    before = vtok.load(first)
    depth = before.model.config.decoder_depth
    grown = _cfg(photo_dirs, tmp_path / "b", "optim.steps=6", "optim.batch_size=4", "optim.lr=3e-3",
                 f"model.init_from={first}", f"model.overrides.decoder_depth={depth + 2}")  # fmt: skip
    trainer = Trainer(grown)
    images = torch.rand(4, 3, 32, 32)
    tokens = before.encode(images)
    with torch.no_grad():
        assert torch.equal(trainer.model.encode_latents(images * 2 - 1), before.model.encode_latents(images * 2 - 1))
        assert torch.allclose(trainer.model.decode(tokens), before.model.decode(tokens), atol=1e-6)
    folder = trainer.fit()
    after = vtok.load(folder)
    assert after.model.config.decoder_depth == depth + 2
    assert after.model.state_dict()[f"decoder.blocks.{depth + 1}.mlp.2.weight"].abs().sum() > 0  # it trained
    with pytest.raises(vtok.ConfigError, match="init_from"):  # a shallower model cannot drop trained blocks
        Trainer(_cfg(photo_dirs, tmp_path / "c", f"model.init_from={folder}", f"model.overrides.decoder_depth={depth}"))


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """A misspelt key in a recipe would only show when someone runs it, maybe on a lent GPU."""
    from vtok.train.lm_trainer import LMTrainConfig

    config = load_config(path, schema=LMTrainConfig if path.name.startswith("lm-") else vtok.train.TrainConfig)
    assert config.out_dir.startswith("runs/")


def test_progress_shows_the_loss_from_the_first_step(photo_dirs, tmp_path, monkeypatch):
    from vtok.progress import Progress

    seen: list[tuple[int, dict]] = []
    real = Progress.set_postfix
    monkeypatch.setattr(Progress, "set_postfix", lambda self, **v: (seen.append((self.n, dict(v))), real(self, **v)))
    Trainer(_cfg(photo_dirs, tmp_path / "r", "optim.steps=3", "log_every=100", "eval_every=100")).fit()
    assert seen and seen[0][0] == 0 and "loss" in seen[0][1]  # set before the first step's tick, not at step 100


def test_encoder_catch_up_trains_the_encoder_alone(photo_dirs, tmp_path):
    """model.trainable=encoder: the decoder keeps init_from's weights bit for bit; the encoder moves."""
    start = vtok.create_tokenizer("ordered1d-tiny")
    start.save_pretrained(tmp_path / "start")
    cfg = _cfg(photo_dirs, tmp_path / "r", "optim.steps=3", f"model.init_from={tmp_path / 'start'}",
               "model.trainable=encoder", "amp_cpu=true")  # fmt: skip
    trained = vtok.load(Trainer(cfg).fit())
    before, after = start.model.state_dict(), trained.model.state_dict()
    token_parts = trained.model.token_parts
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.split(".")[0] in token_parts for k in moved)
    with pytest.raises(vtok.ConfigError, match="init_from"):
        Trainer(_cfg(photo_dirs, tmp_path / "s", "model.trainable=encoder"))


def test_exclude_sources_holds_whole_sources_out(photo_dirs, tmp_path):
    train = tmp_path / "train"
    for source in ("a", "b"):
        (train / source).mkdir(parents=True)
        for p in sorted(photo_dirs[0].rglob("*.jpg"))[:2]:
            (train / source / p.name).write_bytes(p.read_bytes())
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"data.train_dir={train}", f"out_dir={tmp_path / 'r'}",
                                                        "data.exclude_sources=[b]"])  # fmt: skip
    assert {p.parent.name for p in Trainer(cfg).train_files} == {"a"}
    with pytest.raises(vtok.ConfigError, match="list of names"):
        load_config(None, ["data.exclude_sources=b"])
    misspelt = load_config(REPO / "configs" / "tiny.yaml", [f"data.train_dir={train}", f"out_dir={tmp_path / 'r'}",
                                                             "data.exclude_sources=[bb]"])  # fmt: skip
    with pytest.raises(vtok.ConfigError, match=r"no source bb in .*its sources: a, b"):
        Trainer(misspelt)


def test_a_fine_tune_that_makes_held_out_photos_worse_warns(photo_dirs, tmp_path, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="vtok.train")
    start = vtok.create_tokenizer("ordered1d-tiny")
    start.save_pretrained(tmp_path / "start")
    cfg = _cfg(photo_dirs, tmp_path / "r", "optim.steps=2", "eval_every=2", f"model.init_from={tmp_path / 'start'}")
    trainer = Trainer(cfg)
    assert trainer.task.held_out_psnr(trainer.model) < 99
    trainer.task.start_psnr = 99.0  # as if the start were perfect: any run is worse than it
    trainer.fit()
    assert "fell from 99.00 dB" in caplog.text and "finetune-small.yaml" in caplog.text
    caplog.clear()
    Trainer(_cfg(photo_dirs, tmp_path / "s", "optim.steps=2", "eval_every=2", "optim.lr=1e-9",
                 f"model.init_from={tmp_path / 'start'}")).fit()  # fmt: skip
    assert "fell from" not in caplog.text  # a run that changes nothing does not warn


def test_a_fresh_clone_gets_a_warm_start_and_missing_folders_right(photo_dirs, tmp_path):
    """Warm-starting from a model with parts the config does not mention (the shipped default's
    refine) just works; a missing folder or warm-start source names what makes it."""
    torch.manual_seed(0)
    source = vtok.create_tokenizer("ordered1d-tiny", refine=8)
    source.save_pretrained(tmp_path / "start")
    trainer = Trainer(_cfg(photo_dirs, tmp_path / "r", "optim.steps=1", f"model.init_from={tmp_path / 'start'}"))
    assert trainer.model.config.refine == 8
    assert all(torch.equal(v, source.model.state_dict()[k]) for k, v in trainer.model.state_dict().items())
    cfg = load_config(REPO / "configs" / "tiny.yaml", [f"out_dir={tmp_path / 's'}", "data.train_dir=data/photos/nope"])
    with pytest.raises(
        vtok.ImageError,
        match=r"data.train_dir data/photos/nope: no such folder \(make it with: python scripts/gather_photos.py",
    ):
        Trainer(cfg)
    with pytest.raises(vtok.ConfigError, match=r"previous_default.py data/default-v9 --version v9"):
        Trainer(_cfg(photo_dirs, tmp_path / "t", "model.init_from=data/default-v9"))


def test_semantic_alignment_trains_the_tokens_and_stays_out_of_the_export(photo_dirs, tmp_path):
    """loss.align: the projection learns (its loss is logged), the encoder gets its gradient, the
    projection and its optimizer ride in the checkpoint, and the exported model loads strictly into a
    plain model of its config (no alignment weights in it)."""
    from vtok.train.alignment import AlignmentSettings, SemanticAlignment

    tok = vtok.create_tokenizer("ordered1d-tiny")
    align = SemanticAlignment(tok.num_tokens, tok.model.quantizer.dim, AlignmentSettings(weight=1.0, max_prefix=4))
    assert align.prefixes == [1, 2, 4]
    x = torch.rand(4, 3, tok.image_size, tok.image_size)
    out = tok.model(x * 2 - 1)
    loss, parts = align(out.codes, x)
    loss.backward()
    encoder = {n for n in tok.model.encoder_parts}
    encoder_grads = [p.grad for n, p in tok.model.named_parameters() if n.split(".")[0] in encoder]
    assert encoder_grads and any(
        g is not None and g.abs().sum() > 0 for g in encoder_grads
    )  # reaches the encoder through the codes
    assert 0.0 <= parts["align"] <= 2.0 and {"align_k1", "align_k4"} <= set(parts)
    before = [p.detach().clone() for p in align.project.parameters()]
    align.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, align.project.parameters()))

    cfg = _cfg(
        photo_dirs, tmp_path / "r", "optim.steps=4", "loss.align=0.5", "loss.align_max_prefix=4", "checkpoint_every=2"
    )
    trainer = Trainer(cfg)
    folder = trainer.fit()
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and "align" in rows[0] and float(rows[-1]["align"]) > 0
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert "project" in state["task"]["alignment"] and int(state["task"]["alignment"]["seen"]) == 4
    exported = load_file(Path(folder) / "model.safetensors")
    assert not any("project" in k or "backbone" in k for k in exported)
    vtok.load(folder)  # strict
    with pytest.raises(vtok.ConfigError, match="align_max_prefix"):
        Trainer(_cfg(photo_dirs, tmp_path / "s", "loss.align=0.5", "loss.align_max_prefix=0"))


def test_distill_searches_targets_once_and_pulls_the_encoder_to_them(photo_dirs, tmp_path):
    """distill.weight > 0: the run first searches training crops through the model it starts from
    (stored with that model's weights id), then trains the encoder on them: the distill loss is
    logged, the decoder stays bit for bit, and a second run reuses the file instead of searching."""
    from vtok.codec.search import search_tokens

    start = vtok.create_tokenizer("ordered1d-tiny")
    start.save_pretrained(tmp_path / "start")
    args = (f"model.init_from={tmp_path / 'start'}", "model.trainable=encoder", "optim.steps=3",
            "distill.weight=1.0", "distill.count=5", "distill.effort=1", "distill.batch=2")  # fmt: skip
    trained = vtok.load(Trainer(_cfg(photo_dirs, tmp_path / "r", *args)).fit())
    targets = tmp_path / "r" / "search_targets.safetensors"
    stored = load_file(targets)
    assert stored["images"].shape == (5, 3, 32, 32) and stored["indices"].shape == (5, start.num_tokens)
    assert not (tmp_path / "r" / "search_targets.safetensors.parts").exists()
    # what is stored is what the search gives for the stored crops, and it is not the encoder's own
    again = search_tokens(start, stored["images"].float() / 255, 1)
    assert torch.equal(again, stored["indices"].long())
    assert not torch.equal(start.encode(stored["images"].float() / 255), again)
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and float(rows[-1]["distill"]) > 0
    before, after = start.model.state_dict(), trained.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.split(".")[0] in trained.model.token_parts for k in moved)

    stamp = targets.stat().st_mtime_ns  # a second run with the same file reads it, searching nothing
    Trainer(_cfg(photo_dirs, tmp_path / "r2", *args, f"distill.targets={targets}"))
    assert targets.stat().st_mtime_ns == stamp
    torch.manual_seed(1)
    vtok.create_tokenizer("ordered1d-tiny").save_pretrained(tmp_path / "other")
    with pytest.raises(vtok.ConfigError, match="searched through the model with weights"):
        Trainer(_cfg(photo_dirs, tmp_path / "r3", *args, f"distill.targets={targets}",
                     f"model.init_from={tmp_path / 'other'}"))  # fmt: skip
    with pytest.raises(vtok.ConfigError, match="init_from"):
        Trainer(_cfg(photo_dirs, tmp_path / "r4", "distill.weight=1.0"))
    with pytest.raises(vtok.ConfigError, match="effort must be 1 or more"):
        Trainer(_cfg(photo_dirs, tmp_path / "r5", *args, "distill.effort=0"))


def test_search_targets_resume_after_a_kill(tmp_path, monkeypatch):
    """A search killed after its first part keeps that part and does only the rest when run again;
    a part left by another search (other weights) is redone, never mixed in."""
    import vtok.codec.search as search
    from vtok.train import distill

    tok = vtok.create_tokenizer("ordered1d-tiny")
    crops = torch.rand(distill.PART + 3, 3, 32, 32)
    searched: list[int] = []
    real_search = search.search_tokens

    def counting_search(tok, tiles, effort, *args, **kwargs):
        searched.append(len(tiles))
        return real_search(tok, tiles, effort, *args, **kwargs)

    monkeypatch.setattr(search, "search_tokens", counting_search)

    class Crops:
        def __init__(self, fail_from: int | None):
            self.fail_from = fail_from

        def __getitem__(self, i):
            if self.fail_from is not None and i >= self.fail_from:
                raise KeyboardInterrupt
            return crops[i]

    out = tmp_path / "t.safetensors"
    with pytest.raises(KeyboardInterrupt):
        distill.make_search_targets(tok, Crops(distill.PART), len(crops), 1, out, progress=False)
    assert not out.exists() and len(list((tmp_path / "t.safetensors.parts").iterdir())) == 1
    searched.clear()
    distill.make_search_targets(tok, Crops(None), len(crops), 1, out, progress=False)
    assert searched == [3]  # only the second part was searched
    targets = distill.SearchTargets.load(out, tok)
    assert len(targets) == len(crops)
    x, t = targets.batch(7, 4)
    x2, t2 = targets.batch(7, 4)
    assert torch.equal(x, x2) and torch.equal(t, t2) and x.shape == (4, 3, 32, 32)
    assert t.shape == (4, tok.num_tokens, tok.model.quantizer.dim)
    assert float(t.abs().max()) <= float(tok.model.quantizer.half_width.max())  # digit centres
    other = vtok.create_tokenizer("ordered1d-tiny")  # other weights: a part it left is not reused
    out.unlink()
    with pytest.raises(KeyboardInterrupt):
        distill.make_search_targets(tok, Crops(distill.PART), len(crops), 1, out, progress=False)
    searched.clear()
    distill.make_search_targets(other, Crops(None), len(crops), 1, out, progress=False)
    assert searched == [distill.PART, 3]
    assert len(distill.SearchTargets.load(out, other)) == len(crops)
