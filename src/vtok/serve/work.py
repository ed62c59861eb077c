"""The service's model work: plain functions of bytes and tokenizers, run in the gate's threads.

Only what a user could import from vtok is used here (Tokenizer, the codec, the metrics, the
codec ladder of the bench). Errors are vtok's own (a VtokError subclass for every bad input);
the app turns them into HTTP answers. Images are read from bytes with the server's pixel cap,
checked against the size the header declares before a pixel is decoded.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .. import EncodeOptions, Tokenizer, decompress
from ..bench.codecs import SizeLadders, available_codecs
from ..codec import encode_image, single_tile_file_sizes
from ..codec.format import peek_header, read_file
from ..errors import FormatError, ImageError, LimitError, TokenError, VtokError
from ..images import fit_square, pil_to_tensor, to_rgb
from ..metrics.pixel import psnr, ssim

__all__ = [
    "ImageRefused",
    "TokenLM",
    "read_image",
    "encode",
    "decode_png",
    "all_prefixes",
    "equal_bytes",
    "compress_image",
    "decompress_png",
    "generate",
    "EQUAL_BYTES_CODECS",
]

# Pillow plugins a client may send: the common photo formats, never EPS (which runs
# Ghostscript) or the exotic decoders that are rarely fuzzed.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF")
EQUAL_BYTES_CODECS = ("jpeg", "webp", "avif")


class ImageRefused(ImageError):
    """An upload refused for what it is, with the HTTP status that says so: 413 (too many
    pixels), 415 (not an image in an accepted format), 422 (truncated or corrupt)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class TokenLM(Protocol):
    """What the service needs of a token language model (vtok.lm.TokenLM): the length it makes
    (num_positions, K at most), its class names (empty when unconditional), the tokenizer it
    names, and generate."""

    name: str
    tokenizer_name: str | None
    num_positions: int
    classes: list[str]

    def generate(self, n: int, **options: Any) -> torch.Tensor: ...


