"""The routes of the API and the page, on one module-level router.

Nothing here is bound to one server: each route reads what it serves from ``request.app.state``,
which `create_app` fills: ``models`` ({name: Tokenizer}, the first the default), ``lm`` (the
token LM or None), ``lm_tokenizer`` and ``lm_name`` (the loaded model that decodes the LM's
tokens, and its name), ``limits``, ``gate`` (made in the lifespan, else on first use),
``samples`` ({name: path}), ``codecs`` (the equal-bytes codecs this Pillow writes) and ``page``
({file name: bytes}).

Clients never name files or folders: models are picked by the names the operator loaded them
under, samples by their names in a fixed table. Bodies are read here, with the byte cap
checked against Content-Length before reading and against the stream while reading.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from .. import EncodeOptions, Tokenizer
from ..codec.search import check_effort
from . import work
from .http_errors import ApiError, validation_message
from .limits import Gate, Limits

__all__ = ["router", "read_body", "MODEL_HELP", "DecodeRequest", "GenerateRequest"]

PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
IMAGE_BODY = {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}, "required": True}
VTOK_BODY = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
# The `model` query parameter's description; create_app's OpenAPI names the server's default.
MODEL_HELP = "a loaded model's name (default: {default})"


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


router = APIRouter()
model_query = Query(None, max_length=200, description=MODEL_HELP.format(default="the first loaded model"))


# -- what a request reads from its app -------------------------------------------------------


def _models(request: Request) -> dict[str, Tokenizer]:
    return request.app.state.models


def _limits(request: Request) -> Limits:
    return request.app.state.limits


def _lm(request: Request) -> work.TokenLM | None:
    return request.app.state.lm


def _gate(request: Request) -> Gate:
    state = request.app.state
    if getattr(state, "gate", None) is None:  # a server that skipped the lifespan: made on first use
        state.gate = Gate(state.limits)
    return state.gate


def _tokenizer(request: Request, name: str | None) -> Tokenizer:
    models = _models(request)
    if name is None:
        return next(iter(models.values()))
    if name not in models:
        raise ApiError(404, f"unknown model {name!r}; this server has: {', '.join(models)}")
    return models[name]


def _name(request: Request, tok: Tokenizer) -> str:
    return next(name for name, t in _models(request).items() if t is tok)


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


async def _on_image(request: Request, fn: Callable[..., Any], tok: Tokenizer, *args: Any) -> Any:
    """fn(tok, image, *args) on the body's image: reading the image is model work too, in the
    same job, so that one request waits in the queue once."""
    limits = _limits(request)
    data = await read_body(request, limits, "image")

    def job() -> Any:
        return fn(tok, work.read_image(data, limits.max_pixels), *args)

    return await _gate(request).run(job)


def _parse(kind: type[BaseModel], data: bytes) -> Any:
    try:
        return kind.model_validate_json(data)
    except ValidationError as e:
        raise ApiError(422, validation_message(e.errors())) from None


def _scale_param(text: str | None) -> float | str | None:
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ApiError(422, f"scale must be 'auto' or a number, got {text!r}") from None


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


# -- the page ----------------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
async def index(request: Request) -> Response:
    return Response(request.app.state.page["index.html"], media_type="text/html; charset=utf-8")


@router.get("/static/{name}", include_in_schema=False)
async def static(request: Request, name: str) -> Response:
    if name not in PAGE_FILES:
        raise ApiError(404, f"no such page file: {name}")
    return Response(request.app.state.page[name], media_type=PAGE_FILES[name])


# -- the API -----------------------------------------------------------------------------------


@router.get("/api/health", summary="Liveness and load")
async def health(request: Request) -> dict[str, Any]:
    g = _gate(request)
    return {
        "status": "ok",
        "models": list(_models(request)),
        "lm": _lm(request) is not None,
        "running": g.running,
        "waiting": g.waiting,
    }


@router.get("/api/models", summary="Loaded models, the LM, the limits")
async def list_models(request: Request) -> dict[str, Any]:
    lm, limits = _lm(request), _limits(request)
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
            for name, tok in _models(request).items()
        ],
        "lm": None
        if lm is None
        else {
            "name": lm.name,
            "tokenizer": request.app.state.lm_name,
            "num_tokens": lm.num_positions,
            "classes": list(lm.classes),
        },
        "codecs": request.app.state.codecs,
        "limits": {
            "max_upload_bytes": limits.max_upload_bytes,
            "max_pixels": limits.max_pixels,
            "max_generate": limits.max_generate,
        },
    }


@router.get("/api/samples", summary="The bundled sample photos")
async def list_samples(request: Request) -> list[dict[str, str]]:
    return [{"name": name, "url": f"/api/samples/{name}"} for name in request.app.state.samples]


@router.get("/api/samples/{name}", summary="One bundled sample photo", response_class=Response)
async def sample(request: Request, name: str) -> Response:
    samples: dict[str, Path] = request.app.state.samples
    if name not in samples:
        raise ApiError(404, f"no sample named {name!r}; samples: {', '.join(samples)}")
    return Response(samples[name].read_bytes(), media_type="image/jpeg")


@router.post(
    "/api/encode",
    summary="Image -> tokens, with the .vtok bytes of every prefix",
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def encode(
    request: Request,
    model: str | None = model_query,
    tokens: int | None = Query(None, ge=1, description="how many tokens to return (default: all K)"),
) -> dict[str, Any]:
    tok = _tokenizer(request, model)
    return {"model": _name(request, tok)} | await _on_image(request, work.encode, tok, tokens)


@router.post(
    "/api/decode",
    summary="Token ids -> PNG",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": DecodeRequest.model_json_schema()}}}},
)
async def decode(request: Request, model: str | None = model_query) -> Response:
    tok = _tokenizer(request, model)
    body = _parse(DecodeRequest, await read_body(request, _limits(request), "JSON body"))
    png = await _gate(request).run(work.decode_png, tok, body.tokens)
    return Response(png, media_type="image/png")


@router.post(
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
    effort: int = Query(0, description="0: the encoder's tokens; 1-3: searched tokens (0.4-2.2 s on 2 CPU cores)"),
) -> dict[str, Any]:
    tok = _tokenizer(request, model)
    effort = check_effort(effort)  # checked before the image is read
    return {"model": _name(request, tok)} | await _on_image(request, work.all_prefixes, tok, pixels, effort)


@router.post(
    "/api/equal-bytes",
    summary="Image -> a classical codec's best file (full size or shrunk) within the vtok bytes of every prefix k",
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def equal_bytes(
    request: Request,
    model: str | None = model_query,
    codec: Literal["jpeg", "webp", "avif"] = Query("jpeg"),
    downscaled: bool = Query(
        True, description="also the codec on shrunk copies enlarged again (what a user wanting a tiny file does)"
    ),
    effort: int = Query(0, description="the budgets of tokens searched at this effort (as /api/prefixes with it)"),
) -> dict[str, Any]:
    tok = _tokenizer(request, model)
    effort = check_effort(effort)
    if codec not in request.app.state.codecs:
        raise ApiError(501, f"this server's Pillow cannot write {codec}")
    return {"model": _name(request, tok)} | await _on_image(request, work.equal_bytes, tok, codec, downscaled, effort)


@router.post(
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
    tok = _tokenizer(request, model)
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
    lm = _lm(request)
    if coding == "lm" and (lm is None or tok is not request.app.state.lm_tokenizer):
        raise ApiError(422, "coding=lm needs a server started with --lm, and the model that LM decodes")
    data, facts = await _on_image(request, work.compress_image, tok, options, lm if coding == "lm" else None)
    headers = {f"X-Vtok-{key.replace('_', '-').title()}": str(value) for key, value in facts.items()}
    headers["Content-Disposition"] = 'attachment; filename="image.vtok"'
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.post(
    "/api/decompress",
    summary=".vtok file -> PNG at its original size",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    openapi_extra={"requestBody": VTOK_BODY},
)
async def decompress(request: Request, model: str | None = model_query) -> Response:
    limits = _limits(request)
    candidates = [_tokenizer(request, model)] if model is not None else list(_models(request).values())
    data = await read_body(request, limits, ".vtok file")
    png, name = await _gate(request).run(work.decompress_png, candidates, data, limits.max_pixels, _lm(request))
    return Response(png, media_type="image/png", headers={"X-Vtok-Model": name})


@router.post(
    "/api/generate",
    summary="Sample images from the token LM, each with its progressive strip (404 unless started with --lm)",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": GenerateRequest.model_json_schema()}}}},
)
async def generate(request: Request) -> dict[str, Any]:
    lm, lm_tok, limits = _lm(request), request.app.state.lm_tokenizer, _limits(request)
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
    result = await _gate(request).run(job)
    return {"model": request.app.state.lm_name} | result
