import csv
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import vtok

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
SHORT = ("optim.steps=6", "optim.batch_size=4", "threads=1")  # a few seconds on one core
STOP_AT_ONCE = "1e-6"  # --max-minutes that no step fits in: the run stops after its first step


def _cli(argv, capsys):
    return run_cli(argv, capsys)


def _train(photo_dirs, out, *extra):
    """``vtok train configs/tiny.yaml ...`` arguments for a short run into `out`."""
    return ["train", TINY, f"data.train_dir={photo_dirs[0]}", f"out_dir={out}", *SHORT, *extra]


def _checkpoint_step(run: Path) -> int:
    return int(torch.load(run / "checkpoint.pt", weights_only=True)["step"])


def _metric_steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open(newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def _logged_steps(run: Path) -> list[int]:
    """_metric_steps of a run that may be writing a row right now."""
    try:
        return _metric_steps(run)
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vtok: error:"), stderr
    return lines[0]


def _popen(args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "vtok", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, proc, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(0.02)


def test_the_readme_resume_line_works_twice_in_a_row(photo_dirs, tmp_path, monkeypatch, capsys):
    """README: `vtok train configs/default.yaml out_dir=runs/mine --resume`, run again after it is done."""
    monkeypatch.chdir(tmp_path)
    args = _train(photo_dirs, "runs/mine", "--resume")
    rc, out, err = _cli(args, capsys)
    assert rc == 0, err
    run = tmp_path / "runs" / "mine"
    assert _checkpoint_step(run) == 6 and (run / "model" / "model.safetensors").is_file()
    config, steps = (run / "config.yaml").read_text(), _metric_steps(run)

    rc, out, err = _cli(args, capsys)
    assert rc == 0, err
    assert "trained model in" in out
    assert _checkpoint_step(run) == 6
    assert _metric_steps(run) == steps and (run / "config.yaml").read_text() == config
    vtok.load(run / "model")


def test_max_minutes_stops_early_with_a_checkpoint_and_a_model(photo_dirs, tmp_path, capsys):
    run = tmp_path / "run"
    rc, out, err = _cli(_train(photo_dirs, run, "optim.steps=500", "--max-minutes", "0.001"), capsys)
    assert rc == 0, err
    step = _checkpoint_step(run)
    assert 1 <= step < 500
    assert (run / "model" / "model.safetensors").is_file()
    vtok.load(run / "model")
    assert "time limit" in out and f"stopped at step {step} of 500" in out
    assert f"continue with: vtok train {run} --resume" in out


def test_a_run_folder_resumes(photo_dirs, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="vtok.train")
    run = tmp_path / "run"
    rc, _, err = _cli(_train(photo_dirs, run, "--max-minutes", STOP_AT_ONCE), capsys)
    assert rc == 0, err
    first = _checkpoint_step(run)
    assert first == 1
    config = (run / "config.yaml").read_text()

    rc, out, err = _cli(["train", run, "--resume"], capsys)
    assert rc == 0, err
    assert f"resumed from {run / 'checkpoint.pt'} at step {first}" in caplog.text
    assert _checkpoint_step(run) == 6 and "trained model in" in out
    assert (run / "config.yaml").read_text() == config
    assert _metric_steps(run) == sorted(set(_metric_steps(run)))


def test_a_run_folder_with_a_relative_out_dir_resumes_from_another_folder(
    photo_dirs, tmp_path, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.INFO, logger="vtok.train")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    rc, _, err = _cli(_train(photo_dirs, "run", "--max-minutes", STOP_AT_ONCE), capsys)
    assert rc == 0, err
    run = tmp_path / "a" / "run"
    first = _checkpoint_step(run)

    monkeypatch.chdir(tmp_path / "b")
    rc, out, err = _cli(["train", run, "--resume"], capsys)
    assert rc == 0, err
    assert not (tmp_path / "b" / "run").exists(), "a new run was started in the current folder"
    assert f"at step {first}" in caplog.text and _checkpoint_step(run) == 6


def test_resume_refuses_an_override_that_changes_the_run(photo_dirs, tmp_path, capsys):
    run = tmp_path / "run"
    rc, _, err = _cli(_train(photo_dirs, run, "--max-minutes", STOP_AT_ONCE), capsys)
    assert rc == 0, err
    config, step = (run / "config.yaml").read_bytes(), _checkpoint_step(run)

    rc, out, err = _cli(_train(photo_dirs, run, "optim.lr=0.5", "--resume"), capsys)
    assert rc == 2
    line = _one_error_line(err)
    assert "optim.lr" in line and "0.5" in line
    assert (run / "config.yaml").read_bytes() == config and _checkpoint_step(run) == step

    rc, out, err = _cli(_train(photo_dirs, run, "log_every=3", "--resume"), capsys)  # how, not what: allowed
    assert rc == 0, err
    assert _checkpoint_step(run) == 6
    assert "log_every: 3" in (run / "config.yaml").read_text()


def test_resume_of_a_run_folder_refuses_an_override_that_changes_the_run(photo_dirs, tmp_path, capsys):
    run = tmp_path / "run"
    rc, _, err = _cli(_train(photo_dirs, run, "--max-minutes", STOP_AT_ONCE), capsys)
    assert rc == 0, err
    config = (run / "config.yaml").read_bytes()

    rc, out, err = _cli(["train", run, "optim.lr=0.5", "--resume"], capsys)
    assert rc == 2, "the run was resumed with another learning rate"
    assert "optim.lr" in _one_error_line(err)
    assert (run / "config.yaml").read_bytes() == config


@pytest.mark.slow
@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_cleanly_with_a_checkpoint(sig, status, photo_dirs, tmp_path):
    run = tmp_path / "run"
    proc = _popen(
        _train(photo_dirs, run, "optim.steps=100000", "log_every=1", "checkpoint_every=100000", "eval_every=100000")
    )
    _wait_for(lambda: (run / "metrics.csv").is_file(), proc, "metrics.csv")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    step = _checkpoint_step(run)
    assert 1 <= step < 100000
    assert f"stopped at step {step} of 100000 ({sig.name})" in out
    assert f"continue with: vtok train {run} --resume" in out
    assert (run / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_resume_after_sigkill_logs_every_step_once(photo_dirs, tmp_path, capsys):
    """Rows logged after the last checkpoint are logged again by the resumed run; they must not
    appear twice."""
    run = tmp_path / "run"
    args = _train(photo_dirs, run, "optim.steps=100000", "log_every=1", "checkpoint_every=50", "eval_every=100000")
    proc = _popen(args)

    def past_a_checkpoint() -> bool:  # a checkpoint exists and a few steps were logged after it
        if not (run / "checkpoint.pt").is_file():
            return False
        steps = _logged_steps(run)
        return bool(steps) and 3 <= steps[-1] % 50 <= 25

    _wait_for(past_a_checkpoint, proc, "a few steps past a checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed_at = _metric_steps(run)[-1]
    assert _checkpoint_step(run) < killed_at, "the kill came before any row was logged past the checkpoint"

    rc, out, err = _cli([*args, "--resume", "--max-minutes", "0.02"], capsys)
    assert rc == 0, err
    steps = _metric_steps(run)
    assert len(steps) == len(set(steps)), "duplicate steps in metrics.csv"
    assert steps == sorted(steps) and steps[-1] >= _checkpoint_step(run) > 0
    assert steps == list(range(1, steps[-1] + 1))
