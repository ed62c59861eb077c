"""The .vtok container: reading and writing, every field validated before it is used.

Specified in docs/format.md. Little-endian; unsigned LEB128 varints; no pickle.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError, LimitError
from ..images import MAX_PIXELS
from .coders import CODINGS, Coding
from .tiling import TileLayout, check_budget

__all__ = [
    "MAGIC",
    "COMPACT_MAGIC",
    "SHIPPED_IDS",
    "VERSION",
    "CODINGS",
    "Coding",
    "FormatError",
    "Header",
    "VtokFile",
    "peek_header",
    "write_file",
    "read_file",
    "encode_varint",
    "token_check",
    "verify_tokens",
    "decode_payload",
]

MAGIC = b"VTOK"  # versions 1 to 3
COMPACT_MAGIC = b"vt"  # version 4: the compact container (docs/format.md)
# 2: weights and prior identified apart; 3: LM coding; 4: the compact container. All are read.
VERSION = 4
READABLE = (1, 2, 3, 4)
# Version 4 names a shipped model and the prior or LM its payload is coded under by one byte, an
# index into this table: (weights id, coding, prior or LM id). Entries are never changed or
# removed, only added (a retrained shipped model gets new ones), so every file stays decodable by
# the weights that made it. Any other model is named by its full ids, as in version 3.
SHIPPED_IDS: dict[int, tuple[bytes, int, bytes | None]] = {
    1: (bytes.fromhex("e7a54e00"), 1, bytes.fromhex("4b18f62e")),  # default (Dec 2026, stage 5), ANS
    2: (bytes.fromhex("e7a54e00"), 0, None),  # the same, bit-packed
    3: (bytes.fromhex("e7a54e00"), 2, bytes.fromhex("8ca93517")),  # the same under the default token LM
    4: (bytes.fromhex("32e4dc20"), 1, bytes.fromhex("8b804a0f")),  # default (Dec 2026, stage 6), ANS
    5: (bytes.fromhex("32e4dc20"), 0, None),  # the same, bit-packed
    6: (bytes.fromhex("32e4dc20"), 2, bytes.fromhex("3ca901a0")),  # the same under the default token LM
}
_FLAG_SHIPPED, _FLAG_SIZE, _FLAG_DISPLAY, _FLAG_RESERVED = 0x04, 0x08, 0x10, 0xE0
# A display size is within this factor of the coded size in each side (scale 1/16..16): a small
# file cannot order a resize to a huge picture from a few tiles.
DISPLAY_RATIO = 16
MAX_SIDE = 1 << 20
MAX_PAYLOAD = 1 << 30


@dataclass
class VtokFile:
    coding: int  # 0 = bit-packed, 1 = ANS under the model's prior, 2 = range coding under a token LM
    model_id: bytes  # 4 bytes: start of the SHA-256 of the weights (version 1: of weights and prior)
    width: int
    height: int
    overlap: int
    counts: np.ndarray  # (T,) uint8: tokens kept per tile, row-major
    payload: bytes
    prior_id: bytes | None = None  # 4 bytes: ANS files, the prior's id; LM files (v3), the LM's id (vtok.lm.lm_id)
    version: int = VERSION
    # LM files: the file's CRC-32 covers the body and then the coded token ids (see token_check),
    # so one checksum catches a corrupt payload and a decoder that computed other probabilities.
    tokens_crc: int | None = None  # as read; checked once the payload is decoded
    token_bytes: bytes = b""  # when writing: token_check(tokens, counts)
    # Version 4: the size to show the image at, when it was coded smaller (resolution as a coding
    # choice); None: width x height. Decoders enlarge the decoded image to it (Lanczos).
    display: tuple[int, int] | None = None

    @property
    def display_size(self) -> tuple[int, int]:
        return self.display or (self.width, self.height)


def decode_payload(f: VtokFile, tok: Any, coder: Any = None) -> np.ndarray:
    """The (T, K) tokens a parsed file's payload codes, for tokenizer `tok` and the prior or LM
    `coder` its method needs; FormatError if it does not decode (a payload can pass the checksum
    and still be corrupt: a buggy or hostile encoder), like every other bad file, so that a folder
    decode skips it and goes on."""
    coding = CODINGS.get(f.coding)
    if coding is None:
        raise FormatError(f"unknown coding method {f.coding}")
    try:
        return coding.decode(f, tok, coder)
    except ValueError as e:  # TokenError from the coders, or numpy's own on a malformed payload
        raise FormatError(f"the payload does not decode: {e}") from e


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, least significant first, the high bit set on all but the last."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(f"file is truncated (while reading {what})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str, limit: int) -> int:
        value, shift = 0, 0
        for _ in range(10):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > limit:
                    raise FormatError(f"{what} {value} is over the limit of {limit}")
                return value
            shift += 7
        raise FormatError(f"{what} is not a valid varint")


def _shipped_index(model_id: bytes, coding: int, coder_id: bytes | None) -> int | None:
    for index, entry in SHIPPED_IDS.items():
        if entry == (model_id, coding, coder_id if CODINGS[coding].has_id else None):
            return index
    return None


def write_file(f: VtokFile, tile: int | None = None) -> bytes:
    """The file's bytes: the compact container (version 4) unless ``f.version`` asks for 3.
    `tile`: the model's tile size, so that a one-tile image of that size leaves its size out."""
    if f.coding not in CODINGS:
        raise FormatError(f"unknown coding method {f.coding}")
    if CODINGS[f.coding].has_id and (f.prior_id is None or len(f.prior_id) != 4):
        raise FormatError("an ANS- or LM-coded file needs the 4-byte id of its prior or LM")
    if f.version == 3:
        if f.display is not None:
            raise FormatError("version 3 has no display size: write version 4")
        return _write_v3(f)
    if f.version != VERSION:
        raise FormatError(f"vtok writes format versions 3 and {VERSION}, not {f.version}")
    index = _shipped_index(f.model_id, f.coding, f.prior_id)
    one_tile = tile is not None and f.width == f.height == tile and len(f.counts) == 1
    display = f.display if f.display is not None and f.display != (f.width, f.height) else None
    flags = f.coding | (_FLAG_SHIPPED if index is not None else 0) | (0 if one_tile else _FLAG_SIZE)
    flags |= _FLAG_DISPLAY if display else 0
    body = bytearray(COMPACT_MAGIC) + bytes([flags])
    if index is not None:
        body.append(index)
    else:
        body += f.model_id + (f.prior_id if CODINGS[f.coding].has_id and f.prior_id else b"")
    if not one_tile:
        body += encode_varint(f.width) + encode_varint(f.height) + encode_varint(f.overlap)
    if display:
        body += encode_varint(display[0]) + encode_varint(display[1])
    body += np.asarray(f.counts, dtype=np.uint8).tobytes()
    body += f.payload  # its length is what lies between the counts and the checksum
    return bytes(body) + _checksum(f, body)


