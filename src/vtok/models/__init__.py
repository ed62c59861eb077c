"""Tokenizer architectures: nn.Modules holding inference weights only."""

from .base import ModelOutput, TokenizerModel
from .grid_2d import Grid2DConfig, Grid2DTokenizer
from .ordered_1d import Ordered1DConfig, Ordered1DTokenizer

__all__ = [
    "Grid2DConfig",
    "Grid2DTokenizer",
    "ModelOutput",
    "Ordered1DConfig",
    "Ordered1DTokenizer",
    "TokenizerModel",
]
