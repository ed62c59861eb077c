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
    trainer = Trainer(config)
    folder = trainer.fit(resume=args.resume, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    if trainer.step < config.optim.steps:
        print(f"stopped at step {trainer.step} of {config.optim.steps} (time limit); continue with --resume")
    if trainer.unreadable:
        print(f"skipped {len(trainer.unreadable)} unreadable image file(s), e.g. {trainer.unreadable[0]}")
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


def _expand(inputs: list[str], suffixes: set[str] | None) -> list[Path]:
    """Files and folders (searched recursively) -> files, in order."""
    from .errors import ImageError
    from .images import IMAGE_EXTENSIONS

    suffixes = suffixes or IMAGE_EXTENSIONS
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise ImageError(f"{path}: no {'/'.join(sorted(suffixes))} files found")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ImageError(f"{path}: no such file or folder")
    return files


def _progress(items, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="file", disable=None if len(items) > 1 else True)


def _cmd_encode(args: argparse.Namespace) -> None:
    from .codec import encode_image
    from .tokenizer import atomic_path, load

    tok = load(args.model)
    files = _expand(args.inputs, None)
    out = Path(args.output)
    single = len(files) == 1 and out.suffix == ".vtok"
    failed = 0
    for path in _progress(files, "encode"):
        target = out if single else out / (path.stem + ".vtok")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            enc = encode_image(
                path,
                tok,
                tokens=args.tokens,
                psnr=args.psnr,
                ssim=args.ssim,
                max_bytes=args.max_bytes,
                coding=args.coding,
                allocation=args.allocation,
            )
        except VtokError as e:
            if len(files) == 1:
                raise
            print(f"vtok: skipped {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        with atomic_path(target) as tmp:
            tmp.write_bytes(enc.data)
        note = f", {enc.unmet_tiles} tile(s) could not reach the target" if enc.unmet_tiles else ""
        print(f"{path} -> {target}: {len(enc.data)} bytes, {enc.tiles} tile(s), {int(enc.counts.sum())} tokens{note}")
    if failed:
        raise VtokError(f"{failed} of {len(files)} image(s) could not be encoded")


def _cmd_decode(args: argparse.Namespace) -> None:
    from .codec import decompress
    from .tokenizer import atomic_path

    files = _expand(args.inputs, {".vtok"})
    out = Path(args.output)
    single = len(files) == 1 and out.suffix.lower() == ".png"
    failed = 0
    for path in _progress(files, "decode"):
        target = out if single else out / (path.stem + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            image = decompress(path.read_bytes(), args.model)
        except VtokError as e:
            if len(files) == 1:
                raise VtokError(f"{path}: {e}") from e
            print(f"vtok: skipped {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
        print(f"{path} -> {target}: {image.width}x{image.height}")
    if failed:
        raise VtokError(f"{failed} of {len(files)} file(s) could not be decoded")


def _cmd_prior(args: argparse.Namespace) -> None:
    from .codec import fit_prior
    from .tokenizer import load

    tok = load(args.model)
    fit_prior(tok, args.folder, crops_per_image=args.crops)
    folder = tok.save_pretrained(args.out or args.model)
    print(f"wrote {folder / 'prior.safetensors'}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from .bench import run_bench, write_report

    codecs = tuple(c.strip() for c in args.codecs.split(",") if c.strip()) if args.codecs else ()
    lpips = None
    if args.lpips:
        from .metrics.lpips import LPIPS

        lpips = LPIPS(*args.lpips, net=args.lpips_net)
    result = run_bench(
        args.models,
        args.folder,
        codecs=codecs,
        limit=args.limit,
        perceptual=not args.no_perceptual,
        lpips=lpips,
        inception=args.fid_inception,
    )
    for name, why in result.missing_codecs.items():
        print(f"vtok: note: {name} left out: {why}", file=sys.stderr)
    files = write_report(result, args.out, folder=args.folder)
    print(Path(files["markdown"]).read_text())
    print(f"wrote {args.out}/ (bench.json, summary.md, plots, index.html)")


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
    t.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after this much wall time, with a checkpoint and an exported model (continue with --resume)",
    )
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="PSNR/SSIM per prefix length on a folder of images")
    e.add_argument("model", help="shipped model name or model folder")
    e.add_argument("folder", help="folder of images (searched recursively)")
    e.add_argument("--json", help="also write the full result as JSON here")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--limit", type=int, default=None, help="use at most this many images")
    e.set_defaults(func=_cmd_eval)

    en = sub.add_parser("encode", help="compress images of any size into .vtok files")
    en.add_argument("inputs", nargs="+", help="image files or folders")
    en.add_argument("-o", "--output", required=True, help="output folder (or FILE.vtok for a single image)")
    en.add_argument("--model", default="default")
    target = en.add_mutually_exclusive_group()
    target.add_argument("--tokens", type=int, help="tokens per tile (default: all K)")
    target.add_argument("--psnr", type=float, help="smallest k per tile reaching this PSNR (dB)")
    target.add_argument("--ssim", type=float, help="smallest k per tile reaching this SSIM")
    target.add_argument("--perceptual", type=float, help="smallest k per tile whose feature distance is at most this")
    target.add_argument("--max-bytes", type=int, help="largest file size in bytes")
    en.add_argument("--coding", choices=["ans", "bitpack"], help="default: ans when the model has a prior")
    en.add_argument(
        "--allocation",
        choices=["per-tile", "mean"],
        default="per-tile",
        help="per-tile: every tile reaches the target; mean: the image's mean does, with the fewest bytes",
    )
    en.set_defaults(func=_cmd_encode)

    de = sub.add_parser("decode", help="decode .vtok files into PNGs at their original size")
    de.add_argument("inputs", nargs="+", help=".vtok files or folders")
    de.add_argument("-o", "--output", required=True, help="output folder (or FILE.png for a single file)")
    de.add_argument("--model", default="default")
    de.set_defaults(func=_cmd_decode)

    pr = sub.add_parser("prior", help="fit the token prior used for entropy coding and save it with the model")
    pr.add_argument("model", help="model folder")
    pr.add_argument("folder", help="folder of training images")
    pr.add_argument("--crops", type=int, default=16, help="random crops per image (default 16)")
    pr.add_argument("--out", help="save the model with its prior here instead of in place")
    pr.set_defaults(func=_cmd_prior)

    be = sub.add_parser("bench", help="quality per token and per byte, beside JPEG/WebP/AVIF/JPEG XL, with plots")
    be.add_argument("models", nargs="+", help="shipped model names or model folders, then the image folder last")
    be.add_argument("--out", required=True, help="report folder")
    be.add_argument("--limit", type=int, help="use at most this many images")
    be.add_argument("--codecs", default="jpeg,webp,avif,jxl", help="comma-separated; '' for none")
    be.add_argument("--no-perceptual", action="store_true", help="skip the feature distance (no backbone needed)")
    be.add_argument(
        "--lpips",
        nargs=2,
        metavar=("BACKBONE_WEIGHTS", "LPIPS_WEIGHTS"),
        help="also score LPIPS: torchvision's ImageNet VGG16 (or AlexNet) file and the LPIPS authors' "
        "linear-layer file for the same net (.pth or .safetensors)",
    )
    be.add_argument("--lpips-net", choices=["vgg", "alex"], default="vgg", help="LPIPS backbone (default: vgg)")
    be.add_argument(
        "--fid-inception",
        metavar="WEIGHTS",
        help="also report FID per k: pytorch-fid's Inception file (pt_inception-2015-12-05-*.pth)",
    )
    be.set_defaults(func=_cmd_bench)

    ls = sub.add_parser("list", help="list architectures and shipped pretrained models")
    ls.set_defaults(func=_cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        if len(args.models) < 2:
            print("vtok: error: bench needs at least one model and then the image folder", file=sys.stderr)
            return 2
        args.models, args.folder = args.models[:-1], args.models[-1]
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "train" else logging.WARNING, format="%(message)s"
    )
    try:
        args.func(args)
    except VtokError as e:
        print(f"vtok: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("vtok: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
