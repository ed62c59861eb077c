"""vtok: ordered 1D visual tokenizers you can train, measure and use.

import vtok
tok = vtok.load("default")                 # shipped weights, offline; or a local folder
tokens = tok.encode(images, num_tokens=k)  # int64 (B, k)
images = tok.decode(tokens)                # any 1 <= k <= K, float (B, 3, S, S) in [0, 1]
"""

from . import lm  # noqa: E402, F401 - vtok.lm, the token LM subpackage
from ._version import __version__
from .codec import EncodeOptions, compress, decompress, read_tokens  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    FormatError,
    ImageError,
    LimitError,
    ModelLoadError,
    OptionalDependencyError,
    TokenError,
    VtokError,
)
from .registry import list_tokenizers  # noqa: E402
from .tokenizer import Tokenizer, create_tokenizer, load, shipped_models  # noqa: E402

__all__ = [
    "ConfigError",
    "EncodeOptions",
    "FormatError",
    "ImageError",
    "LimitError",
    "ModelLoadError",
    "OptionalDependencyError",
    "TokenError",
    "Tokenizer",
    "VtokError",
    "__version__",
    "compress",
    "create_tokenizer",
    "decompress",
    "list_tokenizers",
    "load",
    "read_tokens",
    "shipped_models",
]
