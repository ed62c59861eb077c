"""The `vtok` command: thin argument parsing over the library.

Every user mistake (a VtokError) becomes one line on stderr and exit status 2, and so does a file
the system will not let vtok read or write (a read-only folder, a full disk): those are the
user's to fix, not tracebacks.

One module per command group (codec, models, serve, lm), each adding its commands with
`add_commands(sub)`; what more than one of them needs is in common.
"""

from __future__ import annotations

import argparse
import logging

from ..errors import VtokError
from . import codec, lm, models, serve
from .common import os_error_text, say

__all__ = ["build_parser", "main", "parse_args"]

# The order `vtok --help` lists the commands in, and argparse's "invalid choice ... (choose from ...)":
# what most users want first, whichever group module adds it.
COMMAND_ORDER = (
    "demo",
    "train",
    "eval",
    "probe",
    "encode",
    "decode",
    "prior",
    "bench",
    "serve",
    "tokenize",
    "lm-train",
    "generate",
    "interleave",
    "list",
)


def _in_order(sub: argparse._SubParsersAction, order: tuple[str, ...]) -> None:
    """Put the added subcommands in `order`, in the help listing and in argparse's choices alike."""
    if set(sub.choices) != set(order):  # a command added or removed without placing it here
        raise AssertionError(f"COMMAND_ORDER {order} does not match the commands {tuple(sub.choices)}")
    for name in order:
        sub.choices[name] = sub.choices.pop(name)  # the same dict as sub._name_parser_map
    sub._choices_actions.sort(key=lambda action: order.index(action.dest))


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    p = argparse.ArgumentParser(
        prog="vtok", description="Ordered 1D visual tokenizers: encode, decode any prefix, train, measure."
    )
    p.add_argument("--version", action="version", version=f"vtok {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, codec, serve, lm):
        group.add_commands(sub)
    _in_order(sub, COMMAND_ORDER)
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
            say("vtok: error: bench needs at least one model and then the image folder", err=True)
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
        say(f"vtok: error: {' '.join(str(e).split())}", err=True)  # always one line
        return 2
    except OSError as e:  # the safety net: commands name their outputs themselves where they know them
        say(f"vtok: error: {' '.join(os_error_text(e).split())}", err=True)
        return 2
    except UnicodeEncodeError as e:  # a print outside say()
        say(f"vtok: error: {e.object[e.start : e.end]!r} cannot be shown in {e.encoding}", err=True)
        return 2
    except KeyboardInterrupt:
        say("vtok: interrupted", err=True)
        return 130
    return 0
