"""Benchmarking tokenizers against each other and against classical codecs (`vtok bench`)."""

from .codecs import CODEC_NAMES, Codec, available_codecs
from .report import write_report
from .run import BenchResult, paired_differences, run_bench, summarize

__all__ = [
    "CODEC_NAMES",
    "BenchResult",
    "Codec",
    "available_codecs",
    "paired_differences",
    "run_bench",
    "summarize",
    "write_report",
]
