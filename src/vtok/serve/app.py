"""The HTTP API and the page: one FastAPI app over loaded tokenizers and, optionally, a token LM.

Every answer to a mistake is JSON ``{"error": "one line"}`` with a 4xx status: 400 (no body),
404 (unknown model, sample, route; generate without an LM), 408 (body too slow), 413 (body or
image too large), 415 (not an image), 422 (anything else about the request: a corrupt image or
.vtok file, token ids of the wrong type, range or length, an option out of range), 429 (queue
full). 503 means the server could not do the work in time and 501 a feature the server lacks
(an optional package); both say when to retry or what to install. A 500 is a bug in vtok.

`create_app` builds one app: it puts what the routes serve on ``app.state``, adds the
middleware, the error handlers (vtok.serve.http_errors, with the one table from vtok's errors
to statuses) and the routes (vtok.serve.routes, one module-level router).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request

from .. import Tokenizer, __version__
from ..bench.codecs import available_codecs
from ..demo import sample_images
from ..errors import VtokError
from . import work
from .http_errors import ApiError, add_error_handlers
from .limits import Gate, Limits
from .routes import MODEL_HELP, PAGE_FILES, router

__all__ = ["create_app", "ApiError"]

log = logging.getLogger("vtok.serve")
STATIC = Path(__file__).parent / "static"
# The page talks to its own origin only, and may show the pictures it builds in memory.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def create_app(
    models: Mapping[str, Tokenizer] | None = None,
    lm: work.TokenLM | None = None,
    limits: Limits | None = None,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The service over `models` ({name clients use: Tokenizer}; default: the shipped
    "default"), with a generate endpoint when `lm` is given. `cors_origins`: origins allowed to
    call the API from other pages; none by default."""
    if models is None:
        from .. import load

        models = {"default": load("default")}
    if not models:
        raise VtokError("serve needs at least one model")
    models = dict(models)
    for tok in models.values():
        # Convolutions in channels-last layout: the same outputs (bit for bit on CPU, tested),
        # about 15% less time for the all-prefixes decode of 64 images.
        tok.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    limits = limits or Limits()
    lm_tok = _lm_tokenizer(lm, models) if lm is not None else None
    lm_name = None if lm_tok is None else next((k for k, t in models.items() if t is lm_tok), lm_tok.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gate = Gate(limits)  # made in the server's event loop, which its semaphore needs
        yield
        app.state.gate.close()

    app = FastAPI(
        title="vtok",
        version=__version__,
        summary="Ordered 1D visual tokenizers: encode an image, decode any prefix, compress to .vtok files.",
        lifespan=lifespan,
    )
    # What the routes serve (vtok.serve.routes reads it from request.app.state).
    app.state.models = models
    app.state.lm = lm
    app.state.lm_tokenizer = lm_tok
    app.state.lm_name = lm_name
    app.state.limits = limits
    app.state.gate = None  # made in the lifespan, or on first use by a server that skips it
    app.state.samples = {p.name: p for p in sample_images()}
    app.state.codecs = [c.name for c in available_codecs(work.EQUAL_BYTES_CODECS)[0]]
    app.state.page = {name: (STATIC / name).read_bytes() for name in ["index.html", *PAGE_FILES]}

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"])

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not request.url.path.startswith(("/docs", "/redoc")):  # FastAPI's docs pages load Swagger's assets
            response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    add_error_handlers(app)
    app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the `model` parameter naming this server's default model."""
    fresh = app.openapi_schema is None
    schema = FastAPI.openapi(app)  # made once, then cached on the app
    if fresh:
        described = MODEL_HELP.format(default=next(iter(app.state.models)))
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for parameter in operation.get("parameters", ()):
                    if parameter.get("name") == "model" and parameter.get("in") == "query":
                        parameter["description"] = described
                        parameter.get("schema", {})["description"] = described
    return schema


def _lm_tokenizer(lm: work.TokenLM, models: dict[str, Tokenizer]) -> Tokenizer:
    """The tokenizer that decodes the LM's tokens: the loaded model of the name the LM's config
    gives, else that name loaded here (the operator named the LM; no client does). vtok.lm checks
    that its weights are the ones the LM learned from."""
    from ..lm import load_tokenizer_for

    name = lm.tokenizer_name
    loaded = next((models[key] for key in (name, Path(name).name) if key in models), None) if name else None
    return load_tokenizer_for(lm, loaded)  # type: ignore[arg-type]
