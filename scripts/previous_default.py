"""Write an earlier shipped `default` model (what a stage of the recipe warm-starts from) into a folder.

    python scripts/previous_default.py data/default-v0                 # before the real-photo recipe
    python scripts/previous_default.py data/default-v1 --version v1    # the 2-CPU real-photo model
    python scripts/previous_default.py data/default-v2 --version v2    # v1 with a sharper decoder
    python scripts/previous_default.py data/default-v3 --version v3    # v2 with truer colours
    python scripts/previous_default.py data/default-v4 --version v4    # v3 with a pixel refinement

v0 is the `default` vtok shipped before the real-photo recipe (commit 1b7d40c), what
configs/default.yaml warm-starts from; v1 is what configs/default.yaml and
configs/default-finetune.yaml made (commit 2871a5b), what configs/default-decoder.yaml
warm-starts from; v2 is stage 3, v1 with configs/default-decoder.yaml's decoder (commit c602638),
what configs/default-colours.yaml warm-starts from; v3 is stage 4, v2 blended with what
configs/default-colours.yaml made (commit 238e1b3), what configs/default-refine.yaml warm-starts
from; v4 is stage 5, v3 with configs/default-refine.yaml's decoder (commit 5668f54), what
configs/default-encoder.yaml warm-starts from. Read from this repository's git history, so this needs a git checkout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

VERSIONS = {"v0": "1b7d40c", "v1": "2871a5b", "v2": "c602638", "v3": "238e1b3", "v4": "5668f54"}
FILES = ("config.json", "model.safetensors", "prior.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--version", choices=sorted(VERSIONS), default="v0")
    args = ap.parse_args()
    commit = VERSIONS[args.version]
    root = Path(__file__).resolve().parents[1]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        try:
            data = subprocess.run(
                ["git", "-C", str(root), "show", f"{commit}:src/vtok/weights/default/{name}"],
                check=True,
                capture_output=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"previous_default: cannot read {name} from git commit {commit} ({e}); a git checkout is needed")
        (args.out / name).write_bytes(data)
    print(f"wrote the {args.version} default model (commit {commit}) to {args.out}")


if __name__ == "__main__":
    main()
