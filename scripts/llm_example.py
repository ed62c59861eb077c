"""A worked example: a small Hugging Face causal LM that reads and writes vtok image tokens.

On 2 CPU cores, from nothing but the photos (no pretrained LM, nothing downloaded):

1. captions come free: "a photo of a {class}", the EfficientNet-Lite0 ImageNet top-1 class of each photo;
2. `vtok tokenize` shards (whole photo and its mirror image) of the training photos, written into
   interleaved Parquet with ``vtok.llm.write_interleaved`` in both directions: caption -> image tokens
   (generation) and image tokens -> caption (understanding), the first k tokens of each image;
3. a word-level tokenizer over the captions, extended with ``vtok.llm.add_image_tokens``;
4. a small ``LlamaForCausalLM`` from a config, trained for ``--minutes`` (a plain loop, bf16 autocast,
   a checkpoint every minute: a killed run continues where it stopped);
5. measured on photos from sources it never saw (``data/photos/sources_heldout``):
   - understanding: which training caption the LM finds likeliest after a photo's image tokens,
     against EfficientNet's class of the photo, beside chance (always the commonest training class),
     the LM without the image (its caption prior), and a linear probe (ridge on the same k tokens);
   - generation: images sampled after a caption (decoding restricted to image entries), their
     EfficientNet class against the prompt's, beside how often real photos of that class keep it when
     reconstructed from k tokens; a sheet of samples beside real reconstructions.

    python scripts/gather_photos.py data/photos     # once
    python scripts/llm_example.py --minutes 15      # -> runs/llm-example/{results.json, samples.png}

Everything lands in --out; a finished step (captions, shards, data, model) is reused on a second run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vtok import Tokenizer
from vtok.data import load_images
from vtok.files import atomic_path, write_atomic
from vtok.images import find_images, fit_square, load_image, pil_to_tensor
from vtok.llm import IMAGE_START, ImageVocabulary, add_image_tokens, word_tokenizer, write_interleaved
from vtok.metrics.probe import _ridge_predict, imagenet_class_names
from vtok.metrics.quality import ImageNetClassifier
from vtok.progress import progress_bar
from vtok.shards import ShardSettings, tokenize_images
from vtok.viz import image_sheet, save_image_atomic

HELD_OUT_SOURCES = ("kphotoalbum", "texlive", "tuxpaint_templates", "gramps")  # in sources_heldout, never trained on


def caption(name: str) -> str:
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"a photo of {article} {name}"


# -- 1. captions ---------------------------------------------------------------------------------
def classify_folder(folder: Path, classifier: ImageNetClassifier, cache: Path) -> dict[str, int]:
    """{key relative to folder: EfficientNet-Lite0 top-1 class} of each photo's whole view at 224 px."""
    if cache.is_file():
        return json.loads(cache.read_text())
    files = find_images(folder)
    classes: dict[str, int] = {}
    for i in progress_bar(range(0, len(files), 32), f"classify {folder.name}", unit="batch"):
        batch, keys = [], []
        for p in files[i : i + 32]:
            try:
                batch.append(pil_to_tensor(fit_square(load_image(p), 224)))
                keys.append(p.relative_to(folder).as_posix())
            except Exception:  # noqa: BLE001 - an unreadable photo is left out (tokenize counts them too)
                continue
        if batch:
            for key, c in zip(keys, classifier(torch.stack(batch)).tolist()):
                classes[key] = int(c)
    write_atomic(cache, json.dumps(classes))
    return classes


