"""vtok.llm: image tokens in a Hugging Face tokenizer, saved and reloaded, and interleaved training data."""

import json

import numpy as np
import pytest
import torch

import vtok
from vtok.demo import sample_images

pytest.importorskip("transformers")
from vtok.llm import IMAGE_END, IMAGE_START, ImageVocabulary, add_image_tokens, word_tokenizer, write_interleaved  # noqa: E402

CAPTIONS = ["a photo of a tabby", "a photo of an Egyptian cat", "a photo of a coffee mug"]


@pytest.fixture(scope="module", params=["digit", "token"])
def vocab(request):
    return add_image_tokens(word_tokenizer(CAPTIONS), "default", scheme=request.param)


def test_word_tokenizer_is_built_on_the_spot():
    tok = word_tokenizer(CAPTIONS)
    ids = tok("A photo of a TABBY")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "a photo of a tabby"


def test_images_round_trip_through_the_extended_tokenizer(vocab):
    tok, model = vocab.tokenizer, vtok.load("default")
    image = sample_images()[0]
    tokens = model.encode(image)[0]
    per = vocab.ids_per_token
    assert vocab.num_entries == (39 if vocab.scheme == "digit" else 64000)
    for k in (1, 2, 7, 16, 64):  # every prefix length round-trips
        ids = vocab.encode_image(image, num_tokens=k)
        assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id and len(ids) == vocab.image_length(k) == k * per + 2
        assert (vocab.ids_to_tokens(ids) == tokens[:k].numpy()).all()
        assert np.array_equal(np.asarray(vocab.decode_image(ids)), np.asarray(model.decode_pil(tokens[None, :k])[0]))
    # inside text: the entries are single vocabulary items, found by the tokenizer in plain text
    text = "a photo of a tabby" + vocab.image_text(tokens[:4])
    ids = tok(text)["input_ids"]
    spans = vocab.find_images(ids)
    assert len(spans) == 1 and (vocab.ids_to_tokens(ids[slice(*spans[0])]) == tokens[:4].numpy()).all()
    assert (
        tok.convert_ids_to_tokens(vocab.start_id) == IMAGE_START
        and tok.convert_ids_to_tokens(vocab.end_id) == IMAGE_END
    )
    # a cut-off generation (no end boundary, a partial last digit group) still decodes
    cut = vocab.encode_image(image, num_tokens=3)[:-1]
    if per > 1:
        cut = cut[:-1]
    assert len(vocab.ids_to_tokens(cut)) == (3 if per == 1 else 2)


def test_bad_ids_are_refused(vocab):
    with pytest.raises(vtok.TokenError, match="not an image token"):
        vocab.ids_to_tokens([vocab.start_id, 0, vocab.end_id])
    with pytest.raises(vtok.TokenError, match="no complete image token"):
        vocab.ids_to_tokens([vocab.start_id, vocab.end_id])
    with pytest.raises(vtok.TokenError, match="at most 64"):
        vocab.ids_to_tokens(vocab.tokens_to_ids([0])[1:-1] * 65)
    if vocab.scheme == "digit":
        with pytest.raises(vtok.TokenError, match="out of order"):
            vocab.ids_to_tokens([vocab.first_id + 38] * 6)  # dimension 5's entry where dimension 0's belongs
    with pytest.raises(vtok.VtokError, match="already has"):
        add_image_tokens(vocab.tokenizer, "default")


def test_save_pretrained_round_trip_and_mismatches(vocab, tmp_path, tiny_model_dir):
    text = "a photo of an egyptian cat" + vocab.image_text([5, 6, 7])
    vocab.save_pretrained(tmp_path / "tok")
    again = ImageVocabulary.from_pretrained(tmp_path / "tok")
    assert again.tokenizer(text)["input_ids"] == vocab.tokenizer(text)["input_ids"]
    assert (again.first_id, again.start_id, again.end_id, again.scheme) == (
        vocab.first_id,
        vocab.start_id,
        vocab.end_id,
        vocab.scheme,
    )
    assert (again.ids_to_tokens(vocab.tokens_to_ids([5, 6, 7])) == [5, 6, 7]).all()
    with pytest.raises(vtok.ModelLoadError, match="weights"):  # another model's tokens would decode to other pictures
        ImageVocabulary.from_pretrained(tmp_path / "tok", model=tiny_model_dir)
    mapping = json.loads((tmp_path / "tok" / "vtok_image_tokens.json").read_text())
    mapping["first_id"] += 1
    (tmp_path / "tok" / "vtok_image_tokens.json").write_text(json.dumps(mapping))
    with pytest.raises(vtok.ModelLoadError, match="where the mapping says"):
        ImageVocabulary.from_pretrained(tmp_path / "tok")
    with pytest.raises(vtok.ModelLoadError, match="no vtok_image_tokens.json"):
        ImageVocabulary.from_pretrained(tmp_path)


