"""Coding methods: one record each, its encoder and decoder side by side (as CompressAI keeps an
entropy model's compress and decompress together).

A method is named in the file by its code (a byte in versions 1-3, two bits in version 4), in the
API and the CLI by its name. ``needs`` says what it codes under besides the tokenizer: nothing
(bit-packing), the model's token prior (ANS), or a token LM (range coding). A new method is added
here; the container (format.py), the file API (compress.py), EncodeOptions and the fuzzer follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .entropy import ans_decode, ans_encode, pack_tokens, unpack_tokens
from .lm_coding import lm_decode, lm_encode

__all__ = ["Coding", "CODINGS", "BY_NAME", "BITPACK", "ANS", "LM"]


@dataclass(frozen=True)
class Coding:
    """code: its number in a file; name: in the API; has_id: the file names (by a 4-byte id, from
    version 2) the prior or LM the payload is coded under; since: the first format version with it;
    crc_covers_tokens: the checksum also covers the decoded tokens (checked after decoding);
    needs: None, "prior" or "lm". encode: (tokenizer, tokens (T, K), counts (T,), coder) -> payload;
    decode: (file, tokenizer, coder) -> (T, K) int64 ids, zero past each tile's count; any
    ValueError means a corrupt payload."""

    code: int
    name: str
    has_id: bool
    since: int
    crc_covers_tokens: bool
    needs: str | None
    encode: Callable[[Any, np.ndarray, np.ndarray, Any], bytes]
    decode: Callable[[Any, Any, Any], np.ndarray]


BITPACK = Coding(
    0,
    "bitpack",
    False,
    1,
    False,
    None,
    lambda tok, tokens, counts, _: pack_tokens(tokens, counts, tok.codebook_size),
    lambda f, tok, _: unpack_tokens(f.payload, f.counts, tok.num_tokens, tok.codebook_size),
)
ANS = Coding(
    1,
    "ans",
    True,
    1,
    False,
    "prior",
    lambda tok, tokens, counts, _: ans_encode(tokens, counts, tok.prior),
    lambda f, tok, _: ans_decode(f.payload, f.counts, tok.num_tokens, tok.prior),
)
LM = Coding(
    2,
    "lm",
    True,
    3,
    True,
    "lm",
    lambda tok, tokens, counts, lm: lm_encode(tokens, counts, lm),
    lambda f, tok, lm: lm_decode(f.payload, f.counts, tok.num_tokens, lm),
)

CODINGS: dict[int, Coding] = {c.code: c for c in (BITPACK, ANS, LM)}
BY_NAME: dict[str, Coding] = {c.name: c for c in CODINGS.values()}
