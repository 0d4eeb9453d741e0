"""The numba kernels of the evaluation: serial kernels on Python threads (what the engine does) against the
same kernels compiled with numba's ``parallel=True`` over the query tiles (what it did before).

Both variants are built from the source of utils/retrieval/hamming_numba.py; the parallel one is that
source with ``prange`` over the tiles. Each is compiled cold (a fresh numba cache directory), and the
compile time of the three type variants the tests use is printed, then the best of --repeats runs of
one direction (--queries x --db class-structured codes, mAP@20/@10, P@K, PR curve) per variant,
the two variants alternating in one process.
Run alone: two timed processes at once on a 2-core machine slow each other down.
Usage: python benchmarks/bench_numba_threads.py [--queries 2000] [--db 300000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import importlib.util, json, sys, time
sys.path.insert(0, ROOT)
import numpy as np
from utils.retrieval import counting as metrics
from utils.retrieval.metrics import retrieval_metrics

spec = importlib.util.spec_from_file_location("hamming_numba_parallel", SOURCE)
parallel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(parallel)
serial, query_ranges = metrics._numba_module(), metrics._query_ranges
VARIANTS = {
    "threads": (lambda: serial, query_ranges),
    "prange": (lambda: parallel, lambda n_q, threads, tile=8: [(0, n_q)]),  # one call: prange shares the tiles
}

def use(variant):
    metrics._numba_module, metrics._query_ranges = VARIANTS[variant]

rng = np.random.default_rng(0)
def codes(n_q, n_db, bits, multi):
    centres = np.where(rng.random((100, bits)) > 0.5, 1, -1).astype(np.int8)
    ql, dl = rng.integers(0, 100, n_q), rng.integers(0, 100, n_db)
    q, d = centres[ql].copy(), centres[dl].copy()
    q[rng.random(q.shape) < 0.15] *= -1
    d[rng.random(d.shape) < 0.2] *= -1
    if multi:
        ql, dl = np.eye(64, dtype=np.int8)[ql % 64], np.eye(64, dtype=np.int8)[dl % 64]
        dl[rng.random(dl.shape) < 0.02] = 1  # some items carry extra labels: label bit-sets, not classes
    return q, d, ql, dl

out = {}
for name, bits, multi in (("64 bits, classes", 64, False), ("128 bits, classes", 128, False),
                          ("64 bits, 64 labels", 64, True)):
    small, data = codes(20, 100, bits, multi), codes(N_Q, N_DB, bits, multi)
    row = {}
    for variant in VARIANTS:
        use(variant)
        t = time.perf_counter()
        retrieval_metrics(*small, kernel="numba")
        row[variant + " compile"] = time.perf_counter() - t
    for variant in VARIANTS:
        row[variant] = []
    for _ in range(REPEATS):  # alternating, so that a change in the machine's speed hits both alike
        for variant in VARIANTS:
            use(variant)
            t = time.perf_counter()
            result = retrieval_metrics(*data, kernel="numba")
            row[variant].append(time.perf_counter() - t)
            row.setdefault(variant + " map@20", result["map@20"])
    out[name] = row
print(json.dumps(out))
"""


def parallel_source(serial: str) -> str:
    """hamming_numba.py as it was: prange over the tiles, parallel=True."""
    text = serial.replace("from numba import njit, types", "from numba import njit, prange, types")
    text = text.replace("@njit(nogil=True, cache=True)", "@njit(parallel=True, nogil=True)")
    text = text.replace("for t in range(", "for t in prange(")
    assert text.count("prange(") == 2 and text.count("parallel=True, nogil") == 2, "hamming_numba.py changed shape"
    return text


def run_child(args, source: Path) -> dict:
    code = f"ROOT, SOURCE = {str(ROOT)!r}, {str(source)!r}\n"
    code += f"N_Q, N_DB, REPEATS = {args.queries}, {args.db}, {args.repeats}\n" + CHILD
    with tempfile.TemporaryDirectory() as cache:  # cold: both variants compile
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--db", type=int, default=300000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "hamming_numba_parallel.py"
        source.write_text(parallel_source((ROOT / "utils/retrieval/hamming_numba.py").read_text()))
        rows = run_child(args, source)
    print(f"{os.cpu_count()} CPUs; one direction, {args.queries} x {args.db} codes; runs alternate, best and median of "
          f"{args.repeats}")
    print(f"{'':20s} {'compile threads':>16s} {'compile prange':>15s} {'run threads':>16s} {'run prange':>16s} "
          f"{'prange/threads':>15s}")
    for name, row in rows.items():
        assert row["threads map@20"] == row["prange map@20"], name
        t, p = sorted(row["threads"]), sorted(row["prange"])
        mt, mp = t[len(t) // 2], p[len(p) // 2]
        print(f"{name:20s} {row['threads compile']:15.2f}s {row['prange compile']:14.2f}s {t[0]:7.3f}/{mt:.3f}s "
              f"{p[0]:7.3f}/{mp:.3f}s {mp / mt:15.2f}")
    total_t = sum(row["threads compile"] for row in rows.values())
    total_p = sum(row["prange compile"] for row in rows.values())
    print(f"compile, three variants: threads {total_t:.1f} s, prange {total_p:.1f} s (ratio {total_p / total_t:.2f})")

if __name__ == "__main__":
    main()
