"""Real compressed files: the .vtok format, entropy coding, adaptive length and tiling."""

from .compress import (
    Encoded,
    TokenFile,
    compress,
    decode_file,
    decompress,
    encode_image,
    read_tokens,
    single_tile_file_sizes,
)
from .format import FormatError
from .options import EncodeOptions
from .prior import TokenPrior, fit_prior
from .rate import allocate_prefix_lengths, choose_prefix_lengths

__all__ = [
    "EncodeOptions",
    "Encoded",
    "TokenFile",
    "FormatError",
    "TokenPrior",
    "allocate_prefix_lengths",
    "choose_prefix_lengths",
    "compress",
    "decode_file",
    "decompress",
    "encode_image",
    "fit_prior",
    "read_tokens",
    "single_tile_file_sizes",
]
