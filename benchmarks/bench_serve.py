"""search.py serve under load: concurrent HTTP clients on a 1M-code synthetic index, over loopback only.

The index is a real one (its checkpoint, text and image encoders answer the text and image queries) whose
image modality is inflated to ``--size`` codes: the real codes with 1/8 of their bits flipped, each new row
pointing at a real row's image file and class. The server runs as ``python search.py serve`` in a process of
its own; ``--clients`` threads, each with a kept-alive connection, send a bounded number of requests of each
kind (and stop early after ``--max-seconds``), and requests/s and the p50 / p99 latency are printed.
Measured numbers, no pass/fail.

    python main.py --dataset demo && python search.py index --run checkpoints/demo_32_test_default
    python benchmarks/bench_serve.py --index checkpoints/demo_32_test_default/index
    python benchmarks/bench_serve.py --size 100000 --requests 100 --clients 4      # quick look
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.search.archive import MANIFEST_NAME  # noqa: E402

SENTENCES = ["a river flows through green fields", "many cars are parked in a parking lot", "a beach next to the sea",
             "dense green forest", "houses with red roofs along a street", "farmland divided into stripes",
             "white waves on a sandy beach", "a bridge over a river"]


def inflate(source: Path, out: Path, size: int, seed: int = 0) -> dict:
    """An index folder at ``out``: ``source``'s captions as they are, its images grown to ``size`` rows (a flat
    segment, as the release before the multi-index had)."""
    from utils.search import writer
    from utils.search.archive import SearchIndex
    from utils.search.segments import write_segment

    rng = np.random.default_rng(seed)
    index = SearchIndex.open(source)
    manifest = json.loads((source / MANIFEST_NAME).read_text())
    out.mkdir(parents=True, exist_ok=True)
    for record in manifest["segments"]["captions"]:
        for name in record["files"].values():
            shutil.copyfile(source / name, out / name)
    codes = np.asarray(index.codes["images"])
    meta = source_rows(source, "images")
    n = len(codes)
    parents = np.concatenate([np.arange(n), rng.integers(0, n, size - n)]) if size > n else np.arange(size)
    flips = rng.integers(0, 256, (size, codes.shape[1]), dtype=np.uint8)
    flips &= rng.integers(0, 256, flips.shape, dtype=np.uint8)
    flips &= rng.integers(0, 256, flips.shape, dtype=np.uint8)  # each bit flipped with probability 1/8
    flips[:min(n, size)] = 0  # the real rows keep their codes
    new_codes = codes[parents] ^ flips
    signs = np.unpackbits(new_codes, axis=1)[:, :manifest["bit"]].astype(np.float16) * 2 - 1
    outputs = signs * rng.uniform(0.2, 1.0, signs.shape).astype(np.float16)

    def image_rows():
        for row, parent in enumerate(parents.tolist()):
            m = meta[parent]
            yield {"row": row, "filename": m["filename"] if row < n else f"synthetic/{row:07d}.png",
                   "class": m["class"], "split": m["split"] if row < n else "db", "path": m["path"],
                   "captions": m["captions"][:1]}

    manifest["segments"] = {"images": [write_segment(out, "images", 0, 0, new_codes, outputs, "flat")],
                            "captions": manifest["segments"]["captions"]}
    manifest["metadata"] = writer.write_fresh_metadata(out, {"images": image_rows(),
                                                             "captions": source_rows(source, "captions")})
    manifest["removed"] = {m: {"file": None, "rows": 0} for m in ("images", "captions")}
    manifest["synthetic"] = f"images inflated from {n} to {size} rows by benchmarks/bench_serve.py"
    return writer.commit(out, manifest)


def source_rows(index_dir: Path, modality: str) -> list[dict]:
    from utils.search.archive import SearchIndex

    index = SearchIndex.open(index_dir)
    return [index.metadata[modality][r] for r in range(index.size(modality))]


class Server:
    """python search.py serve in a process of its own, on a free loopback port."""

    def __init__(self, index: Path, device: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        command = [sys.executable, "search.py", "serve", "--index", str(index), "--port", str(self.port),
                   "--device", device]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.loaded = self.proc.stdout.readline().strip()
        if not self.loaded.startswith("loaded"):
            self.stop()
            raise SystemExit(f"the server did not start: {self.loaded}")
        self.proc.stdout.readline()
        deadline = time.monotonic() + 60
        while True:  # listening a moment after it says so
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5):
                    break
            except ConnectionRefusedError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit("the server did not start listening") from None
                time.sleep(0.1)
        self.listening = time.monotonic()
        while True:  # the models load in the background: measured once they are ready, as a long-running server is
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/health", timeout=30) as answer:
                state = json.loads(answer.read())["models"]["state"]
            if state == "ready" or state.startswith("failed") or time.monotonic() > deadline + 300:
                break
            time.sleep(0.2)
        self.models_seconds = time.monotonic() - self.listening

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def drive(port: int, make_request, n: int, clients: int, max_seconds: float) -> dict:
    """``n`` requests from ``clients`` threads (kept-alive connections); stops issuing after ``max_seconds``."""
    lock, latencies, errors = threading.Lock(), [], []
    counter = iter(range(n))
    deadline = time.perf_counter() + max_seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            method, path, body, headers = make_request(i)
            start = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                answer = conn.getresponse()
                data, status = answer.read(), answer.status
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                data, status = repr(err).encode(), 0
            took = time.perf_counter() - start
            with lock:
                latencies.append(took)
                if status != 200:
                    errors.append(data[:200])
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(ms), "errors": len(errors), "first_error": errors[0] if errors else None,
            "per_s": len(ms) / wall, "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99": float(np.percentile(ms, 99)) if len(ms) else float("nan"), "wall": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="checkpoints/demo_32_test_default/index",
                        help="a real index whose models answer text and image queries (default: %(default)s)")
    parser.add_argument("--size", type=int, default=1_000_000, help="image codes of the served index (default: 1M)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=400, help="requests per kind, at most (default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=60,
                        help="per kind: no new request after this (default: %(default)s)")
    parser.add_argument("--k", type=int, default=20, help="results per query (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="the server's device (default: %(default)s)")
    parser.add_argument("--work-dir", default=None,
                        help="where the inflated index is written (default: a temporary folder)")
    args = parser.parse_args()
    source = Path(args.index)
    if not (source / MANIFEST_NAME).is_file():
        raise SystemExit(f"no index at {source}; build the demo's: python main.py --dataset demo && "
                         f"python search.py index --run checkpoints/demo_32_test_default")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        start = time.perf_counter()
        manifest = inflate(source, work / "index", args.size)
        print(f"index: {args.size:,} image codes of {manifest['bit']} bits (from {source}), written in "
              f"{time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        server = Server(work / "index", args.device)
        print(f"server: {server.loaded} (process start to listening: "
              f"{time.perf_counter() - start - server.models_seconds:.1f} s; the models then ready after "
              f"{server.models_seconds:.1f} s more)")
        try:
            meta = source_rows(source, "images")
            images = [Path(m["path"]).read_bytes() for m in meta[:16] if m.get("path") and Path(m["path"]).is_file()]
            a_class = meta[0]["class"]
            rng = np.random.default_rng(1)
            rows = rng.integers(0, args.size, args.requests)
            octet = {"Content-Type": "application/octet-stream"}

            def get(**params):
                return "GET", "/api/search?" + urllib.parse.urlencode({"k": args.k, **params}), None, {}

            kinds = {
                "row": lambda i: get(row=int(rows[i]), modality="image"),
                "row + class filter": lambda i: get(row=int(rows[i]), modality="image", **{"class": a_class}),
                "text": lambda i: get(text=f"{SENTENCES[i % len(SENTENCES)]} {i}"),  # no two sentences alike
                "image upload": lambda i: ("POST", f"/api/search?k={args.k}", images[i % len(images)], octet),
                "thumbnail": lambda i: ("GET", f"/api/thumbnail/{int(rows[i])}", None, {}),
            }
            drive(server.port, kinds["row"], 20, 2, 30)  # warm-up
            print(f"\n{args.clients} concurrent clients, at most {args.requests} requests per kind, k={args.k}, "
                  f"loopback; {os.cpu_count()} CPUs shared with whatever else runs\n")
            print(f"{'kind':<20} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
            for name, make in kinds.items():
                if name == "image upload" and not images:
                    continue
                r = drive(server.port, make, args.requests, args.clients, args.max_seconds)
                print(f"{name:<20} {r['requests']:>8} {r['errors']:>6} {r['per_s']:>8.1f} {r['p50']:>8.1f} "
                      f"{r['p99']:>8.1f}")
                if r["first_error"]:
                    print(f"  first error: {r['first_error']!r}")
        finally:
            server.stop()
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
