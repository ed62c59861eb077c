"""Real compressed files: the .vtok format, entropy coding, adaptive length and tiling."""

from .compress import Encoded, compress, decode_file, decompress, encode_image
from .format import FormatError
from .prior import TokenPrior, fit_prior

__all__ = ["Encoded", "FormatError", "TokenPrior", "compress", "decode_file", "decompress", "encode_image", "fit_prior"]
