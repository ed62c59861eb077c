"""vtok serve through an in-process client: every endpoint, every bad input, the limits."""

from __future__ import annotations

import asyncio
import io
import json
import random
import struct
import sys
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.demo import sample_images

pytest.importorskip("fastapi", reason="the serve extra: pip install 'vtok[serve]'")
pytest.importorskip("httpx", reason="the test extra: pip install 'vtok[test]'")
from conftest import run_cli  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from vtok.serve import Limits, create_app  # noqa: E402
from vtok.serve.limits import Busy, Gate  # noqa: E402


@pytest.fixture(scope="module")
def tok() -> vtok.Tokenizer:
    return vtok.load("default")


@pytest.fixture(scope="module")
def client(tok):
    with TestClient(create_app({"default": tok})) as c:
        yield c


@pytest.fixture(scope="module")
def photo() -> bytes:
    """A real photo, not square, as JPEG bytes."""
    return sample_images()[0].read_bytes()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header declares width x height (its IDAT holds one row)."""
    data = png_bytes(Image.new("RGB", (1, 1)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def assert_error(response, status: int) -> str:
    """A refusal: the status, JSON {"error": one line}, never a traceback."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


# -- the happy paths ----------------------------------------------------------------------


def test_health_models_samples(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["models"] == ["default"] and health["lm"] is False
    info = client.get("/api/models").json()
    (model,) = info["models"]
    assert (model["name"], model["num_tokens"], model["image_size"]) == ("default", 64, 128)
    assert info["lm"] is None and "jpeg" in info["codecs"]
    samples = client.get("/api/samples").json()
    assert [s["name"] for s in samples] == [p.name for p in sample_images()]
    response = client.get(samples[0]["url"])
    assert response.status_code == 200 and response.content == sample_images()[0].read_bytes()


def test_page_is_served_with_a_same_origin_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "k-slider" in page.text and "/static/app.js" in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http" not in page.text.replace('href="/docs"', "")  # nothing loaded from elsewhere
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert "fetch(" in client.get("/static/app.js").text
    assert_error(client.get("/static/..%2Fapp.py"), 404)
    assert_error(client.get("/static/app.py"), 404)


def test_encode_matches_the_library(client, tok, photo):
    body = client.post("/api/encode", content=photo).json()
    expected = tok.encode(Image.open(io.BytesIO(photo)))[0].tolist()
    assert body["tokens"] == expected and body["num_tokens"] == 64
    sizes = body["bytes_per_prefix"]
    assert len(sizes) == 64 and sizes[0] < sizes[-1]
    assert client.post("/api/encode?tokens=5", content=photo).json()["tokens"] == expected[:5]


def test_decode_matches_the_library(client, tok):
    ids = [5, 17, 60000, 42]
    response = client.post("/api/decode", json={"tokens": ids})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(response.content)))
    plain = vtok.load("default")  # not laid out channels-last as the served one is: the same pixels
    assert any(p.dim() == 4 and not p.is_contiguous() for p in tok.model.parameters())
    expected = np.asarray(plain.decode_pil(torch.tensor([ids]))[0])
    assert got.shape == (128, 128, 3) and np.array_equal(got, expected)


