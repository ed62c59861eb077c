"""What more than one command needs: printing, naming OS errors, input files and where their outputs go.

Internal to the `vtok` command; the library below never imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import VtokError

__all__ = [
    "expand",
    "max_pixels_option",
    "npy_bytes",
    "os_error_text",
    "outputs",
    "progress",
    "report_stop",
    "say",
    "writing",
]


def say(text: str, err: bool = False) -> None:
    """print() for every line the command shows, paths above all, escaping what the stream cannot encode.

    A file name need not be valid UTF-8 (Python carries its stray bytes as surrogates), and a strict
    UTF-8 or ASCII stdout would raise on it and stop a folder run half way: what the stream cannot
    encode is escaped instead.
    """
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream)
    except UnicodeEncodeError:  # TextIOWrapper encodes the whole text before writing any of it
        encoding = getattr(stream, "encoding", None) or "ascii"
        print(text.encode(encoding, "backslashreplace").decode(encoding, "replace"), file=stream)


def os_error_text(e: OSError, path: str | os.PathLike | None = None) -> str:
    """'PATH: reason', naming the file the system names, else `path`."""
    where = e.filename if e.filename is not None else path
    why = e.strerror or str(e) or type(e).__name__
    return f"{os.fsdecode(where)}: {why}" if where is not None else why


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """An OSError while writing the output `path` -> a one-line VtokError naming the path.

    For a read-only folder, a full disk, a file where a folder should be.
    """
    try:
        yield
    except OSError as e:
        raise VtokError(os_error_text(e, path)) from e


def report_stop(trainer, config, command: str) -> None:
    """A run stopped early (time limit, signal): where its checkpoint is and how to continue.

    A signal also ends the command with the signal's conventional status.
    """
    if not trainer.stop_reason:
        return
    say(
        f"stopped at step {trainer.step} of {config.optim.steps} ({trainer.stop_reason}); checkpoint saved in "
        f"{trainer.checkpoint_path}; continue with: {command} {config.out_dir} --resume"
    )
    if trainer.stop_reason in ("SIGINT", "SIGTERM"):
        raise SystemExit(130 if trainer.stop_reason == "SIGINT" else 143)


def expand(inputs: list[str], suffixes: set[str] | None) -> list[Path]:
    """Files and folders (searched recursively) -> files, in order."""
    from ..errors import ImageError
    from ..images import IMAGE_EXTENSIONS, find_images

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


def progress(items, desc: str):
    """`items` behind a progress bar when there is more than one, else as they are."""
    from ..progress import progress_bar

    return progress_bar(items, desc, unit="file") if len(items) > 1 else items


def outputs(files: list[Path], inputs: list[str], out: Path, suffix: str, single_suffixes: set[str]) -> list[Path]:
    """Where each input's output goes.

    One input file and an output named *.SUFFIX: that file. Otherwise `out` is a folder that mirrors
    each input folder's tree, so a/x.png and b/x.png cannot overwrite each other; two inputs that
    would still collide are refused.
    """
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


def npy_bytes(array) -> bytes:
    """A .npy file in memory (to be written atomically), never pickled."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _pixels(text: str) -> int:
    """argparse type: a positive number of pixels.

    Named with its underscore on purpose: argparse shows the name in "invalid _pixels value: 'x'".
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {value}")
    return value


def max_pixels_option(p: argparse.ArgumentParser) -> None:
    """Add --max-pixels, the largest image (or tiles' total) a command will read, to `p`."""
    from ..images import MAX_PIXELS

    p.add_argument(
        "--max-pixels",
        type=_pixels,
        default=MAX_PIXELS,
        help=f"refuse an image whose pixels, or whose tiles' pixels, exceed this (default {MAX_PIXELS:,})",
    )
