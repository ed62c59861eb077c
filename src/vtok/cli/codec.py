"""The commands that read and write .vtok files: ``vtok encode``, ``vtok decode``, ``vtok prior``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import FormatError, VtokError
from .common import expand, max_pixels_option, npy_bytes, outputs, progress, say, writing

__all__ = ["add_commands"]


def _scale(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


def _encode_options(args: argparse.Namespace):
    from ..codec import EncodeOptions

    return EncodeOptions.from_kwargs(
        tokens=args.tokens,
        psnr=args.psnr,
        ssim=args.ssim,
        perceptual=args.perceptual,
        max_bytes=args.max_bytes,
        coding=args.coding,
        allocation=args.allocation,
        overlap=args.overlap,
        effort=args.effort,
        scale=args.scale,
    )


def _cmd_encode(args: argparse.Namespace) -> None:
    from ..codec import encode_image
    from ..files import write_atomic
    from ..tokenizer import load

    options = _encode_options(args)  # checked before any model or image is read
    tok = load(args.model)
    lm = None
    if args.lm:
        from ..lm import load as load_lm

        lm = load_lm(args.lm)
    files = expand(args.inputs, None)
    targets = outputs(files, args.inputs, Path(args.output), ".vtok", {".vtok"})
    failed = 0
    for path, target in zip(progress(files, "encode"), targets):
        try:
            enc = encode_image(path, tok, options, progress=len(files) == 1, lm=lm, max_pixels=args.max_pixels)
        except VtokError as e:
            if len(files) == 1:
                raise
            say(f"vtok: skipped {path}: {_without_path(e, path)}", err=True)
            failed += 1
            continue
        with writing(target):  # an output that cannot be written stops the run: the next would fail too
            write_atomic(target, enc.data)
        say(f"{path} -> {target}: {enc.summary()}")
    if failed:
        raise VtokError(f"{failed} of {len(files)} image(s) could not be encoded")


def _cmd_decode(args: argparse.Namespace) -> None:
    from ..files import write_atomic

    files = expand(args.inputs, {".vtok"})
    fmt = args.tokens_only
    suffix = f".{fmt}" if fmt else ".png"
    targets = outputs(files, args.inputs, Path(args.output), suffix, {suffix})
    failed = 0
    for path, target in zip(progress(files, "decode"), targets):
        try:
            data, summary = _decode_one(path, args.model, fmt, args.lm, args.max_pixels)
        except VtokError as e:  # a bad file (unreadable, corrupt, another model's) is skipped in a batch
            if len(files) == 1:
                raise VtokError(f"{path}: {e}") from e
            say(f"vtok: skipped {path}: {_without_path(e, path)}", err=True)
            failed += 1
            continue
        with writing(target):  # an output that cannot be written stops the run: the next would fail too
            write_atomic(target, data)
        say(f"{path} -> {target}: {summary}")
    if failed:
        raise VtokError(f"{failed} of {len(files)} file(s) could not be decoded")


def _decode_one(
    path: Path, model: str | None, fmt: str | None, lm: str | None = None, max_pixels: int | None = None
) -> tuple[bytes, str]:
    """The bytes to write for one .vtok file (a PNG, or its tokens) and the summary to print."""
    from ..codec import read_tokens
    from ..codec.compress import decode_to_png
    from ..images import MAX_PIXELS

    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels

    try:
        data = path.read_bytes()
    except OSError as e:
        raise FormatError(e.strerror or str(e)) from e
    if fmt:
        tokens = read_tokens(data, model, lm, max_pixels=max_pixels)
        return _token_file_bytes(tokens, fmt), f"{len(tokens.tokens)} tile(s), {int(tokens.counts.sum())} tokens"
    png, f = decode_to_png(data, model, lm, max_pixels=max_pixels)  # band by band: never whole in memory
    return png, f"{f.width}x{f.height}"


def _token_file_bytes(tokens, fmt: str) -> bytes:
    """JSON (tokens per tile and the layout) or .npy ((T, max k) int64, -1 past each tile's count)."""
    if fmt == "json":
        return (json.dumps(tokens.to_dict()) + "\n").encode()
    return npy_bytes(tokens.padded(-1))


def _cmd_prior(args: argparse.Namespace) -> None:
    from ..codec import fit_prior
    from ..tokenizer import load, shipped_models

    out = args.out
    if out is None and args.model in shipped_models() and not Path(args.model).is_dir():
        raise VtokError(
            f"{args.model!r} is a shipped model and is not changed in place: give --out FOLDER for the model "
            "with its new prior"
        )
    tok = load(args.model)
    had_prior = tok.prior is not None
    fit_prior(tok, args.folder, crops_per_image=args.crops)
    with writing(out or args.model):
        folder = tok.save_pretrained(out or args.model)
    say(f"wrote {folder / 'prior.safetensors'} (prior id {tok.prior.id().hex()})")
    if had_prior:  # only a model that had a prior has files coded under it
        say(
            "note: .vtok files ANS-coded under this model's previous prior need that prior to decode; "
            "bit-packed files are unaffected"
        )


def _without_path(error: Exception, path) -> str:
    """An error's message without a leading "PATH: " that the skip line already shows."""
    text = str(error)
    return text[len(f"{path}: ") :] if text.startswith(f"{path}: ") else text


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add encode, decode and prior to the `vtok` subcommands."""
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
    en.add_argument(
        "--coding", choices=["ans", "bitpack", "lm"], help="default: lm with --lm, else ans when the model has a prior"
    )
    en.add_argument("--lm", help="range-code the tokens under this token LM (shipped name or folder): smaller files")
    en.add_argument(
        "--overlap",
        type=int,
        help="pixels shared by neighbouring tiles (default: a quarter tile; smaller files, more visible seams below)",
    )
    en.add_argument(
        "--allocation",
        choices=["per-tile", "mean"],
        default="per-tile",
        help="per-tile: every tile reaches the target; mean: the image's mean does, with the fewest bytes",
    )
    en.add_argument(
        "--effort",
        type=int,
        default=0,
        help="0: the encoder's tokens (fast); 1-3: tokens searched through the decoder, better per byte, "
        "seconds per tile (see the README)",
    )
    en.add_argument(
        "--scale",
        type=_scale,
        default=None,
        help="code the image at this multiple of its size and show it at its own (0.5: half as wide and high), "
        "or 'auto' (the default with --max-bytes): the size that looks best within the budget",
    )
    max_pixels_option(en)
    en.set_defaults(func=_cmd_encode)

    de = sub.add_parser("decode", help="decode .vtok files into PNGs at their original size")
    de.add_argument("inputs", nargs="+", help=".vtok files or folders")
    de.add_argument("-o", "--output", required=True, help="output folder (or FILE.png for a single file)")
    de.add_argument("--model", default=None, help="model folder (default: the shipped model the file names)")
    de.add_argument("--lm", default=None, help="LM folder of an LM-coded file (default: the shipped LM it names)")
    de.add_argument(
        "--tokens-only",
        nargs="?",
        const="json",
        choices=["json", "npy"],
        help="write the tokens instead of pixels: json (tokens per tile and the tile layout, the default) or npy",
    )
    max_pixels_option(de)
    de.set_defaults(func=_cmd_decode)

    pr = sub.add_parser("prior", help="fit the token prior used for entropy coding and save it with the model")
    pr.add_argument("model", help="model folder (a shipped model needs --out)")
    pr.add_argument("folder", help="folder of training images")
    pr.add_argument("--crops", type=int, default=16, help="random crops per image (default 16)")
    pr.add_argument("--out", help="save the model with its prior here instead of in place")
    pr.set_defaults(func=_cmd_prior)
