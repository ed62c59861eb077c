"""Real compressed files: the .vtok format, entropy coding, adaptive length and tiling."""

from .compress import (
    Encoded,
    allocate_prefix_lengths,
    choose_prefix_lengths,
    compress,
    decode_file,
    decompress,
    encode_image,
    single_tile_file_sizes,
)
from .format import FormatError
from .prior import TokenPrior, fit_prior

__all__ = [
    "Encoded",
    "FormatError",
    "TokenPrior",
    "allocate_prefix_lengths",
    "choose_prefix_lengths",
    "compress",
    "decode_file",
    "decompress",
    "encode_image",
    "fit_prior",
    "single_tile_file_sizes",
]