# -- 4. the LM -----------------------------------------------------------------------------------
def make_model(vocab_size: int, tok, size: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers = {"small": (256, 4), "medium": (512, 8)}[size]
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def pad_batch(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def train(
    model, sequences: list[list[int]], pad: int, minutes: float, out: Path, batch_size: int = 32, lr: float = 1e-3
):
    """Train for `minutes` of wall time (cosine over the time budget), resuming from out/checkpoint.pt."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    ckpt = out / "checkpoint.pt"
    step, elapsed = 0, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"resuming at step {step} ({elapsed / 60:.1f} of {minutes} minutes)")
    budget, rng = minutes * 60, np.random.default_rng(step)
    model.train()
    started, last_save, last_log, losses = time.time() - elapsed, time.time(), time.time(), []
    while (elapsed := time.time() - started) < budget:
        frac = elapsed / budget
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        rows = [sequences[i] for i in rng.integers(0, len(sequences), batch_size)]
        ids, mask = pad_batch(rows, pad)
        labels = ids.masked_fill(mask == 0, -100)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        if time.time() - last_log > 30:
            print(
                f"step {step}, {elapsed / 60:.1f}/{minutes} min, loss {np.mean(losses[-50:]):.3f} nats/id", flush=True
            )
            last_log = time.time()
        if time.time() - last_save > 60:
            with atomic_path(ckpt) as tmp:
                torch.save(
                    {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed}, tmp
                )
            last_save = time.time()
    model.eval()
    return step


# -- 5. measurements ----------------------------------------------------------------------------
@torch.no_grad()
def caption_scores(model, prefixes: list[list[int]], candidates: list[list[int]], pad: int) -> np.ndarray:
    """(P, C) total log-likelihood of each candidate continuation after each prefix."""
    scores = np.zeros((len(prefixes), len(candidates)))
    for i, prefix in enumerate(prefixes):
        for j in range(0, len(candidates), 128):
            chunk = candidates[j : j + 128]
            ids, mask = pad_batch([prefix + c for c in chunk], pad)
            logp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for c, cand in enumerate(chunk):
                pos = torch.arange(len(prefix) - 1, len(prefix) + len(cand) - 1)
                scores[i, j + c] = float(logp[c, pos, torch.tensor(cand)].sum())
    return scores


@torch.no_grad()
def sample_images(model, vocab: ImageVocabulary, prompt: list[int], k: int, n: int, temperature: float, seed: int):
    """n images of k tokens after `prompt`, each id drawn from the entries of the dimension due."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt] * n)
    alphabets = vocab.alphabets
    offsets = np.cumsum((0, *alphabets[:-1])) + vocab.first_id
    for step in range(k * len(alphabets)):
        d = step % len(alphabets)
        logits = model(input_ids=ids).logits[:, -1].float()
        lo, hi = int(offsets[d]), int(offsets[d]) + alphabets[d]
        probs = F.softmax(logits[:, lo:hi] / temperature, dim=-1)
        ids = torch.cat([ids, lo + torch.multinomial(probs, 1, generator=gen)], dim=1)
    return [vocab.decode_image(row[len(prompt) :].tolist()) for row in ids]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default="data/photos/train")
    p.add_argument("--heldout", default="data/photos/sources_heldout")
    p.add_argument("--model", default="default", help="vtok model (shipped name or folder)")
    p.add_argument("--num-tokens", type=int, default=16, help="image tokens per image (a prefix)")
    p.add_argument("--minutes", type=float, default=15.0, help="LM training wall time")
    p.add_argument("--size", choices=("small", "medium"), default="small", help="LM size (medium: for a GPU)")
    p.add_argument("--scheme", choices=("digit", "token"), default="digit")
    p.add_argument("--out", default="runs/llm-example")
    args = p.parse_args(argv)
    out, train_dir, heldout_dir = Path(args.out), Path(args.train), Path(args.heldout)
    for folder in (train_dir, heldout_dir):
        if not folder.is_dir():
            print(
                f"{folder}: no such folder (make it with: python scripts/gather_photos.py data/photos)", file=sys.stderr
            )
            return 2
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    vtok = Tokenizer.from_pretrained(args.model)
    k = args.num_tokens
    names = imagenet_class_names()
    classifier = ImageNetClassifier()

    # 1. captions
    train_classes = classify_folder(train_dir, classifier, out / "classes_train.json")
    heldout_classes = classify_folder(heldout_dir, classifier, out / "classes_heldout.json")
    train_classes = {key: c for key, c in train_classes.items() if key.split("/")[0] not in HELD_OUT_SOURCES}

    # 2. shards (whole view + mirror) of the training photos
    shards = out / "shards"
    tokenize_images(train_dir, shards, vtok, ShardSettings(flip=True), tokenizer_ref=args.model)

    # 3. tokenizer + interleaved data
    texts = {key: caption(names[c]) for key, c in train_classes.items()}
    tok = word_tokenizer(caption(n) for n in names)
    vocab = add_image_tokens(tok, vtok, scheme=args.scheme)
    vocab.model = args.model
    files = write_interleaved(shards, texts, vocab, out / "data", num_tokens=k, views=("original", "flip"))
    vocab.save_pretrained(out / "tokenizer")

    import datasets

    data = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    sequences = data["input_ids"]
    print(
        f"{len(data)} training examples ({len(texts)} photos x 2 views x 2 directions), "
        f"{len(set(texts.values()))} distinct captions, {len(tok)} vocabulary entries"
    )

    # 4. the LM
    model = make_model(len(tok), tok, args.size)
    params = sum(p.numel() for p in model.parameters())
    final = out / "lm"
    if (final / "model.safetensors").is_file():
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(str(final)).eval()
        steps = int(json.loads((out / "results.json").read_text())["steps"]) if (out / "results.json").is_file() else -1
    else:
        steps = train(model, sequences, tok.pad_token_id, args.minutes, out)
        model.save_pretrained(str(final))

    # 5a. understanding on held-out photos
    keys = sorted(heldout_classes)
    images, paths, _ = load_images([heldout_dir / key for key in keys], vtok.image_size)
    keys = [p.relative_to(heldout_dir).as_posix() for p in paths]
    tokens = vtok.encode(images)[:, :k]
    truth = np.array([heldout_classes[key] for key in keys])
    cand_classes = sorted(set(train_classes.values()))
    cand_ids = [tok(caption(names[c]))["input_ids"][1:] for c in cand_classes]  # BOS dropped: it leads the prompt
    with_image = [[tok.bos_token_id, *vocab.tokens_to_ids(t)] for t in tokens]
    pred_lm = np.array(cand_classes)[caption_scores(model, with_image, cand_ids, tok.pad_token_id).argmax(1)]
    prior = caption_scores(model, [[tok.bos_token_id]], cand_ids, tok.pad_token_id)[0]
    pred_prior = cand_classes[int(prior.argmax())]
    commonest = Counter(train_classes.values()).most_common(1)[0][0]
    # the linear probe: ridge from the same k tokens' codes, fitted on the training photos' whole views
    train_keys = sorted(train_classes)
    train_images, train_paths, _ = load_images([train_dir / key for key in train_keys], vtok.image_size)
    train_y = np.array([train_classes[p.relative_to(train_dir).as_posix()] for p in train_paths])
    codes = torch.cat(
        [
            vtok.model.quantizer.indices_to_codes(vtok.encode(train_images)[:, :k]),
            vtok.model.quantizer.indices_to_codes(tokens),
        ]
    )
    x = codes.reshape(len(codes), -1).double().numpy()
    onehot = (np.concatenate([train_y, truth])[:, None] == np.array(cand_classes)[None, :]).astype(np.float64)
    idx_tr, idx_te = np.arange(len(train_y)), np.arange(len(train_y), len(x))
    pred_probe = np.array(cand_classes)[_ridge_predict(x @ x.T, idx_tr, idx_te, onehot, 1.0).argmax(1)]
    reachable = np.isin(truth, cand_classes)
    understanding = {
        "photos": len(truth),
        "with_a_training_class": int(reachable.sum()),
        "lm_top1": float((pred_lm == truth).mean()),
        "lm_without_image_top1": float((pred_prior == truth).mean()),
        "linear_probe_top1": float((pred_probe == truth).mean()),
        "chance_commonest_class": float((truth == commonest).mean()),
        "commonest_class": names[commonest],
        "lm_distinct_answers": len(set(pred_lm.tolist())),
    }

    # 5b. generation for the commonest training classes
    rows, labels, agree, kept = [], [], [], []
    counts = Counter(train_classes.values()).most_common(6)
    for c, _ in counts:
        prompt = tok(caption(names[c]))["input_ids"][:-1] + [tok.convert_tokens_to_ids(IMAGE_START)]  # EOS dropped
        samples = sample_images(model, vocab, prompt, k, 4, temperature=1.0, seed=c)
        got = classifier(torch.stack([pil_to_tensor(s) for s in samples])).tolist()
        agree += [g == c for g in got]
        real_keys = [key for key in train_keys if train_classes[key] == c][:8]
        real = load_images([train_dir / key for key in real_keys], vtok.image_size)[0]
        recon = vtok.decode(vtok.encode(real)[:, :k])
        kept += (classifier(recon) == c).tolist()
        rows.append([*samples, *vtok.decode_pil(vtok.encode(real[:2])[:, :k])])
        labels.append(
            [f"asked: {names[c][:14]}\nseen: {names[g][:14]}" for g in got]
            + [f"a real {names[c][:14]}\n{k} tokens"] * min(2, len(real))
        )
    generation = {
        "classes": [names[c] for c, _ in counts],
        "samples_per_class": 4,
        "samples_in_prompt_class": float(np.mean(agree)),
        "real_reconstructions_keep_class": float(np.mean(kept)),
    }
    sheet = image_sheet(
        rows,
        labels,
        title=f"4 samples per caption, then 2 real photos ({k} tokens)",
    )
    save_image_atomic(sheet, out / "samples.png")

    results = {
        "model": args.model,
        "num_tokens": k,
        "scheme": args.scheme,
        "lm_parameters": params,
        "minutes": args.minutes,
        "steps": steps,
        "training_examples": len(data),
        "understanding": understanding,
        "generation": generation,
    }
    write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    u, g = understanding, generation
    print(f"understanding, {u['photos']} held-out photos ({u['with_a_training_class']} of a class seen in training):")
    print(
        f"  LM top-1 {100 * u['lm_top1']:.1f}%  | without the image {100 * u['lm_without_image_top1']:.1f}%  | "
        f"linear probe {100 * u['linear_probe_top1']:.1f}%  | chance ({u['commonest_class']}) {100 * u['chance_commonest_class']:.1f}%"
    )
    print(
        f"generation: {100 * g['samples_in_prompt_class']:.1f}% of samples in their prompt's class; real photos "
        f"reconstructed from {k} tokens keep theirs {100 * g['real_reconstructions_keep_class']:.1f}%"
    )
    print(f"wrote {out / 'results.json'} and {out / 'samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
