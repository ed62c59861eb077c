"""The commands that speak in tokens: ``vtok tokenize``, ``vtok lm-train``, ``vtok generate``."""

from __future__ import annotations

import argparse
import json
import os

from .common import npy_bytes, report_stop, say, writing

__all__ = ["add_commands"]


def _cmd_tokenize(args: argparse.Namespace) -> None:
    from ..shards import ShardSettings, tokenize_images
    from ..tokenizer import load, shipped_models

    rank, world, barrier = 0, 1, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: split the shards between processes
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
        rank, world, barrier = dist.get_rank(), dist.get_world_size(), dist.barrier
    tok = load(args.model)
    ref = args.model if args.model in shipped_models() else os.path.abspath(args.model)  # what loads it again
    settings = ShardSettings(flip=args.flip, crops=args.crops, images_per_shard=args.images_per_shard)
    with writing(args.out):
        result = tokenize_images(
            args.images,
            args.out,
            tok,
            settings,
            rank=rank,
            world_size=world,
            barrier=barrier,
            batch_size=args.batch_size,
            tokenizer_ref=ref,
        )
    if rank != 0:
        return
    rate = f"{result.images / result.seconds:.1f} images/s" if result.shards_written else "nothing left to do"
    say(f"{result.images} images, {result.rows} token rows in {result.out} ({rate})")
    if result.unreadable:
        first = result.unreadable[0]
        say(f"skipped {len(result.unreadable)} unreadable image(s), e.g. {first['path']}: {first['reason']}")
        say(f"every one is listed in {result.out / 'manifest.json'}")
        raise SystemExit(1)


def _cmd_lm_train(args: argparse.Namespace) -> None:
    from ..train.config import load_run_config
    from ..train.lm_trainer import LMTrainConfig, LMTrainer

    config = load_run_config(
        args.config, args.overrides, resume=args.resume, schema=LMTrainConfig, command="vtok lm-train"
    )
    with writing(config.out_dir):
        trainer = LMTrainer(config)
        folder = trainer.fit(resume=args.resume, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    report_stop(trainer, config, "vtok lm-train")
    say(f"trained LM in {folder}")


def _cmd_generate(args: argparse.Namespace) -> None:
    from pathlib import Path

    import numpy as np

    from ..images import tensor_to_pil
    from ..lm import load, load_tokenizer_for
    from ..lm.sheets import progressive_sheet, sample_sheet
    from ..viz import save_image_atomic

    lm = load(args.lm)
    lm.class_id(args.class_label)  # an unknown class is refused before the tokenizer loads
    tok = load_tokenizer_for(lm, args.model)
    tokens = lm.generate(
        args.n,
        num_tokens=args.tokens,
        class_label=args.class_label,
        cfg=args.cfg,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    out = Path(args.out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(tok.decode(tokens)):
            save_image_atomic(tensor_to_pil(image), out / f"sample_{i:04d}.png")
        save_image_atomic(sample_sheet(tok, tokens), out / "sheet.png")
        save_image_atomic(progressive_sheet(tok, tokens[: min(4, len(tokens))]), out / "progressive.png")
        from ..files import write_atomic

        write_atomic(out / "tokens.npy", npy_bytes(tokens.numpy().astype(np.int64)))
        write_atomic(out / "tokens.json", json.dumps({"lm": lm.name, "tokens": tokens.tolist()}).encode())
    say(f"wrote {len(tokens)} samples of {tokens.shape[1]} tokens to {out} (sheet.png, progressive.png, tokens.npy)")


def _cmd_interleave(args: argparse.Namespace) -> None:
    from ..errors import VtokError
    from ..llm import ImageVocabulary, write_interleaved

    try:
        texts = json.loads(open(args.texts, encoding="utf-8").read())
    except (OSError, ValueError) as e:
        raise VtokError(f"{args.texts}: cannot read a JSON object of texts ({e})") from e
    if not isinstance(texts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in texts.items()):
        raise VtokError(f"{args.texts}: must be a JSON object mapping shard keys to texts")
    vocab = ImageVocabulary.from_pretrained(args.tokenizer)
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    views = None if args.views == "all" else [v.strip() for v in args.views.split(",") if v.strip()]
    with writing(args.out):
        files = write_interleaved(
            args.shards, texts, vocab, args.out, orders=orders, num_tokens=args.num_tokens, views=views
        )
    say(f"wrote {len(files)} Parquet file(s) in {args.out}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add tokenize, lm-train, generate and interleave to the `vtok` subcommands."""
    tz = sub.add_parser("tokenize", help="pre-tokenize a folder of images into Parquet shards (for LM training)")
    tz.add_argument("images", help="folder of images (subfolders are class labels, as in ImageFolder)")
    tz.add_argument("--out", required=True, help="shard folder to write (a killed run continues where it stopped)")
    tz.add_argument("--model", default="default", help="tokenizer: shipped name or folder (default: default)")
    tz.add_argument("--flip", action="store_true", help="also tokenize each image mirrored")
    tz.add_argument("--crops", type=int, default=0, help="also tokenize this many random square crops per image")
    tz.add_argument("--images-per-shard", type=int, default=256)
    tz.add_argument("--batch-size", type=int, default=64)
    tz.set_defaults(func=_cmd_tokenize)

    lt = sub.add_parser("lm-train", help="train a token LM on shards from a YAML config")
    lt.add_argument("config", help="YAML file (see configs/lm-*.yaml), or a run folder to resume")
    lt.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.steps=100")
    lt.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt if present")
    lt.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time (resumable)")
    lt.set_defaults(func=_cmd_lm_train)

    ge = sub.add_parser("generate", help="sample images from a token LM, coarse to fine")
    ge.add_argument("lm", help="shipped LM name (default) or LM folder")
    ge.add_argument("-n", type=int, default=8, help="number of samples (default 8)")
    ge.add_argument("--tokens", type=int, default=None, help="tokens per sample, 1..K (default K)")
    ge.add_argument("--class", dest="class_label", default=None, help="class name or id (class-conditional LMs)")
    ge.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (with --class)")
    ge.add_argument("--temperature", type=float, default=1.0)
    ge.add_argument("--top-k", type=int, default=None, help="keep the k likeliest values of each token digit")
    ge.add_argument("--top-p", type=float, default=None, help="nucleus sampling on each token digit")
    ge.add_argument("--seed", type=int, default=None)
    ge.add_argument("--model", default=None, help="tokenizer to decode with (default: the one the LM names)")
    ge.add_argument("--out", required=True, help="folder for the PNGs, sheet.png, progressive.png and tokens")
    ge.set_defaults(func=_cmd_generate)

    il = sub.add_parser(
        "interleave", help="token shards + texts -> interleaved text+image Parquet for a Hugging Face LM"
    )
    il.add_argument("shards", help="a `vtok tokenize` shard folder")
    il.add_argument("texts", help="JSON object: shard key (the image's path in the tokenized folder) -> its text")
    il.add_argument("--tokenizer", required=True, help="folder of an extended tokenizer (vtok.llm save_pretrained)")
    il.add_argument("--out", required=True, help="folder for part-*.parquet (columns text, input_ids, order, key)")
    il.add_argument("--num-tokens", type=int, default=None, help="keep this prefix of each image (default: all)")
    il.add_argument(
        "--orders", default="text-image,image-text", help="text-image (generation), image-text (understanding)"
    )
    il.add_argument("--views", default="original", help="comma-separated shard views, or 'all' (default: original)")
    il.set_defaults(func=_cmd_interleave)
