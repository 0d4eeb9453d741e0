"""Archive-scale search: exact top-10 over packed 64-bit codes by the multi-index (search.py's mih) against faiss's
exact linear scan (IndexBinaryFlat) and the approximate IndexBinaryIVF / IndexBinaryHNSW (recall@10 beside them),
one query alone and in batches, with build time, memory and the start-up of an index folder of that size.

Two kinds of codes: class-structured like trained hash codes (4096 cluster centres, every bit flipped with
probability 1/8) and uniform random (the case least kind to the multi-index). Every multi-index answer is
compared with the flat index's (distances and rows, ties by row). Prints measured figures, no pass/fail.

    python benchmarks/bench_search.py                                     # 1M, 10M, 100M (about 25 min)
    python benchmarks/bench_search.py --sizes 100000 --kinds uniform --float-size 0 --startup-max 0   # quick check
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.search.mih import MultiIndex, code_words, exact_topk  # noqa: E402
from utils.search.segments import faiss_threads, make_binary_index, order_by_distance_then_row  # noqa: E402


def clustered_codes(n: int, n_bytes: int, centres: np.ndarray, rng: np.random.Generator,
                    chunk: int = 1 << 22) -> np.ndarray:
    """n packed codes: a random centre each, with every bit flipped with probability 1/8."""
    out = np.empty((n, n_bytes), np.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        flips = rng.integers(0, 256, (m, n_bytes), dtype=np.uint8)
        flips &= rng.integers(0, 256, (m, n_bytes), dtype=np.uint8)
        flips &= rng.integers(0, 256, (m, n_bytes), dtype=np.uint8)
        out[start:start + m] = centres[rng.integers(0, len(centres), m)] ^ flips
    return out


def make_codes(kind: str, n: int, n_bytes: int, rng, centres) -> np.ndarray:
    if kind == "uniform":
        out = np.empty((n, n_bytes), np.uint8)
        for start in range(0, n, 1 << 22):
            out[start:start + (1 << 22)] = rng.integers(0, 256, (min(1 << 22, n - start), n_bytes), dtype=np.uint8)
        return out
    return clustered_codes(n, n_bytes, centres, rng)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def alone_ms(search_one, queries: np.ndarray, n: int) -> float:
    """Median milliseconds of one query searched alone."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        search_one(queries[i:i + 1])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def recall_at_k(rows: np.ndarray, codes: np.ndarray, queries: np.ndarray, kth: np.ndarray) -> float:
    """Share of returned items within the exact k-th distance (ties counted as found)."""
    true_d = np.bitwise_count(codes[np.maximum(rows, 0)] ^ queries[:, None, :]).sum(axis=2)
    return float(((true_d <= kth) & (rows >= 0)).sum() / rows.size)


