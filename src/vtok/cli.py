"""The `vtok` command: thin argument parsing over the library.

Every user mistake (a VtokError) becomes one line on stderr and exit status 2, and so does a file
the system will not let vtok read or write (a read-only folder, a full disk): those are the
user's to fix, not tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import FormatError, VtokError

__all__ = ["main"]


def _say(text: str, err: bool = False) -> None:
    """print() for every line the command shows, paths above all. A file name need not be valid
    UTF-8 (Python carries its stray bytes as surrogates), and a strict UTF-8 or ASCII stdout would
    raise on it and stop a folder run half way: what the stream cannot encode is escaped instead."""
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream)
    except UnicodeEncodeError:  # TextIOWrapper encodes the whole text before writing any of it
        encoding = getattr(stream, "encoding", None) or "ascii"
        print(text.encode(encoding, "backslashreplace").decode(encoding, "replace"), file=stream)


def _os_error_text(e: OSError, path: str | os.PathLike | None = None) -> str:
    """'PATH: reason', naming the file the system names, else `path`."""
    where = e.filename if e.filename is not None else path
    why = e.strerror or str(e) or type(e).__name__
    return f"{os.fsdecode(where)}: {why}" if where is not None else why


@contextmanager
def _writing(path: str | os.PathLike) -> Iterator[None]:
    """An OSError while writing the output `path` (a read-only folder, a full disk, a file where a
    folder should be) -> a one-line VtokError naming the path."""
    try:
        yield
    except OSError as e:
        raise VtokError(_os_error_text(e, path)) from e


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    with _writing(args.out):
        result = run_demo(args.images or None, model=args.model, out=args.out)
    _say(result.table())
    _say(f"wrote {result.sheet}")


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import Trainer, load_run_config

    config = load_run_config(args.config, args.overrides, resume=args.resume)
    with _writing(config.out_dir):  # the run writes nowhere else
        trainer = Trainer(config)
        folder = trainer.fit(resume=args.resume, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    if trainer.unreadable:
        _say(f"skipped {len(trainer.unreadable)} unreadable image file(s), e.g. {trainer.unreadable[0]}")
    _report_stop(trainer, config, "vtok train")
    _say(f"trained model in {folder}")


def _report_stop(trainer, config, command: str) -> None:
    """A run stopped early (time limit, signal): where its checkpoint is and how to continue; a
    signal also ends the command with the signal's conventional status."""
    if not trainer.stop_reason:
        return
    _say(
        f"stopped at step {trainer.step} of {config.optim.steps} ({trainer.stop_reason}); checkpoint saved in "
        f"{trainer.checkpoint_path}; continue with: {command} {config.out_dir} --resume"
    )
    if trainer.stop_reason in ("SIGINT", "SIGTERM"):
        raise SystemExit(130 if trainer.stop_reason == "SIGINT" else 143)


def _cmd_eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate
    from .files import write_atomic
    from .tokenizer import load

    result = evaluate(load(args.model), args.folder, batch_size=args.batch_size, limit=args.limit)
    _say(result.table())
    if args.json:
        with _writing(args.json):
            write_atomic(args.json, json.dumps(result.to_dict(), indent=2) + "\n")
        _say(f"wrote {args.json}")


def _expand(inputs: list[str], suffixes: set[str] | None) -> list[Path]:
    """Files and folders (searched recursively) -> files, in order."""
    from .errors import ImageError
    from .images import IMAGE_EXTENSIONS, find_images

    suffixes = suffixes or IMAGE_EXTENSIONS
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = find_images(path, suffixes)
            if not found:
                raise ImageError(f"{path}: no {'/'.join(sorted(suffixes))} files found")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ImageError(f"{path}: no such file or folder")
    return files


def _progress(items, desc: str):
    from .progress import progress_bar

    return progress_bar(items, desc, unit="file") if len(items) > 1 else items


def _outputs(files: list[Path], inputs: list[str], out: Path, suffix: str, single_suffixes: set[str]) -> list[Path]:
    """Where each input's output goes. One input file and an output named *.SUFFIX: that file.
    Otherwise `out` is a folder that mirrors each input folder's tree, so a/x.png and b/x.png
    cannot overwrite each other; two inputs that would still collide are refused."""
    if len(files) == 1 and len(inputs) == 1 and Path(inputs[0]).is_file() and out.suffix.lower() in single_suffixes:
        return [out]
    if out.suffix.lower() in single_suffixes:
        raise VtokError(
            f"{out} names one file, but the input is {'a folder' if len(files) == 1 else f'{len(files)} files'}: "
            "give an output folder"
        )
    if out.exists() and not out.is_dir():
        raise VtokError(f"{out} exists and is not a folder")
    file_like = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".vtok", ".json", ".npy"}
    if not out.exists() and out.suffix.lower() in file_like - single_suffixes:
        wanted = " or ".join(sorted(single_suffixes))
        raise VtokError(f"{out} looks like a file name, but this command writes {wanted} files: name it *{wanted}, "
                        "or give a folder")  # fmt: skip
    targets: list[Path] = []
    for path in files:
        root = next((Path(i) for i in inputs if Path(i).is_dir() and Path(i) in path.parents), None)
        relative = path.relative_to(root) if root is not None else Path(path.name)
        targets.append(out / relative.with_suffix(suffix))
    seen: dict[Path, Path] = {}
    for path, target in zip(files, targets):
        if target in seen:
            raise VtokError(f"{seen[target]} and {path} would both be written to {target}: encode them apart")
        seen[target] = path
    return targets


