"""The token LM, measured: bits per token per position, LM-coded .vtok bytes, coding and sampling
speed, and how close its samples come to held-out photos.

    python benchmarks/lm.py --lm default --train-shards data/tokens/train \
        --heldout-shards data/tokens/heldout --heldout-photos data/photos/heldout --out runs/lm-bench

Prints a summary and writes results.json, bits_per_position.png, samples.png, progressive.png and
nearest.png into --out. Frechet distances are in EfficientNet-Lite0 pooled features (last stage),
on as many images as there are held-out photos: biased at that size, comparable across the rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import vtok
import vtok.lm as vlm
from vtok.bench.run import frechet_distance
from vtok.codec.lm_coding import lm_decode, lm_encode
from vtok.codec.prior import symbols_to_tokens
from vtok.images import find_images, fit_square, load_image, pil_to_tensor, tensor_to_pil
from vtok.lm.sheets import progressive_sheet, sample_sheet
from vtok.shards import TokenShards
from vtok.viz import image_sheet, save_image_atomic


def prior_samples(prior, n: int, seed: int) -> np.ndarray:
    """Tokens drawn from the static prior: every digit of every position independently."""
    rng = np.random.default_rng(seed)
    k = prior.num_positions
    symbols = np.stack(
        [np.stack([rng.choice(len(p[t]), size=n, p=p[t]) for t in range(k)], 1) for p in prior.probs], -1
    )  # (n, K, D)
    return symbols_to_tokens(symbols.reshape(n * k, -1), prior.alphabets).reshape(n, k)


def pooled_features(backbone, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([backbone(chunk)[-1].mean((2, 3)) for chunk in images.split(32)])


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of `repeat` calls: this machine's timings wander by 10% from run to run."""
    import statistics

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm", default="default")
    p.add_argument("--train-shards", required=True)
    p.add_argument("--heldout-shards", required=True)
    p.add_argument("--heldout-photos", required=True, help="folder of held-out photos (for .vtok bytes and FD)")
    p.add_argument("--large", help="a large photo: LM coding speed over many tiles")
    p.add_argument("--samples", type=int, default=0, help="generated images for FD (default: one per held-out photo)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    lm = vlm.load(args.lm)
    tok = vlm.load_tokenizer_for(lm)
    held = TokenShards(args.heldout_shards)
    train = TokenShards(args.train_shards)
    results: dict = {"lm": lm.name, "parameters": sum(p.numel() for p in lm.parameters())}

    # 1. bits per token per position: uniform, static prior, LM (held-out tokens)
    from vtok.train.lm_task import bits_per_position

    tokens = torch.from_numpy(held.tokens)
    lm_bits = bits_per_position(lm, tokens)
    prior_bits = np.diff(tok.prior.prefix_bits(held.tokens), axis=1, prepend=0).mean(0)
    uniform = np.log2(tok.codebook_size)
    results["bits_per_token"] = {
        "uniform": float(uniform),
        "static_prior": float(prior_bits.mean()),
        "lm": float(lm_bits.mean()),
        "lm_vs_prior": float(lm_bits.mean() / prior_bits.mean() - 1),
        "rows": len(held),
    }
    results["bits_per_position"] = {"static_prior": prior_bits.round(3).tolist(), "lm": lm_bits.round(3).tolist()}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        x = np.arange(1, len(lm_bits) + 1)
        ax.plot(x, np.full_like(lm_bits, uniform), "k:", label=f"uniform ({uniform:.2f})")
        ax.plot(x, prior_bits, label=f"static prior ({prior_bits.mean():.2f} mean)")
        ax.plot(x, lm_bits, label=f"token LM ({lm_bits.mean():.2f} mean)")
        ax.set_xlabel("token position")
        ax.set_ylabel("bits per token (held-out)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "bits_per_position.png", dpi=120)
        plt.close(fig)
    except ImportError:
        print("(no matplotlib: no bits_per_position.png)")

    # 2. .vtok bytes of held-out photos at the model's size, all K tokens: ANS (static prior) vs LM
    photos = sorted(find_images(args.heldout_photos))
    small = [fit_square(load_image(f), tok.image_size) for f in photos]
    ans_bytes, lm_bytes, exact = [], [], True
    enc_s = dec_s = 0.0
    for im in small:
        ans_bytes.append(len(vtok.compress(im, tok, coding="ans")))
        start = time.perf_counter()
        data = vtok.compress(im, tok, lm=lm)
        enc_s += time.perf_counter() - start
        lm_bytes.append(len(data))
        start = time.perf_counter()
        decoded = vtok.read_tokens(data, tok, lm=lm)
        dec_s += time.perf_counter() - start
        exact &= np.array_equal(decoded.tokens[0], tok.encode(im)[0].numpy())
    results["vtok_bytes"] = {
        "photos": len(small),
        "ans_mean": float(np.mean(ans_bytes)),
        "lm_mean": float(np.mean(lm_bytes)),
        "lm_vs_ans": float(np.sum(lm_bytes) / np.sum(ans_bytes) - 1),
        "decoded_exactly": bool(exact),
        "note": "whole files (header, counts, CRC, token CRC); encode time includes the tokenizer",
    }
    # coding speed alone (no tokenizer): one tile per call, and 64 tiles side by side
    one = held.tokens[:32]
    full = np.full(1, tok.num_tokens)
    payloads = [lm_encode(t[None], full, lm) for t in one]
    enc1 = timed(lambda: [lm_encode(t[None], full, lm) for t in one]) / len(one)
    dec1 = timed(lambda: [lm_decode(pl, full, tok.num_tokens, lm) for pl in payloads]) / len(one)
    many = held.tokens[np.arange(64) % len(held)]
    counts = np.full(len(many), tok.num_tokens)
    batch_payload = lm_encode(many, counts, lm)
    enc64 = timed(lambda: lm_encode(many, counts, lm))
    dec64 = timed(lambda: lm_decode(batch_payload, counts, tok.num_tokens, lm))
    results["coding_tokens_per_s"] = {
        "encode_one_tile": tok.num_tokens / enc1,
        "decode_one_tile": tok.num_tokens / dec1,
        "encode_64_tiles": 64 * tok.num_tokens / enc64,
        "decode_64_tiles": 64 * tok.num_tokens / dec64,
        "threads": torch.get_num_threads(),
    }
    if args.large:
        start = time.perf_counter()
        data = vtok.compress(args.large, tok, lm=lm)
        t_enc = time.perf_counter() - start
        start = time.perf_counter()
        info = vtok.read_tokens(data, tok, lm=lm)
        t_dec = time.perf_counter() - start
        ans = vtok.compress(args.large, tok, coding="ans")
        results["large_photo"] = {
            "tiles": len(info.counts),
            "lm_bytes": len(data),
            "ans_bytes": len(ans),
            "encode_s": t_enc,
            "decode_tokens_s": t_dec,
        }

    # 3. generation speed, with and without the KV cache
    gen = {}
    for n in (1, 16, 64):
        lm.generate(n, num_tokens=4, seed=0)
        repeat = 9 if n == 1 else 3  # one sample takes a few hundredths of a second: more runs, a steadier median
        with_cache = timed(lambda n=n: lm.generate(n, seed=0), repeat=repeat)
        without = timed(lambda n=n: lm.generate(n, seed=0, use_cache=False), repeat=repeat)
        gen[f"batch_{n}"] = {
            "tokens_per_s_cache": n * tok.num_tokens / with_cache,
            "tokens_per_s_no_cache": n * tok.num_tokens / without,
            "speedup": without / with_cache,
        }
    results["generation"] = gen

    # 4. samples: sheets, Frechet distance beside two baselines, nearest training images
    n = args.samples or len(small)
    generated = torch.cat([lm.generate(min(32, n - i), seed=1000 + i) for i in range(0, n, 32)])
    save_image_atomic(sample_sheet(tok, generated[:32]), out / "samples.png")
    save_image_atomic(progressive_sheet(tok, generated[:4]), out / "progressive.png")
    from vtok.metrics.perceptual import EfficientNetLite0Features

    backbone = EfficientNetLite0Features().eval()
    real = torch.stack([pil_to_tensor(im) for im in small])
    originals = np.array([v == "original" for v in train.views])
    rng = np.random.default_rng(0)
    train_rows = rng.choice(np.flatnonzero(originals), size=min(n, int(originals.sum())), replace=False)
    sets = {
        "token LM samples": tok.decode(generated),
        "static-prior samples": tok.decode(torch.from_numpy(prior_samples(tok.prior, n, seed=0))),
        "decoded training tokens": tok.decode(torch.from_numpy(train.tokens[train_rows])),
        "held-out reconstructions (reference)": tok.decode(tok.encode(real)),
    }
    real_f = pooled_features(backbone, real)
    results["frechet_distance_to_heldout"] = {
        name: frechet_distance(pooled_features(backbone, images), real_f) for name, images in sets.items()
    }
    results["frechet_distance_to_heldout"]["images_per_set"] = n
    # nearest training image (all training originals, decoded) of each sample, against held-out photos'
    train_f = pooled_features(backbone, tok.decode(torch.from_numpy(train.tokens[np.flatnonzero(originals)])))
    sample_f = pooled_features(backbone, sets["token LM samples"])
    held_f = pooled_features(backbone, sets["held-out reconstructions (reference)"])
    d_sample = torch.cdist(sample_f, train_f)
    d_held = torch.cdist(held_f, train_f).min(1).values
    nearest = d_sample.min(1)
    floor = float(torch.quantile(d_held, 0.01))
    results["nearest_training_image"] = {
        "sample_median": float(nearest.values.median()),
        "heldout_median": float(d_held.median()),
        "heldout_1st_percentile": floor,
        "samples_closer_than_that": int((nearest.values < floor).sum()),
        "samples": n,
    }
    closest = nearest.values.argsort()[:6]
    train_images = tok.decode(torch.from_numpy(train.tokens[np.flatnonzero(originals)[nearest.indices[closest]]]))
    rows = [[tensor_to_pil(sets["token LM samples"][i]) for i in closest], [tensor_to_pil(x) for x in train_images]]
    labels = [[f"sample, d={float(nearest.values[i]):.2f}" for i in closest], ["nearest training photo"] * len(closest)]
    save_image_atomic(image_sheet(rows, labels=labels), out / "nearest.png")

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    b = results["bits_per_token"]
    print(
        f"bits/token held-out: uniform {b['uniform']:.2f}, static prior {b['static_prior']:.3f}, LM {b['lm']:.3f} ({b['lm_vs_prior']:+.1%})"
    )
    v = results["vtok_bytes"]
    print(
        f".vtok bytes ({v['photos']} held-out {tok.image_size}px, K tokens): ANS {v['ans_mean']:.1f}, LM {v['lm_mean']:.1f} ({v['lm_vs_ans']:+.1%}), exact: {v['decoded_exactly']}"
    )
    c = results["coding_tokens_per_s"]
    print(
        f"LM coding tokens/s: one tile enc {c['encode_one_tile']:.0f} dec {c['decode_one_tile']:.0f}; 64 tiles enc {c['encode_64_tiles']:.0f} dec {c['decode_64_tiles']:.0f}"
    )
    if "large_photo" in results:
        lp = results["large_photo"]
        print(
            f"large photo: {lp['tiles']} tiles, LM {lp['lm_bytes']} B vs ANS {lp['ans_bytes']} B, encode {lp['encode_s']:.1f}s, decode tokens {lp['decode_tokens_s']:.1f}s"
        )
    for key, g in gen.items():
        print(
            f"generation {key}: {g['tokens_per_s_cache']:.0f} tokens/s with KV cache, {g['tokens_per_s_no_cache']:.0f} without ({g['speedup']:.1f}x)"
        )
    for name, fd in results["frechet_distance_to_heldout"].items():
        if name != "images_per_set":
            print(f"Frechet distance to held-out photos, {name}: {fd:.2f}")
    nn_ = results["nearest_training_image"]
    print(
        f"nearest training image: samples median {nn_['sample_median']:.2f}, held-out median {nn_['heldout_median']:.2f}; {nn_['samples_closer_than_that']}/{n} samples closer than the held-out 1st percentile ({nn_['heldout_1st_percentile']:.2f})"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