def test_all_prefixes_in_one_request(client, tok, photo):
    body = client.post("/api/prefixes", content=photo).json()
    rows = body["prefixes"]
    assert [r["k"] for r in rows] == list(range(1, 65)) and len(body["images"]) == 64
    assert rows[-1]["psnr"] > rows[0]["psnr"] + 2 and rows[-1]["ssim"] > rows[0]["ssim"]
    encoded = client.post("/api/encode", content=photo).json()
    assert [r["bytes"] for r in rows] == encoded["bytes_per_prefix"] and body["tokens"] == encoded["tokens"]
    # the picture at k is the library's decoding of the first k tokens, and its metrics are vtok's
    k = 8
    picture = np.asarray(Image.open(io.BytesIO(_data(body["images"][k - 1]))))
    expected = tok.decode(torch.tensor([body["tokens"][:k]]))
    assert np.abs(picture.astype(int) - np.asarray(vtok_pil(expected)).astype(int)).max() <= 1
    original = Image.open(io.BytesIO(_data(body["original"])))
    x = torch.from_numpy(np.asarray(original).copy()).permute(2, 0, 1)[None].float() / 255
    assert rows[k - 1]["psnr"] == pytest.approx(float(vtok.metrics.psnr(expected, x)[0]), abs=0.01)
    assert rows[k - 1]["ssim"] == pytest.approx(float(vtok.metrics.ssim(expected, x)[0]), abs=1e-3)
    # the raw form holds the same pixels, K x S x S x 3
    raw = client.post("/api/prefixes?pixels=raw", content=photo).json()
    pixels = np.frombuffer(__import__("base64").b64decode(raw["pixels"]), dtype=np.uint8).reshape(64, 128, 128, 3)
    assert np.array_equal(pixels[k - 1], picture) and "images" not in raw


def vtok_pil(x: torch.Tensor) -> Image.Image:
    from vtok.images import tensor_to_pil

    return tensor_to_pil(x[0])


def _data(url: str) -> bytes:
    import base64

    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.split(",", 1)[1])


def test_equal_bytes_stays_within_each_budget(client, photo):
    prefixes = client.post("/api/prefixes", content=photo).json()["prefixes"]
    body = client.post("/api/equal-bytes?codec=webp", content=photo).json()
    assert body["codec"] == "webp" and len(body["prefixes"]) == 64
    reached = [(p, row) for p, row in zip(prefixes, body["prefixes"]) if row is not None]
    for p, row in reached:
        assert row["budget"] == p["bytes"] and row["bytes"] <= p["bytes"]
        assert Image.open(io.BytesIO(_data(row["image"]))).size == (128, 128)
    unreached = [p for p, row in zip(prefixes, body["prefixes"]) if row is None]
    assert all(p["bytes"] < body["smallest_bytes"] for p in unreached)
    jpeg = client.post("/api/equal-bytes?codec=jpeg", content=photo).json()
    assert jpeg["prefixes"][0] is None  # JPEG's headers alone outweigh one token's file: "cannot reach"
    assert_error(client.post("/api/equal-bytes?codec=gif", content=photo), 422)
    # the shrunk copies (on by default) reach budgets the full-size codec cannot, and never lose to it
    full = client.post("/api/equal-bytes?codec=webp&downscaled=false", content=photo).json()
    assert body["downscaled"] and not full["downscaled"] and all(r["scale"] == 1.0 for r in full["prefixes"] if r)
    assert sum(r is not None for r in body["prefixes"]) >= sum(r is not None for r in full["prefixes"])
    assert any(r is not None and r["scale"] < 1 for r in body["prefixes"])
    for down, whole in zip(body["prefixes"], full["prefixes"]):
        assert whole is None or (down is not None and down["psnr"] >= whole["psnr"])


def test_prefixes_with_searched_tokens(client, tok, photo):
    plain = client.post("/api/prefixes", content=photo).json()
    searched = client.post("/api/prefixes?effort=1", content=photo).json()
    assert plain["effort"] == 0 and searched["effort"] == 1 and searched["tokens"] != plain["tokens"]
    mean = lambda body: np.mean([r["psnr"] for r in body["prefixes"]])  # noqa: E731
    assert mean(searched) > mean(plain)  # better at the prefixes on the whole
    assert_error(client.post("/api/prefixes?effort=9", content=photo), 422)
    # the equal-bytes panel compares at the searched file's bytes when the page shows searched tokens
    panel = client.post("/api/equal-bytes?codec=webp&effort=1", content=photo).json()
    assert [r["budget"] for r in panel["prefixes"] if r] == [
        p["bytes"] for p, r in zip(searched["prefixes"], panel["prefixes"]) if r
    ]