def test_interleaved_data_reads_in_datasets_and_trains_with_trainer(tmp_path, tiny_model_dir, capsys):
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("pyarrow")
    from PIL import Image

    from vtok.shards import tokenize_images

    photos = tmp_path / "photos"
    for label in ("cats", "cups"):
        (photos / label).mkdir(parents=True)
        for i, src in enumerate(sample_images()):
            Image.open(src).save(photos / label / f"{i}.png")
    tiny = vtok.load(tiny_model_dir)
    tokenize_images(photos, tmp_path / "shards", tiny, progress=False, tokenizer_ref=str(tiny_model_dir))
    tok = word_tokenizer(["a photo of cats", "a photo of cups"])
    vocab = add_image_tokens(tok, tiny_model_dir)
    texts = lambda key, label: None if key.endswith("2.png") else f"a photo of {label}"  # noqa: E731
    files = write_interleaved(tmp_path / "shards", texts, vocab, tmp_path / "data", num_tokens=4)
    data = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    assert len(data) == 2 * 2 * 2 and set(data["order"]) == {"text-image", "image-text"}
    row = data[0]
    assert row["input_ids"] == tok(row["text"])["input_ids"]
    spans = vocab.find_images(row["input_ids"])
    assert len(spans) == 1 and len(vocab.ids_to_tokens(row["input_ids"][slice(*spans[0])])) == 4
    first = [r for r in data if r["order"] == "text-image"][0]["input_ids"]
    assert first[1:4] == tok("a photo of")["input_ids"][1:4] and first[-2] == vocab.end_id  # caption, then image

    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=64, pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "lm"), max_steps=2, per_device_train_batch_size=4,
                                          report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)  # fmt: skip
    collator = transformers.DataCollatorForLanguageModeling(tok, mlm=False)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data.select_columns(["input_ids"]), data_collator=collator
    )
    result = trainer.train()
    assert np.isfinite(result.training_loss)

    with pytest.raises(vtok.VtokError, match="tokenized by weights"):
        write_interleaved(tmp_path / "shards", texts, add_image_tokens(word_tokenizer([]), "default"), tmp_path / "x")
    with pytest.raises(vtok.VtokError, match="orders"):
        write_interleaved(tmp_path / "shards", texts, vocab, tmp_path / "x", orders=["sideways"])
    with pytest.raises(vtok.VtokError, match="no image had a text"):
        write_interleaved(tmp_path / "shards", {}, vocab, tmp_path / "x")

    # the same from the command line: a saved extended tokenizer and a JSON of texts by shard key
    from conftest import run_cli

    vocab.save_pretrained(tmp_path / "tok")
    (tmp_path / "texts.json").write_text(json.dumps({"cats/0.png": "a photo of cats", "cups/1.png": "a photo of cups"}))
    rc, out, err = run_cli(["interleave", tmp_path / "shards", tmp_path / "texts.json", "--tokenizer", tmp_path / "tok",
                            "--out", tmp_path / "cli", "--num-tokens", "2", "--orders", "image-text"], capsys)  # fmt: skip
    assert rc == 0, err
    rows = datasets.load_dataset("parquet", data_files=str(tmp_path / "cli" / "*.parquet"), split="train")
    assert sorted(rows["key"]) == ["cats/0.png", "cups/1.png"] and set(rows["order"]) == {"image-text"}
    assert all(len(vocab.ids_to_tokens(r[slice(*vocab.find_images(r)[0])])) == 2 for r in rows["input_ids"])
    (tmp_path / "bad.json").write_text("[1, 2]")
    capsys.readouterr()  # datasets' own progress lines
    rc, _, err = run_cli(["interleave", tmp_path / "shards", tmp_path / "bad.json", "--tokenizer", tmp_path / "tok",
                          "--out", tmp_path / "cli2"], capsys)  # fmt: skip
    assert rc != 0 and "JSON object" in err and err.count("\n") == 1