def read_image(data: bytes, max_pixels: int) -> Image.Image:
    """Bytes -> 8-bit RGB, EXIF orientation applied. The size the header declares is checked
    against `max_pixels` before any pixel is decoded (a decompression bomb costs nothing)."""
    try:
        im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ImageRefused(415, f"not an image in an accepted format ({', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise ImageRefused(413, f"image is over the pixel limit ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageRefused(422, f"corrupt image header ({e})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageRefused(413, f"image is {w}x{h}, over this server's limit of {max_pixels} pixels")
    try:
        im.load()
        return to_rgb(im)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageRefused(422, f"corrupt or truncated image ({' '.join(str(e).split())})") from None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # level 1: a third of the time, a fifth more bytes
    return buffer.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [0, 1] -> (B, S, S, 3) uint8, rounded as tensor_to_pil rounds."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def encode(tok: Tokenizer, image: Image.Image, num_tokens: int | None) -> dict[str, Any]:
    """Tokens of the model's square crop, and the exact .vtok file size for every prefix k."""
    k = tok.num_tokens if num_tokens is None else num_tokens
    if not 1 <= k <= tok.num_tokens:
        raise TokenError(f"tokens must lie in 1..{tok.num_tokens} for this model, got {k}")
    tokens = tok.encode(image)  # (1, K): every prefix's file size needs all of them
    sizes = _prefix_file_sizes(tok, tokens)
    return {"num_tokens": k, "tokens": tokens[0, :k].tolist(), "bytes_per_prefix": sizes.tolist()}


def _prefix_file_sizes(tok: Tokenizer, tokens: torch.Tensor) -> np.ndarray:
    """(K,) sizes of the .vtok files of one S x S image at k = 1..K tokens."""
    k_max = tok.num_tokens
    return single_tile_file_sizes(tok, tokens.expand(k_max, -1).cpu().numpy(), np.arange(1, k_max + 1))


def decode_png(tok: Tokenizer, tokens: Any) -> bytes:
    """One prefix (k,) of token ids -> PNG. check_tokens refuses floats, bad ranges and shapes."""
    checked = tok.check_tokens(tokens)
    if checked.shape[0] != 1:
        raise ImageError(f"decode takes one token sequence (k,), got {checked.shape[0]} rows")
    return _png(Image.fromarray(_to_uint8(tok.decode(checked))[0]))


def _tokens(tok: Tokenizer, x: torch.Tensor, effort: int) -> torch.Tensor:
    """The encoder's tokens of x, or at effort > 0 tokens searched to keep every prefix good."""
    from ..codec.search import search_tokens

    return search_tokens(tok, x, effort) if effort else tok.encode(x)


@torch.no_grad()  # not inference_mode: a search (effort > 0) turns gradients on for its latents
def all_prefixes(tok: Tokenizer, image: Image.Image, pixels: str, effort: int = 0) -> dict[str, Any]:
    """Everything a slider over k needs, from one encode and one batched decode of all K prefixes:
    per k the reconstruction, the .vtok bytes, PSNR and SSIM against the model's square crop.
    pixels: "png" (a PNG data URL per k) or "raw" (one base64 (K, S, S, 3) uint8 RGB block, which
    costs the server nothing to make: the page draws it straight into a canvas). effort 1-3: tokens
    searched to keep every prefix good (vtok.codec.search), as `vtok encode --effort` makes them."""
    k_max, s = tok.num_tokens, tok.image_size
    crop = fit_square(image, s)
    x = pil_to_tensor(crop)[None].to(tok.device)  # (1, 3, S, S)
    tokens = _tokens(tok, x, effort)  # (1, K)
    recon = tok.decode_prefixes(tokens.expand(k_max, -1), torch.arange(1, k_max + 1))  # (K, 3, S, S)
    p, q = psnr(recon, x).clamp(max=99), ssim(recon, x)  # x broadcasts: its statistics are computed once
    sizes = _prefix_file_sizes(tok, tokens)
    pictures = _to_uint8(recon)
    out: dict[str, Any] = {
        "image_size": s,
        "num_tokens": k_max,
        "effort": effort,
        "tokens": tokens[0].tolist(),
        "original": _data_url(_png(crop)),
        "prefixes": [
            {"k": k + 1, "bytes": int(sizes[k]), "psnr": round(float(p[k]), 3), "ssim": round(float(q[k]), 4)}
            for k in range(k_max)
        ],
    }
    if pixels == "raw":
        out["pixels"] = base64.b64encode(pictures.tobytes()).decode("ascii")
    else:
        out["images"] = [_data_url(_png(Image.fromarray(a))) for a in pictures]
    return out


def equal_bytes(
    tok: Tokenizer, image: Image.Image, codec_name: str, downscaled: bool = True, effort: int = 0
) -> dict[str, Any]:
    """For every k: the best file of a classical codec within the bytes of the vtok file at k
    (JPEG/WebP/AVIF as `vtok bench` makes them), its PSNR/SSIM and picture, or null where even
    the codec's smallest file is larger ("cannot reach"). `downscaled`: as a user wanting a tiny
    file would, also try the codec on shrunk copies enlarged again (`vtok bench`'s `<codec>-down`
    ladder of sizes) and keep the best PSNR per budget; each row says the scale it used. `effort`: the
    budgets are those of tokens searched at that effort (what /api/prefixes shows with it)."""
    codecs, missing = available_codecs((codec_name,))
    if not codecs:
        raise VtokError(missing.get(codec_name, f"unknown codec {codec_name!r}"))
    crop = fit_square(image, tok.image_size)
    x = pil_to_tensor(crop)[None]
    with torch.no_grad():  # not inference_mode: a search turns gradients on for its latents
        sizes = _prefix_file_sizes(tok, _tokens(tok, x, effort))
    ladders = SizeLadders(codecs[0], crop, x, downscaled=downscaled)
    smallest = min(ladder.file(codecs[0].qualities[0]).bytes for ladder in ladders.sizes)
    rows: list[dict[str, Any] | None] = []
    for budget in sizes.tolist():
        found = ladders.best_within(int(budget))
        if found is None:
            rows.append(None)
            continue
        ladder, f = found
        score = ladder.score(f.quality)
        rows.append(
            {
                "budget": int(budget),
                "bytes": f.bytes,
                "quality": f.quality,
                "scale": ladder.codec.scale,
                "psnr": round(score["psnr"], 3),
                "ssim": round(score["ssim"], 4),
                "image": _data_url(_png(f.image)),
            }
        )
    return {"codec": codec_name, "downscaled": downscaled, "smallest_bytes": smallest, "prefixes": rows}


MAX_SEARCH_TILES = 16  # a searched encode costs seconds per tile on a CPU


def compress_image(
    tok: Tokenizer, image: Image.Image, options: EncodeOptions, lm: TokenLM | None = None
) -> tuple[bytes, dict[str, Any]]:
    """A whole image (any size, tiled) -> .vtok bytes and what they hold. `lm`: the token LM
    that range-codes the tokens when options.coding is "lm". A search (effort > 0) costs seconds a
    tile: it is refused for images of more than MAX_SEARCH_TILES tiles."""
    if options.effort:
        from ..codec.compress import default_overlap
        from ..codec.tiling import TileLayout

        s = tok.image_size
        overlap = default_overlap(s) if options.overlap is None else int(options.overlap)
        tiles = TileLayout(image.width, image.height, s, max(0, min(overlap, s // 2))).count
        if tiles > MAX_SEARCH_TILES:
            raise ImageRefused(
                413, f"effort > 0 is for images of at most {MAX_SEARCH_TILES} tiles here; this one has {tiles}"
            )
    enc = encode_image(image, tok, options, lm=lm)
    facts = {
        "width": enc.width,
        "height": enc.height,
        "tiles": enc.tiles,
        "tokens": enc.num_tokens,
        "bytes": len(enc.data),
        "coding": enc.coding,
        "psnr": None if enc.psnr is None else round(enc.psnr, 3),
        "ssim": None if enc.ssim is None else round(enc.ssim, 4),
        "unmet_tiles": enc.unmet_tiles,
    }
    return enc.data, facts


def decompress_png(
    models: list[Tokenizer], data: bytes, max_pixels: int, lm: TokenLM | None = None
) -> tuple[bytes, str]:
    """.vtok bytes -> (PNG, name of the model that made it), decoded by the loaded model whose
    weights the file names. The header, the tile counts and
    the checksum are read first: the size the file declares is checked against `max_pixels`
    before any token is decoded. `lm`: the server's token LM, for LM-coded files."""
    header = peek_header(data)
    tok = next((t for t in models if header.model_id in (t.weights_id(), t.fingerprint()[:4])), None)
    if tok is None:
        raise FormatError(
            f"this file was made by another model (weights id {header.model_id.hex()}) than "
            f"{'those' if len(models) > 1 else 'the one'} this server decodes with"
        )
    try:  # the tiles' pixels (padding included) count too, not only width x height
        read_file(data, tok.image_size, tok.num_tokens, max_pixels=max_pixels)
    except LimitError as e:
        raise ImageRefused(413, f"{e} (this server's limit)") from e
    return _png(decompress(data, tok, lm=lm, max_pixels=max_pixels)), tok.name


@torch.inference_mode()
def generate(lm: TokenLM, tok: Tokenizer, n: int, class_index: int | None, **sampling: Any) -> dict[str, Any]:
    """n samples from the LM, each as its tokens and a progressive strip: the picture at
    k = 1, 2, 4, ... up to the length sampled. `sampling`: num_tokens, cfg, temperature,
    top_k, top_p, seed, passed to lm.generate as they are."""
    tokens = tok.check_tokens(lm.generate(n, class_label=class_index, **sampling))  # (n, k)
    k = tokens.shape[1]
    ks = [j for j in tok.prefix_lengths() if j < k] + [k]
    strips = [_to_uint8(tok.decode(tokens[:, :j])) for j in ks]  # per k: (n, S, S, 3)
    return {
        "num_tokens": k,
        "prefix_lengths": ks,
        "samples": [
            {"tokens": tokens[i].tolist(), "images": [_data_url(_png(Image.fromarray(strip[i]))) for strip in strips]}
            for i in range(tokens.shape[0])
        ],
    }
