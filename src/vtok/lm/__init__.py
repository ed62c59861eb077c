"""Token language models: generate images coarse to fine, and code token files smaller.

import vtok
lm = vtok.lm.load("default")                 # shipped, offline; or a folder from `vtok lm-train`, or "user/repo" (Hub)
tok = vtok.lm.load_tokenizer_for(lm)         # the tokenizer whose tokens it learned
tokens = lm.generate(4, num_tokens=64, seed=0, temperature=0.9)   # (4, 64) ids
images = tok.decode(tokens)                  # any prefix is a coarser image
bits = -lm.log_prob(tokens).sum(1)           # what each sequence costs to code, in bits
"""

from .model import KVCache, LMConfig, TokenLM
from .pretrained import lm_id, load, load_tokenizer_for, save_pretrained, shipped_lms
from .registry import create_lm, list_lms
from .sampling import generate

__all__ = [
    "KVCache",
    "LMConfig",
    "TokenLM",
    "create_lm",
    "generate",
    "list_lms",
    "lm_id",
    "load",
    "load_tokenizer_for",
    "save_pretrained",
    "shipped_lms",
]
