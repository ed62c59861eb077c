"""The adversarial objective, in-memory crops and source balancing: pieces the GPU recipe relies on."""

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vtok.data import InMemoryCropSampler, source_weights
from vtok.train import Trainer, load_config
from vtok.train.adversarial import AdversarialLoss, PatchDiscriminator

REPO = Path(__file__).resolve().parents[1]


def test_patch_discriminator_gives_one_logit_per_patch():
    d = PatchDiscriminator(channels=16, layers=3)
    assert d(torch.rand(2, 3, 64, 64) * 2 - 1).shape == (2, 1, 8, 8)


def test_hinge_and_lecam_by_hand():
    adv = AdversarialLoss(lecam=0.5, ema_decay=0.0)  # the running means become this batch's means
    real, fake = torch.tensor([2.0, 0.5]).view(2, 1, 1, 1), torch.tensor([-2.0, 0.0]).view(2, 1, 1, 1)
    loss, stats = adv.discriminator_loss(real, fake)
    hinge = (0 + 0.5) / 2 + (0 + 1.0) / 2  # relu(1 - real), relu(1 + fake)
    assert stats["d_loss"] == pytest.approx(hinge)
    first_lecam = (4 + 0.25) / 2 + (4 + 0) / 2  # running means start at 0: relu(real)^2, relu(-fake)^2
    assert loss.item() == pytest.approx(hinge + 0.5 * first_lecam)
    loss2, _ = adv.discriminator_loss(real, fake)  # now ema_real = 1.25, ema_fake = -1.0
    second_lecam = (9 + 2.25) / 2 + (10.5625 + 1.5625) / 2  # relu(real + 1)^2, relu(1.25 - fake)^2
    assert loss2.item() == pytest.approx(hinge + 0.5 * second_lecam)
    weights = torch.tensor([1.0, 0.0])
    assert AdversarialLoss.generator_loss(fake, weights).item() == pytest.approx(2.0)  # only image 0 counts


def test_source_balance_weights_sources_not_files(tmp_path):
    files = [tmp_path / "big" / f"{i}.jpg" for i in range(9)] + [tmp_path / "small" / "0.jpg"]
    per_source = source_weights(files, tmp_path, balance=0.0)
    assert per_source[:9].sum() == pytest.approx(0.5) and per_source[9] == pytest.approx(0.5)
    per_file = source_weights(files, tmp_path, balance=1.0)
    assert torch.allclose(per_file, torch.full((10,), 0.1, dtype=per_file.dtype))


def test_in_memory_crops_are_a_function_of_the_step(photo_dirs):
    files = sorted(photo_dirs[0].rglob("*.jpg"))
    make = lambda: InMemoryCropSampler(files, 32, seed=3, device=torch.device("cpu"), color_jitter=0.05)  # noqa: E731
    a, b = make(), make()
    assert torch.equal(a.batch(5, 0, 4), b.batch(5, 0, 4))
    assert not torch.equal(a.batch(5, 0, 4), a.batch(6, 0, 4))
    x = a.batch(0, 0, 8)
    assert x.shape == (8, 3, 32, 32) and 0 <= x.min() and x.max() <= 1


@pytest.mark.slow
def test_adversarial_training_runs_resumes_and_stays_out_of_the_export(photo_dirs, tmp_path):
    overrides = [
        f"data.train_dir={photo_dirs[0]}",
        f"out_dir={tmp_path / 'run'}",
        "optim.steps=8",
        "optim.batch_size=4",
        "log_every=1",
        "checkpoint_every=4",
        "eval_every=100",
        "threads=1",
        "data.in_memory=true",
        "loss.perceptual=0.1",
        "gan.weight=0.1",
        "gan.start_step=2",
        "gan.ramp_steps=2",
        "gan.channels=8",
        "gan.crop=16",
    ]
    cfg = load_config(REPO / "configs" / "tiny.yaml", overrides)
    trainer = Trainer(cfg)
    trainer.fit(max_seconds=None)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [float(r["gan_weight"]) for r in rows[:4]] == [0.0, 0.0, 0.05, 0.1]
    assert all(float(r["d_loss"]) > 0 for r in rows[2:]) and all(float(r["d_loss"]) == 0 for r in rows[:2])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert "discriminator" in state["task"] and "d_optimizer" in state["task"]
    exported = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert not any("discriminator" in k or "backbone" in k for k in exported)
    assert set(exported) == set(trainer.model.state_dict())
    resumed = Trainer(load_config(REPO / "configs" / "tiny.yaml", [*overrides, "optim.steps=10"]))
    resumed.fit(resume=True)
    assert resumed.step == 10


def test_flat_colour_share_replaces_that_share_of_crops(photo_dirs):
    from vtok.data import RandomCropDataset, synthetic_flat

    files = sorted(photo_dirs[0].rglob("*.jpg"))
    every = RandomCropDataset(files, 32, seed=0, length=40, flat_fraction=1.0)
    x = torch.stack([every[i] for i in range(40)])
    spread = x.flatten(2).std(dim=2).max(dim=1).values  # (N,): 0 for a flat image
    assert (spread == 0).sum() >= 8 and (spread > 0).sum() >= 8  # flat colours and gradients both
    assert 0 <= x.min() and x.max() <= 1
    none = RandomCropDataset(files, 32, seed=0, length=8, flat_fraction=0.0)
    assert all(none[i].flatten(1).std(dim=1).max() > 0.01 for i in range(8))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(synthetic_flat(16, g1), synthetic_flat(16, g2))


def test_flat_extremes_put_colours_on_the_cube_faces():
    from vtok.data import synthetic_flat

    def share_on_faces(extremes: float) -> float:
        """The share of the flat images' channels that lie exactly at 0 or 1."""
        g = torch.Generator().manual_seed(0)
        x = torch.stack([synthetic_flat(8, g, extremes) for _ in range(400)])  # (N, 3, S, S)
        assert 0 <= x.min() and x.max() <= 1
        flat = x.flatten(2).std(dim=2).max(dim=1).values == 0  # (N,)
        assert 100 < flat.sum() < 300  # gradients too
        colours = x[flat][:, :, 0, 0]  # (F, 3)
        return ((colours == 0) | (colours == 1)).float().mean().item()

    assert share_on_faces(0.0) == 0.0
    assert 0.4 < share_on_faces(0.5) < 0.6
    assert share_on_faces(1.0) == 1.0