def _checksum(f: VtokFile, body: bytes | bytearray) -> bytes:
    covers_tokens = CODINGS[f.coding].crc_covers_tokens
    return struct.pack("<I", zlib.crc32(f.token_bytes, zlib.crc32(body)) if covers_tokens else zlib.crc32(body))


def _write_v3(f: VtokFile) -> bytes:
    body = bytearray(MAGIC)
    body += struct.pack("<BB", 3, f.coding)
    body += f.model_id
    if CODINGS[f.coding].has_id:
        assert f.prior_id is not None  # write_file checked it
        body += f.prior_id
    body += encode_varint(f.width) + encode_varint(f.height) + encode_varint(f.overlap)
    body += np.asarray(f.counts, dtype=np.uint8).tobytes()
    body += encode_varint(len(f.payload)) + f.payload
    return bytes(body) + _checksum(f, body)


def token_check(tokens: np.ndarray, counts: np.ndarray) -> bytes:
    """What an LM file's CRC covers after its body: the kept token ids, int64 little-endian, tile by tile."""
    keep = np.arange(tokens.shape[1])[None, :] < np.asarray(counts)[:, None]
    return np.asarray(tokens)[keep].astype("<i8").tobytes()


def verify_tokens(f: VtokFile, data: bytes, tokens: np.ndarray) -> None:
    """For an LM file: the CRC over its body and the decoded tokens must match."""
    if f.tokens_crc is not None and zlib.crc32(token_check(tokens, f.counts), zlib.crc32(data[:-4])) != f.tokens_crc:
        raise FormatError(
            "checksum mismatch: the file is corrupt, or this machine computes the LM's probabilities differently"
        )