def _scale(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


def _encode_options(args: argparse.Namespace):
    from .codec import EncodeOptions

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
    from .codec import encode_image
    from .files import write_atomic
    from .tokenizer import load

    options = _encode_options(args)  # checked before any model or image is read
    tok = load(args.model)
    lm = None
    if args.lm:
        from .lm import load as load_lm

        lm = load_lm(args.lm)
    files = _expand(args.inputs, None)
    targets = _outputs(files, args.inputs, Path(args.output), ".vtok", {".vtok"})
    failed = 0
    for path, target in zip(_progress(files, "encode"), targets):
        try:
            enc = encode_image(path, tok, options, progress=len(files) == 1, lm=lm, max_pixels=args.max_pixels)
        except VtokError as e:
            if len(files) == 1:
                raise
            _say(f"vtok: skipped {path}: {e}", err=True)
            failed += 1
            continue
        with _writing(target):  # an output that cannot be written stops the run: the next would fail too
            write_atomic(target, enc.data)
        _say(f"{path} -> {target}: {enc.summary()}")
    if failed:
        raise VtokError(f"{failed} of {len(files)} image(s) could not be encoded")


def _cmd_decode(args: argparse.Namespace) -> None:
    from .files import write_atomic

    files = _expand(args.inputs, {".vtok"})
    fmt = args.tokens_only
    suffix = f".{fmt}" if fmt else ".png"
    targets = _outputs(files, args.inputs, Path(args.output), suffix, {suffix})
    failed = 0
    for path, target in zip(_progress(files, "decode"), targets):
        try:
            data, summary = _decode_one(path, args.model, fmt, args.lm, args.max_pixels)
        except VtokError as e:  # a bad file (unreadable, corrupt, another model's) is skipped in a batch
            if len(files) == 1:
                raise VtokError(f"{path}: {e}") from e
            _say(f"vtok: skipped {path}: {e}", err=True)
            failed += 1
            continue
        with _writing(target):  # an output that cannot be written stops the run: the next would fail too
            write_atomic(target, data)
        _say(f"{path} -> {target}: {summary}")
    if failed:
        raise VtokError(f"{failed} of {len(files)} file(s) could not be decoded")


def _decode_one(
    path: Path, model: str | None, fmt: str | None, lm: str | None = None, max_pixels: int | None = None
) -> tuple[bytes, str]:
    """The bytes to write for one .vtok file (a PNG, or its tokens) and the summary to print."""
    from .codec import read_tokens
    from .codec.compress import decode_to_png
    from .images import MAX_PIXELS

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
    return _npy_bytes(tokens.padded(-1))


def _npy_bytes(array) -> bytes:
    """A .npy file in memory (to be written atomically), never pickled."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _cmd_prior(args: argparse.Namespace) -> None:
    from .codec import fit_prior
    from .tokenizer import load, shipped_models

    out = args.out
    if out is None and args.model in shipped_models() and not Path(args.model).is_dir():
        raise VtokError(
            f"{args.model!r} is a shipped model and is not changed in place: give --out FOLDER for the model "
            "with its new prior"
        )
    tok = load(args.model)
    fit_prior(tok, args.folder, crops_per_image=args.crops)
    with _writing(out or args.model):
        folder = tok.save_pretrained(out or args.model)
    _say(f"wrote {folder / 'prior.safetensors'} (prior id {tok.prior.id().hex()})")
    _say(
        "note: .vtok files ANS-coded under this model's previous prior need that prior to decode; "
        "bit-packed files are unaffected"
    )


def _cmd_bench(args: argparse.Namespace) -> None:
    from .bench import run_bench, write_report

    codecs = tuple(c.strip() for c in args.codecs.split(",") if c.strip()) if args.codecs else ()
    lpips = None
    if args.lpips:
        from .metrics.lpips import LPIPS

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
        _say(f"vtok: note: {name} left out: {why}", err=True)
    with _writing(args.out):
        files = write_report(result, args.out, folder=args.folder)
    for why in result.notes.values():  # perceptual metrics or plots left out: one line each
        _say(f"vtok: note: {' '.join(why.split())}", err=True)
    _say(Path(files["markdown"]).read_text())
    _say(f"wrote {args.out}/ ({', '.join(p.name for p in files.values())})")  # only files that exist


def _cmd_serve(args: argparse.Namespace) -> None:
    from .serve import Limits, create_app, load_lm, load_models, run  # OptionalDependencyError without the extra
    from .serve.server import is_loopback

    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        workers=args.workers,
        queue=args.queue,
        work_timeout_s=args.timeout,
    )
    models = load_models(args.model or ["default"])
    lm = load_lm(args.lm) if args.lm else None
    app = create_app(models, lm=lm, limits=limits, cors_origins=args.cors or ())
    if not is_loopback(args.host):
        _say(f"vtok: note: listening on {args.host}: anyone who can reach this machine can use the service", err=True)
    _say(f"vtok serve: http://{args.host}:{args.port}/ (models: {', '.join(models)}{'; LM: ' + args.lm if lm else ''})")
    run(app, args.host, args.port, limits)


def _cmd_list(args: argparse.Namespace) -> None:
    from .registry import list_tokenizers
    from .tokenizer import shipped_models

    _say("architectures (vtok.create_tokenizer / model.name in a training config):")
    for name in list_tokenizers():
        _say(f"  {name}")
    _say("pretrained (vtok.load):")
    for name in shipped_models():
        _say(f"  {name}")
    from .lm import list_lms, shipped_lms

    _say("token LM architectures (model.name in an lm-train config):")
    for name in list_lms():
        _say(f"  {name}")
    _say("pretrained token LMs (vtok.lm.load, --lm):")
    for name in shipped_lms():
        _say(f"  {name}")


def _pixels(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {value}")
    return value


def _max_pixels_option(p: argparse.ArgumentParser) -> None:
    from .images import MAX_PIXELS

    p.add_argument(
        "--max-pixels",
        type=_pixels,
        default=MAX_PIXELS,
        help=f"refuse an image whose pixels, or whose tiles' pixels, exceed this (default {MAX_PIXELS:,})",
    )


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

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
    _max_pixels_option(en)
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
    _max_pixels_option(de)
    de.set_defaults(func=_cmd_decode)

    pr = sub.add_parser("prior", help="fit the token prior used for entropy coding and save it with the model")
    pr.add_argument("model", help="model folder (a shipped model needs --out)")
    pr.add_argument("folder", help="folder of training images")
    pr.add_argument("--crops", type=int, default=16, help="random crops per image (default 16)")
    pr.add_argument("--out", help="save the model with its prior here instead of in place")
    pr.set_defaults(func=_cmd_prior)

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

    sv = sub.add_parser("serve", help="HTTP API and a web page with a slider over the number of tokens")
    sv.add_argument(
        "--model", action="append", help="shipped model name or model folder; repeat for several (default: default)"
    )
    sv.add_argument("--lm", help="token LM (name or folder) for the generate endpoint and panel")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=1, help="model jobs at once (default 1)")
    sv.add_argument(
        "--queue", type=int, default=32, help="requests that may wait for a worker; more get 429 (default 32)"
    )
    sv.add_argument("--timeout", type=float, default=60.0, help="longest model job in seconds; then 503 (default 60)")
    sv.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MiB (default 20)")
    sv.add_argument("--max-pixels", type=int, default=16_000_000, help="largest image in pixels (default 16000000)")
    sv.add_argument(
        "--cors", action="append", metavar="ORIGIN", help="allow this origin to call the API (default: none)"
    )
    sv.set_defaults(func=_cmd_serve)

    from .cli_lm import add_commands

    add_commands(sub)  # tokenize, lm-train, generate

    ls = sub.add_parser("list", help="list architectures and shipped pretrained models")
    ls.set_defaults(func=_cmd_list)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with `train` and `lm-train` overrides accepted on either side of their flags
    (`vtok train RUN --resume threads=4`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra
        ):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "bench":
        if len(args.models) < 2:
            _say("vtok: error: bench needs at least one model and then the image folder", err=True)
            return 2
        args.models, args.folder = args.models[:-1], args.models[-1]
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "train" else logging.WARNING, format="%(message)s"
    )
    if not args.verbose:  # e.g. "Could not save font_manager cache" on a full disk: vtok's own line says it
        logging.getLogger("matplotlib").setLevel(logging.ERROR)
    try:
        args.func(args)
    except VtokError as e:
        _say(f"vtok: error: {' '.join(str(e).split())}", err=True)  # always one line
        return 2
    except OSError as e:  # the safety net: commands name their outputs themselves where they know them
        _say(f"vtok: error: {' '.join(_os_error_text(e).split())}", err=True)
        return 2
    except UnicodeEncodeError as e:  # a print outside _say
        _say(f"vtok: error: {e.object[e.start : e.end]!r} cannot be shown in {e.encoding}", err=True)
        return 2
    except KeyboardInterrupt:
        _say("vtok: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