@pytest.mark.slow
def test_compress_decompress_round_trip(client, photo):
    response = client.post("/api/compress?ssim=0.5", content=photo)
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    assert "image.vtok" in response.headers["content-disposition"]
    data = response.content
    assert int(response.headers["x-vtok-bytes"]) == len(data) and float(response.headers["x-vtok-ssim"]) > 0
    assert np.array_equal(
        np.asarray(vtok.decompress(data)), np.asarray(_png(client.post("/api/decompress", content=data)))
    )
    width, height = Image.open(io.BytesIO(photo)).size
    assert _png(client.post("/api/decompress?model=default", content=data)).size == (width, height)
    small = client.post("/api/compress?max_bytes=400", content=photo)
    assert small.status_code == 200 and len(small.content) <= 400
    assert client.post("/api/compress?tokens=2&coding=bitpack", content=photo).headers["x-vtok-coding"] == "bitpack"


def test_compress_with_search_and_a_coded_size(client, photo):
    small = png_bytes(Image.open(io.BytesIO(photo)).convert("RGB").resize((128, 128)))
    plain = client.post("/api/compress?tokens=8", content=small)
    searched = client.post("/api/compress?tokens=8&effort=1", content=small)
    assert searched.status_code == 200 and plain.status_code == 200
    assert _png(client.post("/api/decompress", content=searched.content)).size == (128, 128)
    half = client.post("/api/compress?tokens=8&scale=0.5", content=photo)
    assert (
        half.status_code == 200
        and _png(client.post("/api/decompress", content=half.content)).size == Image.open(io.BytesIO(photo)).size
    )
    assert_error(client.post("/api/compress?tokens=8&effort=9", content=small), 422)
    assert_error(client.post("/api/compress?tokens=8&scale=huge", content=small), 422)
    big = png_bytes(Image.new("RGB", (1200, 900), (90, 120, 150)))
    assert_error(client.post("/api/compress?tokens=2&effort=1", content=big), 413)