@dataclass
class Header:
    version: int
    coding: int
    model_id: bytes


def peek_header(data: bytes) -> Header:
    """Version, coding and model id, read before the model is known (to find it)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:2] == COMPACT_MAGIC:
        return _compact_header(data)[0]
    if len(data) < 10 or data[:4] != MAGIC:
        raise FormatError("not a .vtok file (wrong magic)")
    version, coding = data[4], data[5]
    if version not in READABLE or version > 3:
        raise FormatError(f"format version {version} is not supported (this vtok reads versions 1 to {VERSION})")
    return Header(version, coding, data[6:10])


def _compact_header(data: bytes) -> tuple[Header, bytes | None, int, int]:
    """A version-4 file's (header, prior or LM id, flags, where the header ends)."""
    if len(data) < 2 + 1 + 1 + 1 + 4:
        raise FormatError("file is truncated")
    flags = data[2]
    coding = flags & 0x03
    if flags & _FLAG_RESERVED or coding not in CODINGS:
        raise FormatError(f"unknown flags {flags:#04x} in a version-4 file (made by a newer vtok?)")
    if flags & _FLAG_SHIPPED:
        entry = SHIPPED_IDS.get(data[3])
        if entry is None or entry[1] != coding:
            raise FormatError(f"this file names shipped model #{data[3]}, which this vtok does not know (newer?)")
        return Header(4, coding, entry[0]), entry[2], flags, 4
    end = 3 + 4 + (4 if CODINGS[coding].has_id else 0)
    if len(data) < end + 1 + 4:
        raise FormatError("file is truncated")
    prior_id = data[7:11] if CODINGS[coding].has_id else None
    return Header(4, coding, data[3:7]), prior_id, flags, end


def _read_compact(data: bytes, tile: int, num_tokens: int, max_pixels: int) -> VtokFile:
    header, prior_id, flags, start = _compact_header(data)
    stored_crc = struct.unpack("<I", data[-4:])[0]
    lm_coded = CODINGS[header.coding].crc_covers_tokens  # checked after decoding (verify_tokens)
    if not lm_coded and stored_crc != zlib.crc32(data[:-4]):
        raise FormatError("checksum mismatch: the file is corrupt or truncated")
    r = _Reader(data[:-4])
    r.pos = start
    if flags & _FLAG_SIZE:
        width, height = r.varint("width", MAX_SIDE), r.varint("height", MAX_SIDE)
        if width < 1 or height < 1:
            raise FormatError(f"image size {width}x{height} is invalid")
        overlap = r.varint("overlap", tile - 1)
        if overlap * 2 > tile:
            raise FormatError(f"overlap {overlap} is more than half the tile size {tile}")
    else:
        width = height = tile
        overlap = tile // 4
    layout = TileLayout(width, height, tile, overlap)
    check_budget(layout, max_pixels)
    display = None
    if flags & _FLAG_DISPLAY:
        display = (r.varint("display width", MAX_SIDE), r.varint("display height", MAX_SIDE))
        if min(display) < 1 or display == (width, height):
            raise FormatError(f"display size {display[0]}x{display[1]} is invalid")
        dw, dh = display
        if not (dw <= DISPLAY_RATIO * width and dh <= DISPLAY_RATIO * height and width <= DISPLAY_RATIO * dw
                and height <= DISPLAY_RATIO * dh):  # fmt: skip
            raise FormatError(
                f"display size {dw}x{dh} is more than {DISPLAY_RATIO}x the coded {width}x{height} in a side"
            )
        if display[0] * display[1] > max_pixels:
            raise LimitError(
                f"the image is shown at {display[0]}x{display[1]}, over the limit of {max_pixels:,} pixels: "
                "raise it with --max-pixels N (max_pixels=N in Python) if you trust this input"
            )
    counts = np.frombuffer(r.take(layout.count, "token counts"), dtype=np.uint8).astype(np.int64)
    if counts.min() < 1 or counts.max() > num_tokens:
        raise FormatError(f"token counts must lie in 1..{num_tokens}, got {counts.min()}..{counts.max()}")
    payload = r.data[r.pos :]
    return VtokFile(
        header.coding,
        header.model_id,
        width,
        height,
        overlap,
        counts,
        payload,
        prior_id,
        4,
        stored_crc if lm_coded else None,
        display=display,
    )


