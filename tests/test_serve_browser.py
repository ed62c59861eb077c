"""The page in a real browser: Debian's headless Chromium driven by Playwright, against a real
uvicorn server on 127.0.0.1. CI (.ci/run) installs Chromium and sets VTOK_REQUIRE_BROWSER=1, so
that a missing browser fails there; on a developer machine without it the test is skipped."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from vtok.demo import sample_images

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("VTOK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _missing(what: str) -> None:
    message = f"{what}; install it with: apt-get install chromium && pip install 'vtok[test,serve]'"
    if os.environ.get("VTOK_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def running(app) -> Iterator[str]:
    """`app` under a real uvicorn on a free port of 127.0.0.1; yields its URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        thread.join(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    try:
        from vtok.serve import create_app
    except ImportError as e:
        _missing(f"the serve extra is not installed ({e})")
    import vtok

    with running(create_app({"default": vtok.load("default")})) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _missing(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _stats(page) -> dict[str, str]:
    return {name: page.inner_text(f"#stat-{name}") for name in ("tokens", "bytes", "psnr", "ssim")}


def test_page_upload_slider_compare_screenshot(browser, server_url, tmp_path):
    photo = tmp_path / "upload.png"  # a photo that is not one of the samples: mirrored, cropped
    ImageOps.mirror(Image.open(sample_images()[0]).convert("RGB")).crop((40, 0, 440, 300)).save(photo)
    page = browser.new_page(viewport={"width": 1180, "height": 760})
    requests, problems = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    page.goto(server_url + "/")
    page.wait_for_selector("body[data-analysed='1'][data-state='ready']", timeout=30_000)  # the first sample
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector("body[data-analysed='2'][data-state='ready']", timeout=30_000)
    assert page.locator("#original").evaluate("img => img.naturalWidth") == 128
    before, picture_before = _stats(page), page.eval_on_selector("#recon", "c => c.toDataURL()")
    assert before["tokens"] == "16"

    page.fill("#k-slider", "64")
    after, picture_after = _stats(page), page.eval_on_selector("#recon", "c => c.toDataURL()")
    assert after["tokens"] == "64" and page.inner_text("#k-value") == "64"
    assert int(after["bytes"]) > int(before["bytes"])
    assert float(after["psnr"]) > float(before["psnr"]) and float(after["ssim"]) > float(before["ssim"])
    assert picture_after != picture_before

    page.focus("#k-slider")
    page.keyboard.press("ArrowLeft")
    assert page.inner_text("#stat-tokens") == "63"
    page.fill("#k-slider", "40")

    page.click("button[data-codec='webp']")
    from playwright.sync_api import expect

    expect(page.locator("#codec-caption")).to_have_text(re.compile(r"^WebP (q\d+|at)"), timeout=30_000)
    caption = page.inner_text("#codec-caption")
    assert "B," in caption or "cannot reach" in caption
    assert "Download .vtok (" in page.inner_text("#download")

    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "page.vtok"
    download.value.save_as(saved)
    assert saved.stat().st_size == int(page.inner_text("#stat-bytes"))

    # effort: the same photo again, its tokens searched; the status says so and the picture changes
    shown = page.eval_on_selector("#recon", "c => c.toDataURL()")
    page.select_option("#effort", "1")
    page.wait_for_selector("body[data-analysed='3'][data-state='ready']", timeout=60_000)
    assert "effort 1" in page.inner_text("#status")
    assert page.eval_on_selector("#recon", "c => c.toDataURL()") != shown
    expect(page.locator("#codec-caption")).to_have_text(re.compile(r"^WebP (q\d+|at)"), timeout=30_000)
    assert any("/api/equal-bytes" in url and "effort=1" in url for url in requests)
    with page.expect_download() as download:
        page.click("#download")
    assert any("/api/compress" in url and "effort=1" in url for url in requests)
    expect(page.locator("#status")).to_have_text(re.compile("^downloaded: "), timeout=30_000)

    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("VTOK_SCREENSHOT"):  # how docs/images/serve.png is made
        shutil.copy(shot, os.environ["VTOK_SCREENSHOT"])
    assert problems == []
    assert all(url.startswith((server_url, "data:", "blob:")) for url in requests), requests
    assert page.is_hidden("#generate-panel")  # no LM loaded
    page.close()


def test_page_shows_a_refusal_in_one_line(browser, server_url, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not a picture")
    page = browser.new_page()
    page.goto(server_url + "/")
    page.wait_for_selector("body[data-analysed='1']", timeout=30_000)
    page.set_input_files("#file-input", str(not_an_image))
    page.wait_for_selector("body[data-state='error']", timeout=30_000)
    assert "not an image" in page.inner_text("#status")
    page.close()


def test_generate_panel_with_an_lm(browser, tmp_path):
    import torch

    import vtok
    import vtok.lm
    from vtok.serve import create_app

    torch.manual_seed(0)
    tiny = vtok.create_tokenizer("ordered1d-tiny")  # 32 px, K = 8
    lm = vtok.lm.create_lm("lm-tiny", tiny.model.quantizer.symbol_alphabets(), tiny.num_tokens, 2).eval()
    lm.classes, lm.tokenizer_name = ["cat", "dog"], "tiny"
    with running(create_app({"tiny": tiny}, lm=lm)) as url:
        page = browser.new_page(viewport={"width": 1180, "height": 900})
        problems = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url + "/")
        page.wait_for_selector("body[data-analysed='1']", timeout=30_000)
        assert page.is_visible("#generate-panel")
        assert page.locator("#gen-class option").all_inner_texts() == ["cat", "dog"]
        page.fill("#gen-n", "2")
        page.select_option("#gen-class", label="dog")
        page.click("#generate-form button[type=submit]")
        page.wait_for_selector("#gen-strips .strip:nth-child(2)", timeout=30_000)
        strips = page.locator("#gen-strips .strip")
        assert strips.count() == 2
        assert strips.nth(0).locator("figcaption").all_inner_texts() == ["k=1", "k=2", "k=4", "k=8"]
        assert "generated 2 image(s) of 8 tokens" in page.inner_text("#status")
        page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)
        assert problems == []
        page.close()
