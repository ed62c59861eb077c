"""Turn a finished training run into the shipped `default` model, with its prior and figures.

    python scripts/export_default.py runs/default
    python scripts/export_default.py runs/default-decoder --keep-tokens

Copies the run's EMA tokenizer into src/vtok/weights/default (renamed `default`), fits the
token prior for entropy coding on data/photos/train, plots the run's PSNR-vs-time curve and
renders the demo sheet into docs/images/. The benchmarks in benchmarks/ then measure it.

With --interpolate FOLDER --alpha A the exported weights are (1 - A) * FOLDER's + A * the run's,
tensor by tensor, tensors equal in both copied as they are: WiSE-FT (Wortsman et al., "Robust
fine-tuning of zero-shot models", CVPR 2022, https://arxiv.org/abs/2109.01903), here to trade a
fine-tune's sharpness against the PSNR of the weights it started from with one number.

With --keep-tokens (a run that trained the decoder alone: model.trainable=decoder) the shipped
model's encoder and quantizer must be the run's, bit for bit; every image then keeps its tokens,
so the shipped token prior is kept as it is and the shipped default token LM, whose training
data those tokens were, is re-stamped with the new weights id instead of being retrained.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

import vtok
import vtok.lm as vlm
from vtok.codec import fit_prior
from vtok.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--train-dir", default="data/photos/train")
    ap.add_argument("--keep-tokens", action="store_true", help="keep the prior and the LM of a decoder-only run")
    ap.add_argument("--interpolate", type=Path, help="a model folder to interpolate the run's weights with")
    ap.add_argument("--alpha", type=float, default=1.0, help="the run's share with --interpolate (0..1)")
    args = ap.parse_args()
    tok = vtok.load(args.run / "model")
    tok.name = "default"
    if args.interpolate:
        if not 0.0 <= args.alpha <= 1.0:
            sys.exit(f"export_default: --alpha must lie in 0..1, got {args.alpha}")
        _interpolate(tok, vtok.load(args.interpolate), args.alpha)
    target = ROOT / "src" / "vtok" / "weights" / "default"
    if args.keep_tokens:
        shipped = vtok.load(target)
        changed = _encoder_changes(shipped, tok)
        if changed:
            sys.exit(f"export_default: --keep-tokens, but the run changed the encoder ({', '.join(changed[:3])})")
        tok.prior = shipped.prior
    else:
        fit_prior(tok, args.train_dir, crops_per_image=16)
    tok.save_pretrained(target)  # atomic; the model card beside the weights is kept
    print(f"exported {args.run / 'model'} -> {target}")
    if args.keep_tokens:  # at once: the shipped tokenizer and LM must never name different weights
        lm = vlm.load("default")
        lm.tokenizer_id = vtok.load(target).weights_id().hex()
        vlm.save_pretrained(lm, ROOT / "src" / "vtok" / "lm_weights" / "default")
        print(f"the default token LM now names tokenizer {lm.tokenizer_id} (same tokens)")
    else:
        print("the default token LM learned the old tokens: retrain it (configs/lm-default*.yaml)")
    images = ROOT / "docs" / "images"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "plot_training.py"),
            str(args.run),
            str(images / "default_training.png"),
        ],
        check=True,
    )
    run_demo(model=vtok.load(target), out=images / "demo.png")
    print(f"wrote {images / 'demo.png'}")


def _interpolate(tok: vtok.Tokenizer, start: vtok.Tokenizer, alpha: float) -> None:
    """tok's weights become (1 - alpha) * start's + alpha * tok's; tensors equal in both stay bit for bit."""
    ours, theirs = tok.model.state_dict(), start.model.state_dict()
    mixed = {
        k: v if torch.equal(v, theirs[k]) or not v.is_floating_point() else (1 - alpha) * theirs[k] + alpha * v
        for k, v in ours.items()
    }
    tok.model.load_state_dict(mixed, strict=True)


def _encoder_changes(old: vtok.Tokenizer, new: vtok.Tokenizer) -> list[str]:
    """Names of the encoder's and quantizer's tensors (and config) that differ between the two models."""
    if old.model.config.quantizer != new.model.config.quantizer:
        return ["quantizer config"]
    a, b = old.model.state_dict(), new.model.state_dict()
    parts = new.model.token_parts
    changed = [k for k in b if k.split(".")[0] in parts and not (k in a and torch.equal(a[k], b[k]))]
    # settings that change encoding without changing a tensor (heads, the norm) show in the tokens
    images = torch.rand(8, 3, old.image_size, old.image_size, generator=torch.Generator().manual_seed(0))
    if not changed and not torch.equal(old.encode(images), new.encode(images)):
        changed = ["the tokens of random images"]
    return changed


if __name__ == "__main__":
    try:
        main()
    except vtok.VtokError as e:  # a run or model folder that is missing or broken: one line
        sys.exit(f"export_default: {e}")