def read_file(data: bytes, tile: int, num_tokens: int, max_pixels: int = MAX_PIXELS) -> VtokFile:
    """Parse and validate; `tile` and `num_tokens` come from the model that will decode it. The
    declared size is checked against `max_pixels` (check_budget: the image's pixels and its
    tiles' pixels) before anything else is read, so a small file cannot order a huge decode."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:2] == COMPACT_MAGIC:
        return _read_compact(data, tile, num_tokens, max_pixels)
    if len(data) < len(MAGIC) + 2 or data[:4] != MAGIC:
        raise FormatError("not a .vtok file (wrong magic)")
    if len(data) < 4 + 2 + 4 + 3 + 1 + 1 + 4:
        raise FormatError("file is truncated")
    stored_crc = struct.unpack("<I", data[-4:])[0]
    lm_coded = data[5] in CODINGS and CODINGS[data[5]].crc_covers_tokens  # checked after decoding (verify_tokens)
    if not lm_coded and stored_crc != zlib.crc32(data[:-4]):
        raise FormatError("checksum mismatch: the file is corrupt or truncated")
    r = _Reader(data[:-4])
    r.take(4, "magic")
    version, coding = struct.unpack("<BB", r.take(2, "version"))
    if version not in READABLE or version > 3:
        raise FormatError(f"format version {version} is not supported (this vtok reads versions 1 to {VERSION})")
    if coding not in CODINGS or version < CODINGS[coding].since:
        raise FormatError(f"unknown coding method {coding} (in a version-{version} file)")
    model_id = r.take(4, "model id")
    prior_id = r.take(4, "prior or LM id") if version >= 2 and CODINGS[coding].has_id else None
    width = r.varint("width", MAX_SIDE)
    height = r.varint("height", MAX_SIDE)
    if width < 1 or height < 1:
        raise FormatError(f"image size {width}x{height} is invalid")
    overlap = r.varint("overlap", tile - 1)
    if overlap * 2 > tile:
        raise FormatError(f"overlap {overlap} is more than half the tile size {tile}")
    layout = TileLayout(width, height, tile, overlap)
    check_budget(layout, max_pixels)
    count = layout.count
    counts = np.frombuffer(r.take(count, "token counts"), dtype=np.uint8).astype(np.int64)
    if count and (counts.min() < 1 or counts.max() > num_tokens):
        raise FormatError(f"token counts must lie in 1..{num_tokens}, got {counts.min()}..{counts.max()}")
    length = r.varint("payload length", MAX_PAYLOAD)
    payload = r.take(length, "payload")
    if r.pos != len(r.data):
        raise FormatError(f"{len(r.data) - r.pos} unexpected bytes after the payload")
    return VtokFile(
        coding, model_id, width, height, overlap, counts, payload, prior_id, version, stored_crc if lm_coded else None
    )
