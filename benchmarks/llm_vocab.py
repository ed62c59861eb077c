"""Which spelling of image tokens does a small causal LM learn better: one vocabulary entry per token
id (Chameleon, Emu3) or one per FSQ digit (``vtok.llm``'s "digit" scheme)?

The same small Llama (scripts/llm_example.py's) is trained for the same wall time on the same images
(the first k tokens of every row of a `vtok tokenize` shard folder, between the boundary tokens), once
per scheme; each is scored on held-out shards in bits per image (the image's ids and its end boundary,
given the start boundary), which is what both spellings must pay for the same picture.

    vtok tokenize data/photos/train data/tokens/train-big --flip --crops 24
    vtok tokenize data/photos/heldout data/tokens/heldout
    python benchmarks/llm_vocab.py data/tokens/train-big data/tokens/heldout --minutes 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from llm_example import make_model, pad_batch, train  # noqa: E402

from vtok import load  # noqa: E402
from vtok.files import write_atomic  # noqa: E402
from vtok.llm import add_image_tokens, word_tokenizer  # noqa: E402
from vtok.shards import TokenShards  # noqa: E402


@torch.no_grad()
def bits_per_image(model, sequences: list[list[int]], pad: int) -> float:
    total = 0.0
    for i in range(0, len(sequences), 64):
        ids, mask = pad_batch(sequences[i : i + 64], pad)
        logp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        # predicted: every id after the BOS and the start boundary (image ids, end boundary, EOS excluded)
        target = ids[:, 2:]
        lp = logp[:, 1:-1].gather(-1, target.unsqueeze(-1)).squeeze(-1)
        keep = mask[:, 2:].clone()
        keep[torch.arange(len(ids)), mask.sum(1) - 3] = 0  # the EOS
        total += float(-(lp * keep).sum())
    return total / math.log(2) / len(sequences)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train")
    p.add_argument("heldout")
    p.add_argument("--model", default="default")
    p.add_argument("--num-tokens", type=int, default=16)
    p.add_argument("--minutes", type=float, default=5.0, help="training wall time per scheme")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    vtok = load(args.model)
    train_shards, held = TokenShards(args.train), TokenShards(args.heldout)
    k = args.num_tokens
    results = {}
    for scheme in ("digit", "token"):
        tok = word_tokenizer([])
        vocab = add_image_tokens(tok, vtok, scheme=scheme)

        def rows(tokens: np.ndarray) -> list[list[int]]:
            return [[tok.bos_token_id, *vocab.tokens_to_ids(t[:k]), tok.eos_token_id] for t in tokens]  # noqa: B023

        model = make_model(len(tok), tok, "small")
        out = Path("runs") / f"llm-vocab-{scheme}"
        if (out / "checkpoint.pt").exists():
            (out / "checkpoint.pt").unlink()  # each comparison starts fresh
        out.mkdir(parents=True, exist_ok=True)
        steps = train(model, rows(train_shards.tokens), tok.pad_token_id, args.minutes, out)
        bits = bits_per_image(model, rows(held.tokens), tok.pad_token_id)
        results[scheme] = {
            "vocabulary_entries": vocab.num_entries,
            "ids_per_image": vocab.image_length(k),
            "parameters": sum(p.numel() for p in model.parameters()),
            "steps": steps,
            "heldout_bits_per_image": round(bits, 1),
        }
        print(
            f"{scheme:>6}: {vocab.num_entries} entries, {vocab.image_length(k)} ids per image, {steps} steps, "
            f"held-out {bits:.1f} bits per {k}-token image ({bits / k:.2f} bits/token)",
            flush=True,
        )
    static = k * math.log2(vtok.codebook_size)
    print(f"(uniform: {static:.1f} bits per image; {len(train_shards)} training rows, {len(held)} held-out rows)")
    if args.json:
        write_atomic(
            args.json, json.dumps({"num_tokens": k, "minutes": args.minutes, "schemes": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
