"""The HTTP API and the page: one FastAPI app over loaded tokenizers and, optionally, a token LM.

Every answer to a mistake is JSON ``{"error": "one line"}`` with a 4xx status: 400 (no body),
404 (unknown model, sample, route; generate without an LM), 408 (body too slow), 413 (body or
image too large), 415 (not an image), 422 (anything else about the request: a corrupt image or
.vtok file, token ids of the wrong type, range or length, an option out of range), 429 (queue
full). 503 means the server could not do the work in time and 501 a feature the server lacks
(an optional package); both say when to retry or what to install. A 500 is a bug in vtok.

Clients never name files or folders: models are picked by the names the operator loaded them
under, samples by their names in a fixed table. Bodies are read here, with the byte cap
checked against Content-Length before reading and against the stream while reading.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import EncodeOptions, Tokenizer, __version__
from ..bench.codecs import available_codecs
from ..demo import sample_images
from ..errors import ModelLoadError, OptionalDependencyError, VtokError
from . import work
from .limits import Busy, Gate, Limits

__all__ = ["create_app", "ApiError"]

log = logging.getLogger("vtok.serve")
STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# The page talks to its own origin only, and may show the pictures it builds in memory.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
IMAGE_BODY = {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}, "required": True}
VTOK_BODY = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


def _scale_param(text: str | None) -> float | str | None:
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ApiError(422, f"scale must be 'auto' or a number, got {text!r}") from None


class ApiError(Exception):
    """A refusal with its status and one line for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class DecodeRequest(BaseModel):
    """One prefix of token ids. Strict: 3.0, "3" and true are refused, not converted."""

    model_config = ConfigDict(extra="forbid")
    tokens: list[StrictInt] = Field(description="token ids, 1 <= length <= K, each in [0, codebook size)")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: StrictInt = Field(4, ge=1, description="images to sample (at most the server's max_generate)")
    num_tokens: StrictInt | None = Field(None, ge=1, description="tokens per image (default: the LM's K)")
    class_label: StrictStr | StrictInt | None = Field(
        None, description="a class name or index, for class-conditional LMs"
    )
    cfg: float = Field(1.0, ge=0, le=20, description="classifier-free guidance scale")
    temperature: float = Field(1.0, gt=0, le=10)
    top_k: StrictInt | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: StrictInt | None = Field(None, ge=0, le=2**63 - 1)


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error(status: int, message: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=status, headers=headers)


def _vtok_status(e: VtokError) -> int:
    if isinstance(e, work.ImageRefused):
        return e.status
    if isinstance(e, OptionalDependencyError):
        return 501
    if isinstance(e, ModelLoadError):
        return 404
    return 422  # ImageError, TokenError, ConfigError, FormatError, and the rest of the family