def bench_size(n: int, kind: str, args, rng, centres) -> dict:
    import faiss

    n_bytes = args.bits // 8
    gen, codes = timed(lambda: make_codes(kind, n, n_bytes, rng, centres))
    queries = make_codes(kind, args.queries, n_bytes, rng, centres)
    print(f"\n== {n:,} {kind} codes of {args.bits} bits ({n * n_bytes / 2**20:,.0f} MiB; generated in {gen:.1f} s)",
          flush=True)
    row = {"n": n, "kind": kind, "codes_mib": n * n_bytes / 2**20}
    batch = queries[: args.batch if n < 50_000_000 else args.batch // 10]

    build, (flat, _) = timed(lambda: make_binary_index(codes, "flat"))
    with faiss_threads(args.threads):
        t, (d_flat, i_flat) = timed(lambda: flat.search(batch, args.k))
    d_flat, i_flat = order_by_distance_then_row(d_flat, i_flat)
    with faiss_threads(1):  # one query alone runs on one thread, as search.py does
        single = alone_ms(lambda q: flat.search(q, args.k), queries, args.single if n < 50_000_000 else 20)
    row["flat"] = {"build_s": build, "alone_ms": single, "batch_ms": 1000 * t / len(batch), "memory_x": 1.0}
    print(f"flat (faiss IndexBinaryFlat, exact): {single:.2f} ms alone, {row['flat']['batch_ms']:.3f} ms/query in a "
          f"batch of {len(batch)} ({args.threads} threads); build {build:.1f} s", flush=True)
    flat = None  # its memory back before the next index

    words, q_words = code_words(codes), code_words(queries)
    build, tables = timed(lambda: MultiIndex.build(words, args.bits))
    exact_topk(words, q_words[:2], args.k, tables, threads=1)  # compiled before the clock runs
    single = alone_ms(lambda q: exact_topk(words, code_words(q), args.k, tables, threads=1), queries, args.single)
    t, (d_mih, i_mih) = timed(lambda: exact_topk(words, code_words(batch), args.k, tables, threads=args.threads))
    same = np.array_equal(d_mih, d_flat) and np.array_equal(i_mih, i_flat)
    memory = (codes.nbytes + tables.nbytes()) / codes.nbytes
    row["mih"] = {"build_s": build, "alone_ms": single, "batch_ms": 1000 * t / len(batch), "memory_x": memory,
                  "same_as_flat": bool(same), **tables.to_json()}
    print(f"mih (exact, {len(tables.lengths)} substrings of {tables.lengths.tolist()} bits): {single:.3f} ms alone, "
          f"{row['mih']['batch_ms']:.3f} ms/query batched; build {build:.1f} s; memory {memory:.2f}x the codes; "
          f"same rows and distances as flat for all {len(batch)} queries: {same}; "
          f"flat / mih alone: {row['flat']['alone_ms'] / single:.2f}x", flush=True)
    tables = None

    kth = d_flat[:, -1:]
    if n <= args.ivf_max:
        nlist = max(1, min(int(4 * np.sqrt(n)), args.train_size // 39))
        train = codes[rng.choice(n, min(n, args.train_size), replace=False)]

        def build_ivf():
            ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(args.bits), args.bits, nlist)
            ivf.train(train)
            ivf.add(codes)
            return ivf

        with faiss_threads(args.threads):
            build, ivf = timed(build_ivf)
        row["ivf"] = []
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            with faiss_threads(1):
                single = alone_ms(lambda q: ivf.search(q, args.k), queries, args.single)
            with faiss_threads(args.threads):
                t, (_, i) = timed(lambda: ivf.search(batch, args.k))
            recall = recall_at_k(i, codes, batch, kth)
            row["ivf"].append({"nprobe": nprobe, "alone_ms": single, "batch_ms": 1000 * t / len(batch),
                               "recall": recall, "build_s": build})
            print(f"ivf (approximate, nlist {nlist}, nprobe {nprobe}): {single:.3f} ms alone, "
                  f"{1000 * t / len(batch):.3f} ms/query batched, recall@{args.k} {recall:.3f}; build {build:.1f} s",
                  flush=True)
        ivf = None
    if n <= args.hnsw_max:
        def build_hnsw():
            hnsw = faiss.IndexBinaryHNSW(args.bits, 16)
            hnsw.add(codes)
            return hnsw

        with faiss_threads(args.threads):
            build, hnsw = timed(build_hnsw)
        hnsw.hnsw.efSearch = 64
        with faiss_threads(1):
            single = alone_ms(lambda q: hnsw.search(q, args.k), queries, args.single)
        with faiss_threads(args.threads):
            t, (_, i) = timed(lambda: hnsw.search(batch, args.k))
        recall = recall_at_k(i, codes, batch, kth)
        row["hnsw"] = {"alone_ms": single, "batch_ms": 1000 * t / len(batch), "recall": recall, "build_s": build}
        print(f"hnsw (approximate, M 16, efSearch 64): {single:.3f} ms alone, {1000 * t / len(batch):.3f} ms/query "
              f"batched, recall@{args.k} {recall:.3f}; build {build:.1f} s", flush=True)
        hnsw = None
    if kind == args.startup_kind and n <= args.startup_max:
        row["startup"] = bench_startup(codes, args)
    return row


def bench_startup(codes: np.ndarray, args) -> dict:
    """Index folders of these codes, then the wall time of a fresh ``search.py query --row`` and of
    ``SearchService`` opening them, each in a new process: metadata as a codes file's index keeps it (a
    memory-mapped column of class codes), and, up to --sqlite-max rows, as a run's index keeps it (a SQLite row
    per image with file name, class, split, path and caption)."""
    from utils.search import writer
    from utils.search.codes_index import write_label_columns
    from utils.search.segments import write_segment

    n = len(codes)
    out_rows = {}
    for kind in ("columns", "sqlite"):
        if kind == "sqlite" and n > args.sqlite_max:
            continue
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            out = Path(tmp)
            start = time.perf_counter()
            segments = {"images": [write_segment(out, "images", 0, 0, codes, None, "auto")],
                        "captions": [write_segment(out, "captions", 0, 0, codes[:1000], None, "auto")]}
            counts = {"images": n, "captions": 1000}
            if kind == "columns":
                metadata = write_label_columns(out, np.arange(n, dtype=np.int64) % 21, counts)
            else:
                metadata = writer.write_fresh_metadata(out, {m: run_like_rows(m, counts[m]) for m in counts})
            manifest = {"bit": args.bits, "run": None, "checkpoint": None, "encoders": {"image": None, "text": None},
                        "source": {"codes": "benchmark"}, "dataset": {"image_dir": "/archive"},
                        "segments": segments, "metadata": metadata,
                        "removed": {"images": {"file": None, "rows": 0}, "captions": {"file": None, "rows": 0}}}
            writer.commit(out, manifest)
            build = time.perf_counter() - start
            size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
            query = [sys.executable, str(ROOT / "search.py"), "query", "--index", str(out), "--row", "5",
                     "--modality", "image", "--class", "3", "--quiet"]
            serve = [sys.executable, "-c", "import sys, time; t = time.perf_counter(); "
                     "from utils.search.server import SearchService; "
                     "s = SearchService(sys.argv[1], 'cpu', preload='background'); "
                     "print(time.perf_counter() - t)", str(out)]
            times = {}
            for name, cmd in (("query", query[:-3] + ["--quiet"]), ("query_class", query), ("serve_open", serve)):
                runs = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                    if done.returncode:
                        raise SystemExit(done.stderr)
                    runs.append(float(done.stdout.strip()) if name == "serve_open" else time.perf_counter() - t0)
                times[name] = min(runs)
            print(f"index folder of {n:,} rows, metadata as {kind}: written in {build:.1f} s ({size:,.0f} MiB); "
                  f"search.py query --row, whole command: {times['query']:.2f} s, with --class: "
                  f"{times['query_class']:.2f} s; SearchService opening it: {times['serve_open']:.3f} s", flush=True)
            out_rows[kind] = {"write_s": build, "folder_mib": size, **times}
    out_rows["python_s"] = min(timed(lambda: subprocess.run([sys.executable, "-c", "pass"]))[0] for _ in range(3))
    return out_rows


def run_like_rows(modality: str, n: int):
    """Rows as a run's index writes them (a file name, a class, a split, a path and a caption each)."""
    for i in range(n):
        base = {"row": i, "filename": f"scene_{i:09d}.tif", "class": str(i % 21), "class_code": i % 21,
                "split": "db", "path": f"/archive/scene_{i:09d}.tif"}
        if modality == "images":
            yield {**base, "captions": ["a caption of this scene"]}
        else:
            yield {**base, "image_row": i, "sentence": 0, "caption": "a caption of this scene", "split_caption": True}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--kinds", nargs="+", choices=("classes", "uniform"), default=["classes", "uniform"])
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000, help="queries generated (a batch of --batch of them)")
    parser.add_argument("--batch", type=int, default=1000, help="queries of a batch (a tenth of it from 50M rows)")
    parser.add_argument("--single", type=int, default=100, help="queries timed one by one (median)")
    parser.add_argument("--threads", type=int, default=2, help="threads of batched searches")
    parser.add_argument("--centres", type=int, default=4096, help="clusters of the class-structured codes")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--train-size", type=int, default=50_000, help="codes the IVF quantizer is trained on")
    parser.add_argument("--ivf-max", type=int, default=10_000_000, help="largest size with an IVF index")
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="largest size with an HNSW index")
    parser.add_argument("--startup-kind", default="classes", help="codes kind whose index folder is timed")
    parser.add_argument("--startup-max", type=int, default=100_000_000, help="largest size whose start-up is timed")
    parser.add_argument("--sqlite-max", type=int, default=10_000_000,
                        help="largest size whose start-up is also timed with a SQLite row per image")
    parser.add_argument("--tmp", default=None, help="folder for the index folders (default: the system's)")
    args = parser.parse_args()
    if args.bits % 8:
        parser.error("--bits must be a multiple of 8")
    import faiss

    print(f"faiss {faiss.__version__}, numpy {np.__version__}; exact top-{args.k}; one query alone on 1 thread, "
          f"batches on {args.threads}", flush=True)
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 256, (args.centres, args.bits // 8), dtype=np.uint8)
    rows = [bench_size(n, kind, args, rng, centres) for n in args.sizes for kind in args.kinds]

    print("\n== summary (ms per query; memory as a multiple of the packed codes)")
    print("| rows | codes | flat alone | mih alone | flat batched | mih batched | mih build s | mih memory "
          "| same as flat | ivf nprobe 32 alone / recall | hnsw alone / recall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ivf = next((v for v in r.get("ivf", []) if v["nprobe"] == 32), None)
        ivf_s = f"{ivf['alone_ms']:.3f} / {ivf['recall']:.3f}" if ivf else "-"
        hnsw = r.get("hnsw")
        hnsw_s = f"{hnsw['alone_ms']:.3f} / {hnsw['recall']:.3f}" if hnsw else "-"
        print(f"| {r['n']:,} | {r['kind']} | {r['flat']['alone_ms']:.2f} | {r['mih']['alone_ms']:.3f} | "
              f"{r['flat']['batch_ms']:.3f} | {r['mih']['batch_ms']:.3f} | {r['mih']['build_s']:.1f} | "
              f"{r['mih']['memory_x']:.2f}x | {r['mih']['same_as_flat']} | {ivf_s} | {hnsw_s} |")
    for r in rows:
        for kind in ("columns", "sqlite"):
            s = r.get("startup", {}).get(kind)
            if s:
                print(f"start-up at {r['n']:,} rows, metadata as {kind}: search.py query --row {s['query']:.2f} s "
                      f"whole command ({s['query_class']:.2f} s with --class; bare Python "
                      f"{r['startup']['python_s']:.2f} s), SearchService open {s['serve_open']:.3f} s; folder "
                      f"{s['folder_mib']:,.0f} MiB written in {s['write_s']:.0f} s")

if __name__ == "__main__":
    main()
