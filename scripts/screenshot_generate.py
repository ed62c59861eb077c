"""Make docs/images/serve_generate.png: the page's generate panel with the shipped default LM.

    python scripts/screenshot_generate.py [--out docs/images/serve_generate.png]

Serves the default tokenizer and LM on 127.0.0.1 (as `vtok serve --lm default` does), opens the
page in Debian's headless Chromium through Playwright, samples 4 images with seed 3 and saves a
screenshot of the panel. (docs/images/serve.png comes from the browser test:
VTOK_SCREENSHOT=docs/images/serve.png pytest tests/test_serve_browser.py -k slider.)
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

import vtok
import vtok.lm
from vtok.serve import create_app

CHROMIUM = os.environ.get("VTOK_CHROMIUM", "/usr/bin/chromium")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/images/serve_generate.png"))
    args = ap.parse_args()
    app = create_app({"default": vtok.load("default")}, lm=vtok.lm.load("default"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("screenshot_generate: the server did not start within 30 s")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1180, "height": 900})
            page.goto(url)
            page.wait_for_selector("body[data-analysed='1']", timeout=60_000)
            page.fill("#gen-n", "4")
            page.fill("#gen-seed", "3")
            page.click("#generate-form button[type=submit]")
            page.wait_for_selector("#gen-strips .strip:nth-child(4)", timeout=60_000)
            page.locator("#generate-panel").screenshot(path=str(args.out))
            browser.close()
    finally:
        server.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
