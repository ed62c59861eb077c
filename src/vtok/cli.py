"""The `vtok` command: thin argument parsing over the library.

Every user mistake (a VtokError) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import VtokError

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    result = run_demo(args.images or None, model=args.model, out=args.out)
    print(result.table())
    print(f"wrote {result.sheet}")


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import Trainer, load_config

    config = load_config(args.config, args.overrides)
    folder = Trainer(config).fit(resume=args.resume)
    print(f"trained model in {folder}")


def _cmd_eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate
    from .tokenizer import atomic_path, load

    result = evaluate(load(args.model), args.folder, batch_size=args.batch_size, limit=args.limit)
    print(result.table())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"wrote {path}")


def _cmd_list(args: argparse.Namespace) -> None:
    from .registry import list_tokenizers
    from .tokenizer import shipped_models

    print("architectures (vtok.create_tokenizer / model.name in a training config):")
    for name in list_tokenizers():
        print(f"  {name}")
    print("pretrained (vtok.load):")
    for name in shipped_models():
        print(f"  {name}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="vtok", description="Ordered 1D visual tokenizers: encode, decode any prefix, train, measure."
    )
    p.add_argument("--version", action="version", version=f"vtok {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="reconstruct photos at k = 1, 2, 4, ..., K tokens into one PNG sheet")
    d.add_argument("images", nargs="*", help="image files (default: bundled sample photos)")
    d.add_argument("--model", default="default", help="shipped model name or model folder (default: default)")
    d.add_argument("--out", default="vtok_demo.png", help="PNG sheet to write (default: vtok_demo.png)")
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train", help="train a tokenizer from a YAML config")
    t.add_argument("config", help="YAML file (see configs/)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.steps=100")
    t.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt if present")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="PSNR/SSIM per prefix length on a folder of images")
    e.add_argument("model", help="shipped model name or model folder")
    e.add_argument("folder", help="folder of images (searched recursively)")
    e.add_argument("--json", help="also write the full result as JSON here")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--limit", type=int, default=None, help="use at most this many images")
    e.set_defaults(func=_cmd_eval)

    ls = sub.add_parser("list", help="list architectures and shipped pretrained models")
    ls.set_defaults(func=_cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "train" else logging.WARNING, format="%(message)s"
    )
    try:
        args.func(args)
    except VtokError as e:
        print(f"vtok: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vtok: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
