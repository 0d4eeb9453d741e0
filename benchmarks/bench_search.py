"""Archive-scale search speed: exact top-10 over packed 64-bit codes (faiss IndexBinaryFlat, as search.py),
against numpy brute force on the same codes and against float cosine search over 512-d features
(faiss IndexFlatIP and numpy), plus the sub-linear IndexBinaryIVF's speed and recall@10.

Codes are synthetic but clustered like hash codes (cluster centres with 1/8 of the bits flipped), so
that an inverted-file index has structure to use. Prints measured figures, no pass/fail.

    python benchmarks/bench_search.py                      # 1M and 10M codes, 2 threads (a few minutes)
    python benchmarks/bench_search.py --sizes 100000 --float-size 50000 --nlist 256   # quick check
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.search.segments import (  # noqa: E402
    faiss_threads,
    make_binary_index,  # noqa: E402
    order_by_distance_then_row,
)


def clustered_codes(n: int, n_bytes: int, centres: np.ndarray, rng: np.random.Generator,
                    chunk: int = 1 << 20) -> np.ndarray:
    """n packed codes: a random centre each, with every bit flipped with probability 1/8."""
    out = np.empty((n, n_bytes), np.uint8)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        flips = rng.integers(0, 256, (m, n_bytes), dtype=np.uint8)
        flips &= rng.integers(0, 256, (m, n_bytes), dtype=np.uint8)
        flips &= rng.integers(0, 256, (m, n_bytes), dtype=np.uint8)
        out[start:start + m] = centres[rng.integers(0, len(centres), m)] ^ flips
    return out


def timed(fn, repeat: int = 1):
    """(best wall time of ``repeat`` runs in seconds, last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def single_query_ms(search_one, queries: np.ndarray, n: int) -> float:
    """Median milliseconds of one query searched alone."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        search_one(queries[i:i + 1])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def numpy_hamming_topk(codes64: np.ndarray, query64: np.ndarray, k: int) -> np.ndarray:
    """Brute force in numpy: popcount of XOR over uint64 words, then the k smallest by (distance, row)."""
    d = np.bitwise_count(codes64 ^ query64).sum(axis=1, dtype=np.int32)
    kth = np.partition(d, k - 1)[k - 1] if k < len(d) else d.max()
    candidates = np.flatnonzero(d <= kth)
    order = np.lexsort((candidates, d[candidates]))[:k]
    return candidates[order]


def bench_codes(n: int, args, rng) -> dict:
    import faiss

    n_bytes = args.bits // 8
    centres = rng.integers(0, 256, (args.centres, n_bytes), dtype=np.uint8)
    start = time.perf_counter()
    codes = clustered_codes(n, n_bytes, centres, rng)
    queries = clustered_codes(args.queries, n_bytes, centres, rng)
    print(f"\n== {n:,} codes of {args.bits} bits (generated in {time.perf_counter() - start:.1f} s)")
    row = {"n": n}

    index, _ = make_binary_index(codes, "flat")
    t_batch, (d_exact, i_exact) = timed(lambda: index.search(queries, args.k), args.repeat)
    d_exact, i_exact = order_by_distance_then_row(d_exact, i_exact)
    row["flat_batch_ms"] = 1000 * t_batch / args.queries
    row["flat_single_ms_threads"] = single_query_ms(lambda q: index.search(q, args.k), queries, args.single)
    with faiss_threads(1):  # as search.py runs a single query
        row["flat_single_ms"] = single_query_ms(lambda q: index.search(q, args.k), queries, args.single)
    row["bytes_per_item"] = index.code_size
    print(f"IndexBinaryFlat exact top-{args.k}: {row['flat_batch_ms']:.3f} ms/query in batches of {args.queries}, "
          f"{row['flat_single_ms']:.2f} ms for one query alone on 1 thread as search.py "
          f"({row['flat_single_ms_threads']:.2f} ms on {args.threads}); {index.code_size} bytes per item "
          f"({n * index.code_size / 2**20:.0f} MiB)")

    if n <= args.numpy_max:
        codes64 = codes.view(np.uint64) if args.bits % 64 == 0 else codes
        q64 = queries.view(np.uint64) if args.bits % 64 == 0 else queries
        t_np = single_query_ms(lambda q: numpy_hamming_topk(codes64, q, args.k), q64, max(5, args.single // 5))
        same = all(np.array_equal(numpy_hamming_topk(codes64, q64[i:i + 1], args.k), i_exact[i]) for i in range(5))
        row["numpy_single_ms"] = t_np
        print(f"numpy brute force (bitwise_count, 1 thread): {t_np:.2f} ms for one query; faiss is "
              f"{t_np / row['flat_single_ms']:.1f}x faster alone; same top-{args.k} incl. tie order: {same}")

    nlist = args.nlist or max(1, min(int(4 * np.sqrt(n)), args.train_size // 39))  # >= 39 training codes per list
    train = codes[rng.choice(n, min(n, args.train_size), replace=False)]
    start = time.perf_counter()
    quantizer = faiss.IndexBinaryFlat(args.bits)
    ivf = faiss.IndexBinaryIVF(quantizer, args.bits, nlist)
    ivf.train(train)
    ivf.add(codes)
    build = time.perf_counter() - start
    kth = d_exact[:, -1:]
    print(f"IndexBinaryIVF nlist {nlist} (trained on {len(train):,} codes, built in {build:.1f} s):")
    row["ivf"] = []
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        t, (d, i) = timed(lambda: ivf.search(queries, args.k), args.repeat)
        with faiss_threads(1):
            single = single_query_ms(lambda q: ivf.search(q, args.k), queries, args.single)
        # recall@k against exact: a returned item counts if it is one of the exact top k, or ties with the k-th
        true_d = np.bitwise_count(codes[np.maximum(i, 0)] ^ queries[:, None, :]).sum(axis=2)
        tie_recall = float(((true_d <= kth) & (i >= 0)).sum() / i_exact.size)
        id_recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(i.tolist(), i_exact.tolist())]))
        row["ivf"].append({"nprobe": nprobe, "batch_ms": 1000 * t / args.queries, "single_ms": single,
                           "recall_ties": tie_recall, "recall_ids": id_recall})
        print(f"  nprobe {nprobe:4d}: {1000 * t / args.queries:.4f} ms/query batched, {single:.3f} ms alone, "
              f"recall@{args.k} {tie_recall:.3f} (ties counted; same rows as exact: {id_recall:.3f}), "
              f"speed-up alone {row['flat_single_ms'] / single:.1f}x")
    return row


def bench_float(n: int, args, rng) -> dict:
    import faiss

    dim = args.dim
    print(f"\n== float cosine search, {n:,} x {dim} float32 features ({n * dim * 4 / 2**20:.0f} MiB)")
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((args.queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(x)
    t_batch, _ = timed(lambda: index.search(q, args.k))
    with faiss_threads(1):  # one query alone, as the codes
        single = single_query_ms(lambda a: index.search(a, args.k), q, args.single)

    def numpy_topk(a):
        scores = a @ x.T
        return np.argpartition(-scores, args.k, axis=1)[:, :args.k]

    t_np_batch, _ = timed(lambda: [numpy_topk(q[s:s + 100]) for s in range(0, len(q), 100)])
    np_single = single_query_ms(numpy_topk, q, max(5, args.single // 5))
    row = {"n": n, "flatip_batch_ms": 1000 * t_batch / len(q), "flatip_single_ms": single,
           "numpy_batch_ms": 1000 * t_np_batch / len(q), "numpy_single_ms": np_single, "bytes_per_item": dim * 4}
    print(f"faiss IndexFlatIP: {row['flatip_batch_ms']:.3f} ms/query batched, {single:.2f} ms alone; numpy brute "
          f"force: {row['numpy_batch_ms']:.3f} ms/query batched, {np_single:.2f} ms alone; {dim * 4} bytes per item")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="archive sizes of the code benchmark")
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000, help="queries of a batch")
    parser.add_argument("--single", type=int, default=100, help="queries timed one by one (median)")
    parser.add_argument("--repeat", type=int, default=3, help="batched timings: best of")
    parser.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    parser.add_argument("--centres", type=int, default=4096, help="clusters of the synthetic codes")
    parser.add_argument("--nlist", type=int, default=None,
                        help="IVF lists (default 4 sqrt(n), at most train-size / 39)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--train-size", type=int, default=50_000, help="codes the IVF quantizer is trained on")
    parser.add_argument("--numpy-max", type=int, default=2_000_000,
                        help="largest size for the numpy Hamming brute force")
    parser.add_argument("--float-size", type=int, default=1_000_000,
                        help="items of the float cosine benchmark (0: skip)")
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    if args.bits % 8:
        parser.error("--bits must be a multiple of 8")

    import faiss

    faiss.omp_set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, {args.threads} threads, numpy {np.__version__}; exact top-{args.k}")
    rng = np.random.default_rng(0)
    rows = [bench_codes(n, args, rng) for n in args.sizes]
    floats = bench_float(args.float_size, args, rng) if args.float_size else None

    print("\n== summary")
    for r in rows:
        line = (f"{r['n']:>12,} codes: exact {r['flat_batch_ms']:.3f} ms/query batched, "
                f"{r['flat_single_ms']:.2f} ms alone")
        if floats:
            scale = r["n"] / floats["n"]
            line += (f"; float IndexFlatIP at this size (scaled from {floats['n']:,}): "
                     f"{floats['flatip_batch_ms'] * scale:.2f} ms/query batched, "
                     f"{floats['flatip_single_ms'] * scale:.1f} ms alone "
                     f"-> codes {floats['flatip_batch_ms'] * scale / r['flat_batch_ms']:.0f}x / "
                     f"{floats['flatip_single_ms'] * scale / r['flat_single_ms']:.0f}x faster")
        print(line)
    if floats:
        print(f"memory: {rows[0]['bytes_per_item']} bytes per code vs {floats['bytes_per_item']} per {args.dim}-d "
              f"float feature: {floats['bytes_per_item'] / rows[0]['bytes_per_item']:.0f}x less")


if __name__ == "__main__":
    main()
