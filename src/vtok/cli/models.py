"""The commands about tokenizer models: ``vtok demo``, ``vtok train``, ``vtok eval``, ``vtok probe``, ``vtok bench``, ``vtok list``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import report_stop, say, writing

__all__ = ["add_commands"]


def _cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    with writing(args.out):
        result = run_demo(args.images or None, model=args.model, out=args.out, effort=args.effort)
    say(result.table())
    say(f"wrote {result.sheet}")


def _cmd_train(args: argparse.Namespace) -> None:
    from ..train import Trainer, load_run_config

    config = load_run_config(args.config, args.overrides, resume=args.resume)
    with writing(config.out_dir):  # the run writes nowhere else
        trainer = Trainer(config)
        folder = trainer.fit(resume=args.resume, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    if trainer.unreadable:
        say(f"skipped {len(trainer.unreadable)} unreadable image file(s), e.g. {trainer.unreadable[0]}")
    report_stop(trainer, config, "vtok train")
    say(f"trained model in {folder}")


def _cmd_eval(args: argparse.Namespace) -> None:
    from ..evaluate import evaluate
    from ..files import write_atomic
    from ..tokenizer import load

    result = evaluate(load(args.model), args.folder, batch_size=args.batch_size, limit=args.limit)
    say(result.table())
    if args.json:
        with writing(args.json):
            write_atomic(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        say(f"wrote {args.json}")


def _cmd_probe(args: argparse.Namespace) -> None:
    from ..files import write_atomic
    from ..metrics.probe import probe
    from ..tokenizer import load

    result = probe(
        load(args.model),
        args.folder,
        folds=args.folds,
        seed=args.seed,
        limit=args.limit,
        representation=args.representation,
    )
    say(result.table())
    if args.json:
        with writing(args.json):
            write_atomic(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        say(f"wrote {args.json}")
    if args.plot:
        with writing(args.plot):
            result.plot(args.plot)
        say(f"wrote {args.plot}")


def _cmd_bench(args: argparse.Namespace) -> None:
    from ..bench import run_bench, write_report

    codecs = tuple(c.strip() for c in args.codecs.split(",") if c.strip()) if args.codecs else ()
    lpips = None
    if args.lpips:
        from ..metrics.lpips import LPIPS

        backbone_weights, lpips_weights = args.lpips  # argparse: nargs=2
        lpips = LPIPS(backbone_weights, lpips_weights, net=args.lpips_net)
    result = run_bench(
        args.models,
        args.folder,
        codecs=codecs,
        limit=args.limit,
        perceptual=not args.no_perceptual,
        lpips=lpips,
        inception=args.fid_inception,
        downscaled=not args.no_downscaled,
    )
    for name, why in result.missing_codecs.items():
        say(f"vtok: note: {name} left out: {why}", err=True)
    with writing(args.out):
        files = write_report(result, args.out, folder=args.folder)
    for why in result.notes.values():  # perceptual metrics or plots left out: one line each
        say(f"vtok: note: {' '.join(why.split())}", err=True)
    say(Path(files["markdown"]).read_text())
    say(f"wrote {args.out}/ ({', '.join(p.name for p in files.values())})")  # only files that exist


def _cmd_list(args: argparse.Namespace) -> None:
    from ..registry import list_tokenizers
    from ..tokenizer import shipped_models

    say("architectures (vtok.create_tokenizer / model.name in a training config):")
    for name in list_tokenizers():
        say(f"  {name}")
    say("pretrained (vtok.load):")
    for name in shipped_models():
        say(f"  {name}")
    from ..lm import list_lms, shipped_lms

    say("token LM architectures (model.name in an lm-train config):")
    for name in list_lms():
        say(f"  {name}")
    say("pretrained token LMs (vtok.lm.load, --lm):")
    for name in shipped_lms():
        say(f"  {name}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add demo, train, eval, probe, bench and list to the `vtok` subcommands."""
    d = sub.add_parser("demo", help="reconstruct photos at k = 1, 2, 4, ..., K tokens into one PNG sheet")
    d.add_argument("images", nargs="*", help="image files (default: bundled sample photos)")
    d.add_argument("--model", default="default", help="shipped model name or model folder (default: default)")
    d.add_argument("--out", default="vtok_demo.png", help="PNG sheet to write (default: vtok_demo.png)")
    d.add_argument(
        "--effort", type=int, default=0, help="also a row of tokens searched at this effort (1-3), beside the encoder's"
    )
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train", help="train a tokenizer from a YAML config")
    t.add_argument("config", help="YAML file (see configs/), or a run folder to resume")
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

    pr = sub.add_parser("probe", help="what k tokens know: linear probes of EfficientNet features and classes per k")
    pr.add_argument("model", help="shipped model name or model folder")
    pr.add_argument("folder", help="folder of photos (searched recursively; sub-folders are classes where several)")
    pr.add_argument("--json", help="also write the full result as JSON here")
    pr.add_argument("--plot", help="also write the curves against k as a PNG (needs the plot extra)")
    pr.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the folds (default: 0)")
    pr.add_argument("--limit", type=int, default=None, help="use at most this many photos")
    pr.add_argument(
        "--representation",
        choices=("codes", "onehot"),
        default="codes",
        help="tokens as quantized codes or one-hot digits",
    )
    pr.set_defaults(func=_cmd_probe)

    be = sub.add_parser("bench", help="quality per token and per byte, beside JPEG/WebP/AVIF/JPEG XL, with plots")
    be.add_argument("models", nargs="+", help="shipped model names or model folders, then the image folder last")
    be.add_argument("--out", required=True, help="report folder")
    be.add_argument("--limit", type=int, help="use at most this many images")
    be.add_argument("--codecs", default="jpeg,webp,avif,jxl", help="comma-separated; '' for none")
    be.add_argument(
        "--no-downscaled",
        action="store_true",
        help="leave out the codecs on shrunk copies (<codec>-down: what a user wanting a tiny file does)",
    )
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
