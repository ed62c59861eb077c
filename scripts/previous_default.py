"""Write the previous default weights (what configs/default.yaml warm-starts from) into a folder.

    python scripts/previous_default.py data/default-v0

They are the `default` model vtok shipped before the real-photo recipe (commit 1b7d40c): read
from this repository's git history, so this needs a git checkout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

COMMIT = "1b7d40c"
FILES = ("config.json", "model.safetensors", "prior.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        try:
            data = subprocess.run(
                ["git", "-C", str(root), "show", f"{COMMIT}:src/vtok/weights/default/{name}"],
                check=True,
                capture_output=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(f"previous_default: cannot read {name} from git commit {COMMIT} ({e}); a git checkout is needed")
        (args.out / name).write_bytes(data)
    print(f"wrote the previous default model to {args.out}")


if __name__ == "__main__":
    main()
