"""`vtok serve` under load, on 127.0.0.1 only: latency of the slider's request, a bounded run of
concurrent clients on mixed endpoints, and a burst past the queue limit.

    python benchmarks/serve_load.py [--clients 16] [--seconds 60] [--workers 1] [--queue 32]
                                    [--json benchmarks/results/serve_load.json]

Each phase starts its own server (`python -m vtok serve`) in a subprocess, so that the memory
measured is the server's alone (resident set, sampled every 0.2 s). Phases:
1. slider: the page's all-prefixes request (pixels=raw) for one 128x128 photo, one at a time:
   p50/p90 latency. Also the PNG form, for API clients.
2. load: `clients` threads for `seconds`, each sending requests back to back, mixed: all
   prefixes 30%, encode 20%, decode 20%, compress 10%, decompress 10%, models/health 10%.
   Requests/s, p50/p99 latency, status counts (5xx must be 0), server memory at start and peak.
3. overflow: a server with a queue of 4 and a burst of 4x more simultaneous requests than it
   holds: how many are answered, refused with 429 (and Retry-After), or 503; then one more
   request to show that it recovered.
Every loop is bounded in count and time, and the servers are stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from PIL import Image

from vtok.demo import sample_images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(workers: int, queue: int, threads: int | None = None):
    """A `vtok serve` subprocess on 127.0.0.1; yields (base URL, its psutil.Process)."""
    import os

    port = free_port()
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "vtok", "serve", "--port", str(port), "--workers", str(workers), "--queue", str(queue)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the server did not start within 120 s")
        yield url, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class MemoryWatch:
    """Peak resident memory of a process, sampled every 0.2 s in a thread."""

    def __init__(self, process: psutil.Process):
        self.process, self.peak, self._stop = process, 0, threading.Event()
        self.start_rss = process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"rss_start_mb": round(self.start_rss / 2**20, 1), "rss_peak_mb": round(self.peak / 2**20, 1)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def inputs() -> dict[str, bytes]:
    photo = Image.open(sample_images()[0]).convert("RGB")
    small, medium = io.BytesIO(), io.BytesIO()
    photo.resize((128, 128)).save(small, "PNG")
    photo.resize((256, 256)).save(medium, "JPEG", quality=90)
    return {"small": small.getvalue(), "medium": medium.getvalue()}


def slider_latency(url: str, image: bytes, repeats: int) -> dict:
    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for pixels in ("raw", "png"):
            client.post(f"/api/prefixes?pixels={pixels}", content=image).raise_for_status()  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                client.post(f"/api/prefixes?pixels={pixels}", content=image).raise_for_status()
                times.append(time.perf_counter() - start)
            out[pixels] = {
                "p50_ms": round(1000 * statistics.median(times), 1),
                "p90_ms": round(1000 * percentile(times, 0.9), 1),
            }
    return out


def load(url: str, process: psutil.Process, data: dict[str, bytes], clients: int, seconds: float) -> dict:
    with httpx.Client(base_url=url, timeout=60) as c:
        vtok_file = c.post("/api/compress?tokens=8", content=data["medium"]).content
        tokens = c.post("/api/encode?tokens=16", content=data["small"]).json()["tokens"]
    requests = [
        (30, "prefixes", lambda c: c.post("/api/prefixes?pixels=raw", content=data["small"])),
        (20, "encode", lambda c: c.post("/api/encode", content=data["small"])),
        (20, "decode", lambda c: c.post("/api/decode", json={"tokens": tokens})),
        (10, "compress", lambda c: c.post("/api/compress?tokens=8", content=data["medium"])),
        (10, "decompress", lambda c: c.post("/api/decompress", content=vtok_file)),
        (10, "models", lambda c: c.get("/api/models")),
    ]
    weights = [w for w, _, _ in requests]
    records: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    watch = MemoryWatch(process)
    deadline = time.monotonic() + seconds

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.monotonic() < deadline:
                _, name, send = rng.choices(requests, weights)[0]
                start = time.perf_counter()
                try:
                    status = send(c).status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all: counted apart
                with lock:
                    records.append((name, status, time.perf_counter() - start))

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    memory = watch.stop()
    latencies = [r[2] for r in records]
    statuses = Counter(r[1] for r in records)
    per_endpoint = {
        name: {
            "count": sum(1 for r in records if r[0] == name),
            "p50_ms": round(1000 * statistics.median([r[2] for r in records if r[0] == name] or [0]), 1),
        }
        for _, name, _ in requests
    }
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(records),
        "requests_per_s": round(len(records) / elapsed, 2),
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "no_answer": statuses.get(0, 0),
        "per_endpoint": per_endpoint,
        **memory,
    }


def overflow(url: str, process: psutil.Process, image: bytes, burst: int) -> dict:
    watch = MemoryWatch(process)
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    go = threading.Barrier(burst)

    def one() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            go.wait()
            r = c.post("/api/prefixes?pixels=raw", content=image)
            with lock:
                results.append((r.status_code, r.headers.get("retry-after")))

    threads = [threading.Thread(target=one) for _ in range(burst)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = httpx.post(url + "/api/prefixes?pixels=raw", content=image, timeout=60).status_code
    statuses = Counter(status for status, _ in results)
    return {
        "burst": burst,
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "retry_after_on_429": sorted({ra for status, ra in results if status == 429 and ra}),
        "status_of_next_request": after,
        **watch.stop(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--queue", type=int, default=32)
    p.add_argument("--repeats", type=int, default=30, help="sequential slider requests for the latency figure")
    p.add_argument("--slider-only", action="store_true", help="measure the slider's request only")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    data = inputs()
    result: dict = {"cpus": psutil.cpu_count(), "workers": args.workers, "queue": args.queue}
    with server(args.workers, args.queue) as (url, process):
        result["load_average_before"] = [round(x, 2) for x in psutil.getloadavg()]
        result["slider"] = slider_latency(url, data["small"], args.repeats)
        print(f"slider (all 64 prefixes of a 128x128 photo, one at a time): {json.dumps(result['slider'])}", flush=True)
        print(f"load average before: {result['load_average_before']}", flush=True)
        if args.slider_only:
            return
        result["load"] = load(url, process, data, args.clients, args.seconds)
        print(f"load: {json.dumps(result['load'])}", flush=True)
    queue = 4
    with server(1, queue) as (url, process):
        result["overflow"] = overflow(url, process, data["small"], burst=4 * (1 + queue) * 2)
        result["overflow"]["queue"] = queue
        print(f"overflow (1 worker, queue {queue}): {json.dumps(result['overflow'])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if result["load"]["server_errors_5xx"] or result["load"]["no_answer"]:
        sys.exit("server errors or unanswered requests under load")


if __name__ == "__main__":
    main()
