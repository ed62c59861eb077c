"""Turn a finished `vtok lm-train` run into the shipped `default` token LM.

    python scripts/export_default_lm.py runs/lm-default

Copies the run's EMA LM into src/vtok/lm_weights/default (renamed `default`, naming the shipped
`default` tokenizer), after checking that it learned that tokenizer's tokens: an LM trained on
another tokenizer's tokens would code files the shipped one cannot read. Keeps the model card.
Then run benchmarks/lm.py to measure it and `vtok generate default` for the README's sheets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import vtok
import vtok.lm as vlm

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    lm = vlm.load(args.run / "model")
    tok = vtok.load("default")
    if lm.tokenizer_id != tok.weights_id().hex():
        raise SystemExit(
            f"{args.run}: trained on tokenizer {lm.tokenizer_id}, the shipped default is {tok.weights_id().hex()}: "
            "tokenize the photos again with the default tokenizer and retrain"
        )
    lm.name, lm.tokenizer_name = "default", "default"
    target = ROOT / "src" / "vtok" / "lm_weights" / "default"
    vlm.save_pretrained(lm, target)  # atomic; other files in the folder (README.md) are kept
    size = (target / "model.safetensors").stat().st_size
    print(f"exported {args.run / 'model'} -> {target} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