def _validation_message(errors: Sequence[Any]) -> str:
    """Pydantic's first complaint as 'field: what is wrong'."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body", "path"))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))


async def read_body(request: Request, limits: Limits, what: str) -> bytes:
    """The whole body, refused (413) as soon as it is known to exceed the cap, 400 when empty,
    408 when it takes longer than the body time limit to arrive."""
    cap = limits.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "Content-Length is not a number")
        if int(declared) > cap:
            raise ApiError(413, f"{what} of {declared} bytes is over this server's limit of {cap} bytes")

    async def receive() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise ApiError(413, f"{what} is over this server's limit of {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        data = await asyncio.wait_for(receive(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the {what} did not arrive within {limits.body_timeout_s:g} s") from None
    if not data:
        raise ApiError(400, f"empty request: send the {what} as the request body")
    return data


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
    samples = {p.name: p for p in sample_images()}
    codecs = [c.name for c in available_codecs(work.EQUAL_BYTES_CODECS)[0]]
    page = {name: (STATIC / name).read_bytes() for name in ["index.html", *PAGE_FILES]}

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

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.headers)

    @app.exception_handler(Busy)
    async def busy(request: Request, e: Busy) -> JSONResponse:
        return _error(e.status, e.message, {"Retry-After": str(e.retry_after_s)})

    @app.exception_handler(VtokError)
    async def vtok_error(request: Request, e: VtokError) -> JSONResponse:
        return _error(_vtok_status(e), e)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = f"no such page: {request.method} {request.url.path}" if e.status_code == 404 else e.detail
        return _error(e.status_code, message, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:  # the server logs the traceback too
        return _error(500, f"internal error in vtok serve, a bug: {type(e).__name__}")

    def tokenizer(name: str | None) -> Tokenizer:
        if name is None:
            return next(iter(models.values()))
        if name not in models:
            raise ApiError(404, f"unknown model {name!r}; this server has: {', '.join(models)}")
        return models[name]

    async def on_image(request: Request, fn: Callable[..., Any], tok: Tokenizer, *args: Any) -> Any:
        """fn(tok, image, *args) on the body's image: reading the image is model work too, in the
        same job, so that one request waits in the queue once."""
        data = await read_body(request, limits, "image")

        def job() -> Any:
            return fn(tok, work.read_image(data, limits.max_pixels), *args)

        return await gate(request).run(job)

    def gate(request: Request) -> Gate:
        state = request.app.state
        if getattr(state, "gate", None) is None:  # a server that skipped the lifespan: made on first use
            state.gate = Gate(limits)
        return state.gate

    model_query = Query(None, max_length=200, description=f"a loaded model's name (default: {next(iter(models))})")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page["index.html"], media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in PAGE_FILES:
            raise ApiError(404, f"no such page file: {name}")
        return Response(page[name], media_type=PAGE_FILES[name])

    @app.get("/api/health", summary="Liveness and load")
    async def health(request: Request) -> dict[str, Any]:
        g = gate(request)
        return {
            "status": "ok",
            "models": list(models),
            "lm": lm is not None,
            "running": g.running,
            "waiting": g.waiting,
        }

    @app.get("/api/models", summary="Loaded models, the LM, the limits")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": name,
                    "image_size": tok.image_size,
                    "num_tokens": tok.num_tokens,
                    "codebook_size": tok.codebook_size,
                    "bits_per_token": tok.bits_per_token,
                    "prior": tok.prior is not None,
                }
                for name, tok in models.items()
            ],
            "lm": None
            if lm is None
            else {"name": lm.name, "tokenizer": lm_name, "num_tokens": lm.num_positions, "classes": list(lm.classes)},
            "codecs": codecs,
            "limits": {
                "max_upload_bytes": limits.max_upload_bytes,
                "max_pixels": limits.max_pixels,
                "max_generate": limits.max_generate,
            },
        }

    @app.get("/api/samples", summary="The bundled sample photos")
    async def list_samples() -> list[dict[str, str]]:
        return [{"name": name, "url": f"/api/samples/{name}"} for name in samples]

    @app.get("/api/samples/{name}", summary="One bundled sample photo", response_class=Response)
    async def sample(name: str) -> Response:
        if name not in samples:
            raise ApiError(404, f"no sample named {name!r}; samples: {', '.join(samples)}")
        return Response(samples[name].read_bytes(), media_type="image/jpeg")

    @app.post(
        "/api/encode",
        summary="Image -> tokens, with the .vtok bytes of every prefix",
        openapi_extra={"requestBody": IMAGE_BODY},
    )
    async def encode(
        request: Request,
        model: str | None = model_query,
        tokens: int | None = Query(None, ge=1, description="how many tokens to return (default: all K)"),
    ) -> dict[str, Any]:
        tok = tokenizer(model)
        return {"model": _name(models, tok)} | await on_image(request, work.encode, tok, tokens)

    @app.post(
        "/api/decode",
        summary="Token ids -> PNG",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": DecodeRequest.model_json_schema()}}}},
    )
    async def decode(request: Request, model: str | None = model_query) -> Response:
        tok = tokenizer(model)
        body = _parse(DecodeRequest, await read_body(request, limits, "JSON body"))
        png = await gate(request).run(work.decode_png, tok, body.tokens)
        return Response(png, media_type="image/png")

    @app.post(
        "/api/prefixes",
        summary="Image -> every prefix k = 1..K at once: pictures, bytes, PSNR, SSIM (one request per slider)",
        openapi_extra={"requestBody": IMAGE_BODY},
    )
    async def prefixes(
        request: Request,
        model: str | None = model_query,
        pixels: Literal["png", "raw"] = Query(
            "png", description="png: a PNG data URL per k; raw: one base64 (K, S, S, 3) uint8 RGB block"
        ),
    ) -> dict[str, Any]:
        tok = tokenizer(model)
        return {"model": _name(models, tok)} | await on_image(request, work.all_prefixes, tok, pixels)

    @app.post(
        "/api/equal-bytes",
        summary="Image -> a classical codec's best file within the vtok bytes of every prefix k",
        openapi_extra={"requestBody": IMAGE_BODY},
    )
    async def equal_bytes(
        request: Request,
        model: str | None = model_query,
        codec: Literal["jpeg", "webp", "avif"] = Query("jpeg"),
    ) -> dict[str, Any]:
        tok = tokenizer(model)
        if codec not in codecs:
            raise ApiError(501, f"this server's Pillow cannot write {codec}")
        return {"model": _name(models, tok)} | await on_image(request, work.equal_bytes, tok, codec)

    @app.post(
        "/api/compress",
        summary="Image (any size) -> .vtok file, at a target: tokens, PSNR, SSIM, perceptual distance or bytes",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
        openapi_extra={"requestBody": IMAGE_BODY},
    )
    async def compress(
        request: Request,
        model: str | None = model_query,
        tokens: int | None = Query(None, description="tokens per tile"),
        psnr: float | None = Query(None, description="smallest k per tile reaching this PSNR (dB)"),
        ssim: float | None = Query(None, description="smallest k per tile reaching this SSIM"),
        perceptual: float | None = Query(None, description="smallest k per tile within this feature distance"),
        max_bytes: int | None = Query(None, description="largest file size in bytes"),
        allocation: Literal["per-tile", "mean"] = Query("per-tile"),
        coding: Literal["ans", "bitpack", "lm"] | None = Query(
            None, description="ans (under the model's prior), bitpack, or lm (under the server's token LM)"
        ),
        effort: int = Query(0, description="0: the encoder's tokens; 1-3: searched tokens, better per byte, slower"),
        scale: str | None = Query(
            None, description="code at this multiple of the size (e.g. 0.5), or 'auto' (default with max_bytes)"
        ),
    ) -> Response:
        tok = tokenizer(model)
        options = EncodeOptions.from_kwargs(  # checked before the image is read
            tokens=tokens,
            psnr=psnr,
            ssim=ssim,
            perceptual=perceptual,
            max_bytes=max_bytes,
            allocation=allocation,
            coding=coding,
            effort=effort,
            scale=_scale_param(scale),
        )
        if coding == "lm" and (lm is None or tok is not lm_tok):
            raise ApiError(422, "coding=lm needs a server started with --lm, and the model that LM decodes")
        data, facts = await on_image(request, work.compress_image, tok, options, lm if coding == "lm" else None)
        headers = {f"X-Vtok-{key.replace('_', '-').title()}": str(value) for key, value in facts.items()}
        headers["Content-Disposition"] = 'attachment; filename="image.vtok"'
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.post(
        "/api/decompress",
        summary=".vtok file -> PNG at its original size",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
        openapi_extra={"requestBody": VTOK_BODY},
    )
    async def decompress(request: Request, model: str | None = model_query) -> Response:
        candidates = [tokenizer(model)] if model is not None else list(models.values())
        data = await read_body(request, limits, ".vtok file")
        png, name = await gate(request).run(work.decompress_png, candidates, data, limits.max_pixels, lm)
        return Response(png, media_type="image/png", headers={"X-Vtok-Model": name})

    @app.post(
        "/api/generate",
        summary="Sample images from the token LM, each with its progressive strip (404 unless started with --lm)",
        openapi_extra={
            "requestBody": {"content": {"application/json": {"schema": GenerateRequest.model_json_schema()}}}
        },
    )
    async def generate(request: Request) -> dict[str, Any]:
        if lm is None or lm_tok is None:
            raise ApiError(404, "no token LM is loaded: start the server with --lm LM")
        body = _parse(GenerateRequest, await read_body(request, limits, "JSON body"))
        if body.n > limits.max_generate:
            raise ApiError(422, f"n: at most {limits.max_generate} images per request, got {body.n}")
        if body.num_tokens is not None and body.num_tokens > lm.num_positions:
            raise ApiError(422, f"num_tokens: this LM makes at most {lm.num_positions} tokens, got {body.num_tokens}")
        class_index = _class_index(lm, body.class_label)
        sampling = body.model_dump(exclude={"n", "class_label"})
        job = functools.partial(work.generate, lm, lm_tok, body.n, class_index, **sampling)
        result = await gate(request).run(job)
        return {"model": lm_name} | result

    return app


def _name(models: Mapping[str, Tokenizer], tok: Tokenizer) -> str:
    return next(name for name, t in models.items() if t is tok)


def _parse(kind: type[BaseModel], data: bytes) -> Any:
    try:
        return kind.model_validate_json(data)
    except ValidationError as e:
        raise ApiError(422, _validation_message(e.errors())) from None


def _class_index(lm: work.TokenLM, label: str | int | None) -> int | None:
    """A class name or index -> the index the LM takes; refused for an unconditional LM."""
    if label is None:
        return None
    classes = list(lm.classes)
    if not classes:
        raise ApiError(422, "class_label: this LM is unconditional (it has no classes)")
    if isinstance(label, str):
        if label not in classes:
            raise ApiError(422, f"class_label: unknown class {label!r}; this LM has {len(classes)} classes")
        return classes.index(label)
    if not 0 <= label < len(classes):
        raise ApiError(422, f"class_label: index must lie in 0..{len(classes) - 1}, got {label}")
    return label


def _lm_tokenizer(lm: work.TokenLM, models: dict[str, Tokenizer]) -> Tokenizer:
    """The tokenizer that decodes the LM's tokens: the loaded model of the name the LM's config
    gives, else that name loaded here (the operator named the LM; no client does). vtok.lm checks
    that its weights are the ones the LM learned from."""
    from ..lm import load_tokenizer_for

    name = lm.tokenizer_name
    loaded = next((models[key] for key in (name, Path(name).name) if key in models), None) if name else None
    return load_tokenizer_for(lm, loaded)  # type: ignore[arg-type]