def _png(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


# -- bad input: always a 4xx and one line ---------------------------------------------------


@pytest.mark.parametrize("path", ["/api/encode", "/api/prefixes", "/api/equal-bytes", "/api/compress"])
def test_bad_images_are_refused(client, photo, path):
    assert "empty" in assert_error(client.post(path, content=b""), 400)
    assert "not an image" in assert_error(client.post(path, content=b"this is text, not an image"), 415)
    assert_error(client.post(path, content=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"), 415)
    assert "truncated" in assert_error(client.post(path, content=photo[: len(photo) // 3]), 422)
    assert "pixels" in assert_error(client.post(path, content=bomb_png(100_000, 100_000)), 413)
    assert_error(client.post(f"{path}?model=nope", content=photo), 404)


def test_image_bomb_is_refused_before_decoding(client, monkeypatch):
    """The refusal comes from the header: no pixel of the image is decoded."""
    from PIL import ImageFile

    bomb = bomb_png(30_000, 30_000)
    loaded, load = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loaded.append(self) or load(self))
    assert_error(client.post("/api/encode", content=bomb), 413)
    assert loaded == []
    assert_error(client.post("/api/encode", content=bomb_png(64, 64)), 422)  # under the cap: decoded, then found short
    assert len(loaded) == 1


def test_body_over_the_cap_is_refused_declared_or_streamed(tok, photo):
    limits = Limits(max_upload_bytes=len(photo) - 1)
    with TestClient(create_app({"default": tok}, limits=limits)) as small:
        assert "limit" in assert_error(small.post("/api/encode", content=photo), 413)

        def chunks():  # no Content-Length: the cap is checked as the stream arrives
            for i in range(0, len(photo), 4096):
                yield photo[i : i + 4096]

        assert_error(small.post("/api/prefixes", content=chunks()), 413)
        assert_error(small.post("/api/decode", content=b"[" * (len(photo) + 10)), 413)
        assert small.post("/api/encode", content=photo[:1000]).status_code == 422  # under the cap: read, then refused
    with TestClient(create_app({"default": tok}, limits=Limits(max_pixels=100 * 100))) as few:
        assert "pixels" in assert_error(few.post("/api/encode", content=photo), 413)


def test_corrupted_uploads_are_answered_never_failed(client, photo):
    """Bytes changed and cut at random (seeded): a picture or a 4xx, never a server error (the
    in-process client raises on any)."""
    rng = random.Random(0)
    small_png = png_bytes(Image.open(io.BytesIO(photo)).convert("RGB").resize((64, 64)))
    vtok_file = client.post("/api/compress?tokens=4", content=small_png).content
    for base, path in ((photo, "/api/encode"), (small_png, "/api/prefixes"), (vtok_file, "/api/decompress")):
        for _ in range(12):
            data = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = data[: rng.choice([len(data), rng.randrange(1, len(data))])]
            response = client.post(path, content=bytes(data))
            if response.status_code != 200:
                assert 400 <= response.status_code < 500 and set(response.json()) == {"error"}, response.text


def test_a_body_slower_than_the_limit_is_refused(tok, photo):
    import time

    def trickle():
        yield photo[:100]
        time.sleep(0.6)
        yield photo[100:]

    with TestClient(create_app({"default": tok}, limits=Limits(body_timeout_s=0.2))) as c:
        assert "did not arrive" in assert_error(c.post("/api/encode", content=trickle()), 408)


@pytest.mark.parametrize(
    "body",
    [
        {"tokens": [1.0, 2.0]},
        {"tokens": ["1", "2"]},
        {"tokens": [True, 2]},
        {"tokens": [[1, 2], [3, 4]]},
        {"tokens": []},
        {"tokens": [-1, 5]},
        {"tokens": [64000]},
        {"tokens": [2**70]},
        {"tokens": list(range(65))},
        {"tokens": None},
        {"ids": [1, 2]},
        {"tokens": [1], "extra": 1},
        [1, 2, 3],
    ],
)
def test_bad_tokens_are_refused(client, body):
    assert_error(client.post("/api/decode", json=body), 422)


def test_bad_json_and_unknown_model_for_decode(client):
    assert_error(client.post("/api/decode", content=b"{tokens: [1, 2"), 422)
    assert_error(client.post("/api/decode", content=b""), 400)
    assert_error(client.post("/api/decode?model=../../etc", json={"tokens": [1]}), 404)


@pytest.mark.parametrize(
    "query",
    [
        "tokens=0",
        "tokens=65",
        "tokens=abc",
        "psnr=200",
        "ssim=1.5",
        "tokens=4&ssim=0.5",
        "allocation=mean",
        "allocation=sideways",
        "coding=zip",
        "max_bytes=5",
        "max_bytes=-3",
    ],
)
def test_bad_compress_options_are_refused(client, photo, query):
    assert_error(client.post(f"/api/compress?{query}", content=photo), 422)


def test_bad_vtok_files_are_refused(client, photo, tiny_model_dir):
    data = client.post("/api/compress?tokens=4", content=photo).content
    assert_error(client.post("/api/decompress", content=b""), 400)
    assert_error(client.post("/api/decompress", content=b"not a vtok file at all"), 422)
    assert_error(client.post("/api/decompress", content=data[: len(data) // 2]), 422)
    corrupt = bytearray(data)
    corrupt[-3] ^= 0xFF
    assert_error(client.post("/api/decompress", content=bytes(corrupt)), 422)
    other = vtok.compress(sample_images()[1], vtok.load(tiny_model_dir), tokens=2)
    assert "another model" in assert_error(client.post("/api/decompress?model=default", content=other), 422)
    assert_error(client.post("/api/decompress", content=other), 422)  # no loaded model made it
    assert_error(client.post("/api/decompress?model=nope", content=data), 404)


def test_vtok_file_declaring_too_many_pixels_is_refused_before_decoding(tok, client, photo, monkeypatch):
    data = client.post("/api/compress?tokens=1", content=photo).content
    import vtok.serve.work as work

    monkeypatch.setattr(work, "decompress", lambda *a, **k: pytest.fail("decoded tiles past the pixel cap"))
    with TestClient(create_app({"default": tok}, limits=Limits(max_pixels=200 * 200))) as few:
        assert "pixels" in assert_error(few.post("/api/decompress", content=data), 413)


def test_unknown_routes_methods_and_samples(client):
    assert_error(client.get("/api/nothing"), 404)
    assert_error(client.get("/api/encode"), 405)
    assert_error(client.get("/api/samples/..%2F..%2Fcli%2F__init__.py"), 404)
    assert_error(client.get("/api/samples/nope.jpg"), 404)
    assert "--lm" in assert_error(client.post("/api/generate", json={"n": 1}), 404)
    assert "/api/generate" in client.get("/openapi.json").json()["paths"]  # documented, as the README lists it


def test_no_cors_unless_asked(tok, client):
    origin = {"Origin": "http://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get("/api/health", headers=origin).headers
    with TestClient(create_app({"default": tok}, cors_origins=["http://elsewhere.example"])) as open_client:
        headers = open_client.get("/api/health", headers=origin).headers
        assert headers["access-control-allow-origin"] == "http://elsewhere.example"


def test_openapi_describes_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("encode", "decode", "prefixes", "equal-bytes", "compress", "decompress", "models", "health"):
        assert f"/api/{path}" in paths


# -- the gate: bounded work, bounded queue --------------------------------------------------


def test_gate_refuses_past_the_queue_and_times_out():
    release = threading.Event()

    def blocked() -> str:
        release.wait(5)
        return "done"

    async def scenario() -> list:
        gate = Gate(Limits(workers=1, queue=1, queue_timeout_s=0.3, work_timeout_s=0.2, retry_after_s=3))
        first = asyncio.ensure_future(gate.run(blocked))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(gate.run(lambda: "second"))  # waits in the queue
        await asyncio.sleep(0.05)
        outcomes = []
        try:
            await gate.run(lambda: "third")  # the queue is full
        except Busy as e:
            outcomes.append((e.status, e.retry_after_s))
        for task in (first, second):
            try:
                await task
            except Busy as e:
                outcomes.append((e.status, e.retry_after_s))
        assert gate.running == 1  # the abandoned job still holds its worker until it ends
        release.set()
        await asyncio.sleep(0.1)
        outcomes.append(await gate.run(lambda: "after"))
        gate.close()
        return outcomes

    assert asyncio.run(scenario()) == [(429, 3), (503, 3), (503, 3), "after"]


def test_queue_overflow_over_http():
    """With one worker busy and no queue, the next request gets 429 with Retry-After."""
    started, release = threading.Event(), threading.Event()
    tiny, lm = tiny_pair(classes=[])

    def blocking_generate(n, **options):
        started.set()
        release.wait(10)
        return torch.zeros(n, 8, dtype=torch.long)

    lm.generate = blocking_generate
    app = create_app({"tiny": tiny}, lm=lm, limits=Limits(workers=1, queue=0))
    with TestClient(app) as c:
        slow = threading.Thread(target=lambda: c.post("/api/generate", json={"n": 1}))
        slow.start()
        assert started.wait(10)
        response = c.post("/api/decode", json={"tokens": [1, 2]})
        assert_error(response, 429)
        assert response.headers["retry-after"] == "2"
        assert c.get("/api/health").json()["running"] == 1  # health never waits for a worker
        release.set()
        slow.join(10)
        assert c.post("/api/decode", json={"tokens": [1, 2]}).status_code == 200


# -- generation: a tiny untrained LM over a tiny tokenizer, both made here ----------------------


def tiny_pair(classes: list[str]):
    """(tokenizer ordered1d-tiny: 32 px, K = 8; an lm-tiny LM over its tokens, naming it "tiny")."""
    import vtok.lm

    torch.manual_seed(0)
    tiny = vtok.create_tokenizer("ordered1d-tiny")
    lm = vtok.lm.create_lm("lm-tiny", tiny.model.quantizer.symbol_alphabets(), tiny.num_tokens, len(classes)).eval()
    lm.classes, lm.tokenizer_name, lm.tokenizer_id = list(classes), "tiny", tiny.weights_id().hex()
    return tiny, lm


@pytest.fixture()
def lm_client():
    tiny, lm = tiny_pair(["cat", "dog"])
    with TestClient(create_app({"tiny": tiny}, lm=lm, limits=Limits(max_generate=3))) as c:
        yield c, lm, tiny


def test_generate_returns_tokens_and_progressive_strips(lm_client, monkeypatch):
    c, lm, tiny = lm_client
    info = c.get("/api/models").json()["lm"]
    assert info == {"name": "lm-tiny", "tokenizer": "tiny", "num_tokens": 8, "classes": ["cat", "dog"]}
    assert "/api/generate" in c.get("/openapi.json").json()["paths"]
    request = {"n": 2, "class_label": "dog", "seed": 7, "cfg": 1.5, "top_k": 50, "temperature": 0.9}
    body = c.post("/api/generate", json=request).json()
    expected = lm.generate(2, class_label=1, seed=7, cfg=1.5, top_k=50, temperature=0.9)
    assert [s["tokens"] for s in body["samples"]] == expected.tolist()  # the LM's own sampling, seeded
    assert body["prefix_lengths"] == [1, 2, 4, 8] and len(body["samples"]) == 2
    sample = body["samples"][0]
    assert len(sample["tokens"]) == 8 and len(sample["images"]) == 4
    last = np.asarray(Image.open(io.BytesIO(_data(sample["images"][-1]))))
    assert np.array_equal(last, np.asarray(tiny.decode_pil(torch.tensor([sample["tokens"]]))[0]))
    short = c.post("/api/generate", json={"n": 1, "num_tokens": 3, "class_label": 0, "seed": 1}).json()
    assert short["prefix_lengths"] == [1, 2, 3] and len(short["samples"][0]["tokens"]) == 3
    assert c.post("/api/generate", json={"n": 1, "seed": 3}).status_code == 200  # unconditional: the null class


@pytest.mark.parametrize(
    "body",
    [
        {"n": 4},
        {"n": 0},
        {"n": 1.5},
        {"num_tokens": 9},
        {"class_label": "bird"},
        {"class_label": 2},
        {"temperature": 0},
        {"top_p": 1.5},
        {"seed": -1},
        {"steps": 3},
    ],
)
def test_bad_generate_requests_are_refused(lm_client, body):
    c, _, _ = lm_client
    assert_error(c.post("/api/generate", json=body), 422)


def test_unconditional_lm_refuses_a_class():
    tiny, lm = tiny_pair(classes=[])
    with TestClient(create_app({"tiny": tiny}, lm=lm)) as c:
        assert "unconditional" in assert_error(c.post("/api/generate", json={"class_label": 0}), 422)
        assert c.post("/api/generate", json={"n": 1}).status_code == 200


def test_lm_coded_files_round_trip(lm_client, photo, client):
    c, lm, tiny = lm_client
    response = c.post("/api/compress?tokens=8&coding=lm", content=photo)
    assert response.status_code == 200 and response.headers["x-vtok-coding"] == "lm"
    expected = np.asarray(vtok.decompress(response.content, tiny, lm=lm))
    assert np.array_equal(np.asarray(_png(c.post("/api/decompress", content=response.content))), expected)
    assert "--lm" in assert_error(client.post("/api/compress?tokens=8&coding=lm", content=photo), 422)
    assert_error(client.post("/api/decompress", content=response.content), 422)  # not this server's model


def test_lm_of_another_tokenizer_is_refused(tok):
    _, lm = tiny_pair(classes=[])
    lm.tokenizer_name = "default"  # names a loaded model whose weights it did not learn from
    with pytest.raises(vtok.VtokError, match="tokenizer"):
        create_app({"default": tok}, lm=lm)


def test_cli_serve_with_an_lm_folder(monkeypatch, capsys, tmp_path):
    import vtok.lm
    import vtok.serve.server as server

    tiny, lm = tiny_pair(["cat", "dog"])
    tiny.save_pretrained(tmp_path / "tiny")
    lm.tokenizer_name = str(tmp_path / "tiny")
    vtok.lm.save_pretrained(lm, tmp_path / "my_lm")
    seen = {}
    monkeypatch.setattr(server, "run", lambda app, host, port, limits: seen.update(app=app))
    monkeypatch.setattr("vtok.serve.run", server.run)
    rc, out, err = run_cli(["serve", "--model", tmp_path / "tiny", "--lm", tmp_path / "my_lm"], capsys)
    assert rc == 0, err
    with TestClient(seen["app"]) as c:
        assert c.get("/api/models").json()["lm"]["classes"] == ["cat", "dog"]
        assert len(c.post("/api/generate", json={"n": 1, "class_label": "cat"}).json()["samples"]) == 1
    rc, _, err = run_cli(["serve", "--lm", tmp_path / "nothing_here"], capsys)
    assert rc == 2 and err.count("\n") == 1


# -- the command ----------------------------------------------------------------------------


def test_cli_serve_builds_the_app_and_binds_to_loopback(monkeypatch, capsys, tiny_model_dir):
    import vtok.serve.server as server

    seen = {}
    monkeypatch.setattr(
        server, "run", lambda app, host, port, limits: seen.update(app=app, host=host, port=port, limits=limits)
    )
    monkeypatch.setattr("vtok.serve.run", server.run)
    rc, out, err = run_cli(["serve", "--model", str(tiny_model_dir), "--port", "8123", "--queue", "3"], capsys)
    assert rc == 0, err
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123 and seen["limits"].queue == 3
    assert "http://127.0.0.1:8123/" in out and tiny_model_dir.name in out
    with TestClient(seen["app"]) as c:
        assert c.get("/api/models").json()["models"][0]["name"] == tiny_model_dir.name  # a name, never a path
    rc, _, err = run_cli(["serve", "--host", "0.0.0.0", "--model", str(tiny_model_dir)], capsys)
    assert rc == 0 and "anyone who can reach" in err


def test_cli_serve_refuses_two_models_of_one_name(tmp_path, capsys, tiny_model_dir):
    import shutil

    twin = tmp_path / "elsewhere" / tiny_model_dir.name
    shutil.copytree(tiny_model_dir, twin)
    rc, _, err = run_cli(["serve", "--model", str(tiny_model_dir), "--model", str(twin)], capsys)
    assert rc == 2 and "rename" in err and err.count("\n") == 1


def test_cli_serve_without_the_extra_says_what_to_install(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "vtok.serve" or m.startswith("vtok.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    rc, _, err = run_cli(["serve"], capsys)
    assert rc == 2 and "pip install 'vtok[serve]'" in err and err.count("\n") == 1


def test_a_bug_is_a_json_500(tok, monkeypatch):
    import vtok.serve.work as work

    monkeypatch.setattr(work, "encode", lambda *a: 1 / 0)
    with TestClient(create_app({"default": tok}), raise_server_exceptions=False) as c:
        assert "ZeroDivisionError" in assert_error(
            c.post("/api/encode", content=png_bytes(Image.new("RGB", (8, 8)))), 500
        )


def test_works_without_the_lifespan(tok):
    """An ASGI server that never runs the lifespan (or a client outside `with`) still gets a gate."""
    assert TestClient(create_app({"default": tok})).get("/api/health").json()["running"] == 0


def test_serve_declares_its_public_names():
    import types

    import vtok.serve

    public = {
        n for n in dir(vtok.serve) if not n.startswith("_") and not isinstance(getattr(vtok.serve, n), types.ModuleType)
    }
    assert set(vtok.serve.__all__) == public


def test_limits_are_checked():
    with pytest.raises(vtok.ConfigError, match="workers"):
        Limits(workers=0)
    with pytest.raises(vtok.ConfigError, match="queue"):
        Limits(queue=-1)
    with pytest.raises(vtok.ConfigError, match="work_timeout_s"):
        Limits(work_timeout_s=0)


def test_json_errors_are_json(client):
    response = client.post("/api/decode", json={"tokens": [1.5]})
    assert json.loads(response.text) == response.json()
