"""``vtok serve``: the HTTP API and its web page."""

from __future__ import annotations

import argparse

from .common import say

__all__ = ["add_commands"]


def _cmd_serve(args: argparse.Namespace) -> None:
    from ..serve import Limits, create_app, load_lm, load_models, run  # OptionalDependencyError without the extra
    from ..serve.server import is_loopback

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
        say(f"vtok: note: listening on {args.host}: anyone who can reach this machine can use the service", err=True)
    say(f"vtok serve: http://{args.host}:{args.port}/ (models: {', '.join(models)}{'; LM: ' + args.lm if lm else ''})")
    run(app, args.host, args.port, limits)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add serve to the `vtok` subcommands."""
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
