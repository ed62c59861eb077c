"""From the command line's names to a running server: load what the operator named, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from .. import Tokenizer, load, shipped_models
from ..errors import ConfigError
from .limits import Limits

__all__ = ["load_models", "load_lm", "run", "is_loopback"]

log = logging.getLogger("vtok.serve")


def load_models(names: Sequence[str]) -> dict[str, Tokenizer]:
    """Shipped names or folders -> {the name clients use: Tokenizer}. A folder is offered under
    its last component, so that a client never learns (or gives) a path on the server."""
    models: dict[str, Tokenizer] = {}
    for name in names or ["default"]:
        key = name if name in shipped_models() and not Path(name).is_dir() else Path(name).resolve().name
        if key in models:
            raise ConfigError(f"two models would both be offered as {key!r}: rename one folder")
        models[key] = load(name)
    return models


def load_lm(name: str):
    """The token LM the operator named (vtok.lm.load: a shipped name or an LM folder)."""
    from ..lm import load

    return load(name)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(app: FastAPI, host: str, port: int, limits: Limits) -> None:
    """Serve until interrupted. uvicorn's own connection cap is a backstop well above the gate's
    (workers + queue): past it uvicorn answers 503 before any of vtok's code runs."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_keep_alive=5,
        limit_concurrency=4 * (limits.workers + limits.queue) + 64,
        server_header=False,
    )
