"""The counting engine: per query, the items and relevant items at each Hamming distance, and the ranks of the
few items that the rank-based metrics need, without sorting anything or holding a query x database matrix.

Distances are integers 0..B, so a first pass per query counts items and relevant items per distance (a
histogram of B + 1 bins). Only the items at distances <= d_max need ranks, d_max being the first distance
whose cumulative counts hold the last rank any metric asks for (the m-th relevant item, rank max(K), the
largest P@K cutoff); a second pass visits them in database order, where an item's rank is the count of
items closer plus its place among the items of its distance met so far. Time O(Q N), memory O(B) per
query plus the codes; queries go a chunk at a time, the chunk sized from ``memory_gb``.

Two kernels: compiled (numba, codes up to 128 bits with class labels or up to 64 label bits) and numpy
(any width, used otherwise or when numba is missing; it holds a chunk x N block of distances).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.errors import DUCHError
from utils.retrieval.hamming import CodeWords, as_code_words, hamming_distances
from utils.retrieval.labels import as_labels, paired, relevance

KERNELS = ("auto", "numba", "numpy")
_NUMPY_BYTES_PER_PAIR = 20  # XOR words 8, distances 2, popcount 1, relevance 1, histogram keys 8
DEFAULT_MEMORY_GB = 4.0  # working memory of one scoring call (evaluate.py --memory-gb)
MAX_CHUNK_QUERIES = 4096  # the per-query counts (a few KB each) of a chunk stay bounded however many queries


# ---- what the second pass needs ---------------------------------------------------------------------
@dataclass
class Plan:
    map_ks: np.ndarray  # (nK,) int64
    p_ks: np.ndarray  # (nP,) int64, capped at N, sorted, unique; empty without curves
    bin_of_rank: np.ndarray  # rank p -> index of the first P@K cutoff >= p, for p = 1..max(p_ks)

    @classmethod
    def make(cls, map_ks, p_cutoffs, n_db: int) -> "Plan":
        p_ks = np.array(sorted({min(int(k), n_db) for k in p_cutoffs}), np.int64)
        p_max = int(p_ks[-1]) if len(p_ks) else 0
        bin_of_rank = np.searchsorted(p_ks, np.arange(p_max + 1), side="left").astype(np.int64)
        return cls(np.asarray(map_ks, np.int64), p_ks, bin_of_rank)


@dataclass
class RankSums:
    """What the second pass adds up per query: AP sums of mAP@K and of mAP cut at K (with the relevant items
    counted in the cut), and relevant items per P@K bin."""

    ap: np.ndarray  # (Qc, nK) float64
    cut: np.ndarray  # (Qc, nK) float64
    cut_hits: np.ndarray  # (Qc, nK) int64
    hits_bin: np.ndarray  # (Qc, max(nP, 1)) int64

    @classmethod
    def zeros(cls, n_q: int, plan: Plan) -> "RankSums":
        n_k = len(plan.map_ks)
        return cls(np.zeros((n_q, n_k)), np.zeros((n_q, n_k)), np.zeros((n_q, n_k), np.int64),
                   np.zeros((n_q, max(len(plan.p_ks), 1)), np.int64))


def _second_pass_inputs(hist: np.ndarray, plan: Plan):
    """From per-distance counts (Qc, B+1, 2): m = min(K, R), d_max, and the counts before each distance.

    d_max is the last distance whose items need a rank: the one holding the m-th relevant item (mAP@K),
    rank max(K) (mAP cut at K) or rank max(P@K cutoff); -1 for a query without relevant items."""
    n_all, n_rel = hist.sum(axis=2), hist[:, :, 1]
    cum_all, cum_rel = n_all.cumsum(axis=1), n_rel.cumsum(axis=1)
    m = np.minimum(plan.map_ks[None, :], cum_rel[:, -1:])
    m_max = m.max(axis=1)
    d_map = np.where(m_max > 0, np.argmax(cum_rel >= m_max[:, None], axis=1), -1)
    last_rank = min(int(plan.map_ks.max()), int(cum_all[0, -1]))
    if len(plan.p_ks):
        last_rank = max(last_rank, int(plan.p_ks[-1]))
    d_rank = np.argmax(cum_all >= last_rank, axis=1)
    dmax = np.where(m_max > 0, np.maximum(d_map, d_rank), -1)
    before_all = np.ascontiguousarray(cum_all - n_all)
    before_rel = np.ascontiguousarray(cum_rel - n_rel)
    return m.astype(np.int64), dmax.astype(np.int64), before_all, before_rel


# ---- kernels: (query chunk, database) -> per-distance counts, AP sums, hit counts per P@K bin -----------
def _numba_module():
    try:
        from utils.retrieval import hamming_numba
    except ImportError:
        return None
    return hamming_numba


def _fits_numba(q: CodeWords, q_labels: np.ndarray) -> bool:
    return q.words.shape[0] <= 2 and (q_labels.ndim == 1 or q_labels.shape[0] == 1)


def _query_ranges(n_q: int, threads: int, tile: int = 8) -> list[tuple[int, int]]:
    """Contiguous query ranges, 16 per thread (the last to finish waits less at the barrier that ends each pass:
    10,000 x 300,000 codes scored 8 % faster than with 4), each a whole number of the kernels' tiles."""
    tiles = -(-n_q // tile)
    pieces = min(tiles, 16 * threads)
    bounds = [tile * (tiles * i // pieces) for i in range(pieces)] + [n_q]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def run_on_threads(work, ranges, threads: int) -> None:
    """``work(a, b)`` for each query range; the numba kernels release the GIL, so threads run in parallel."""
    if threads == 1 or len(ranges) == 1:
        for a, b in ranges:
            work(a, b)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(work, a, b) for a, b in ranges]:
            done.result()


def _kernel_numba(q: CodeWords, db: CodeWords, ql: np.ndarray, dl: np.ndarray, plan: Plan):
    import numba

    nb = _numba_module()
    n_q, bits = len(q), q.bits
    q0, q1 = q.words[0], (q.words[1] if q.words.shape[0] > 1 else None)
    w0, w1 = db.words[0], (db.words[1] if db.words.shape[0] > 1 else None)
    ql, dl = (ql, dl) if ql.ndim == 1 else (ql[0], dl[0])
    threads = max(1, int(numba.config.NUMBA_NUM_THREADS))  # all cores, or NUMBA_NUM_THREADS
    ranges = _query_ranges(n_q, threads)

    def second_word(a, b):
        return None if q1 is None else q1[a:b]

    counts = np.zeros((n_q, 2 * (bits + 1)), np.int64)

    def count(a, b):
        nb.count_pairs(q0[a:b], second_word(a, b), w0, w1, ql[a:b], dl, bits, counts[a:b])

    run_on_threads(count, ranges, threads)
    hist = counts.reshape(n_q, bits + 1, 2)
    m, dmax, before_all, before_rel = _second_pass_inputs(hist, plan)
    sums = RankSums.zeros(n_q, plan)

    def rank(a, b):
        nb.rank_pass(q0[a:b], second_word(a, b), w0, w1, ql[a:b], dl, dmax[a:b], before_all[a:b], before_rel[a:b],
                     m[a:b], plan.map_ks, plan.bin_of_rank, sums.ap[a:b], sums.cut[a:b], sums.cut_hits[a:b],
                     sums.hits_bin[a:b])

    run_on_threads(rank, ranges, threads)
    return hist, m, sums


def _kernel_numpy(q: CodeWords, db: CodeWords, ql: np.ndarray, dl: np.ndarray, plan: Plan):
    n_q, bits = len(q), q.bits
    width = 2 * (bits + 1)
    distance = hamming_distances(q, db)
    relevant = relevance(ql, dl)
    keys = distance.astype(np.int64)
    keys *= 2
    keys += relevant
    keys += (np.arange(n_q, dtype=np.int64) * width)[:, None]
    hist = np.bincount(keys.ravel(), minlength=n_q * width).reshape(n_q, bits + 1, 2)
    del keys
    m, dmax, before_all, _ = _second_pass_inputs(hist, plan)
    sums = RankSums.zeros(n_q, plan)
    p_max = len(plan.bin_of_rank) - 1
    for i in np.flatnonzero(dmax >= 0):
        near = np.flatnonzero(distance[i] <= dmax[i])  # database order
        near_d, near_rel = distance[i, near], relevant[i, near]
        # ranks of the relevant items: the items closer, then those of the same distance before them in
        # database order (one distance at a time: no sort)
        p = np.concatenate([before_all[i, d] + 1.0 + np.flatnonzero(near_rel[near_d == d])
                            for d in range(int(dmax[i]) + 1)])
        j = np.arange(1, len(p) + 1)
        for c, (mk, k) in enumerate(zip(m[i], plan.map_ks)):
            sums.ap[i, c] = np.sum(j[:mk] / p[:mk])
            in_cut = p <= k
            sums.cut[i, c] = np.sum(j[in_cut] / p[in_cut])
            sums.cut_hits[i, c] = int(in_cut.sum())
        p_in = p[p <= p_max].astype(np.int64)
        sums.hits_bin[i] += np.bincount(plan.bin_of_rank[p_in], minlength=sums.hits_bin.shape[1])
    return hist, m, sums


def resolve_kernel(kernel: str, q: CodeWords, ql: np.ndarray) -> str:
    if kernel not in KERNELS:
        raise DUCHError(f"unknown kernel {kernel!r}; choose one of: {', '.join(KERNELS)}")
    fits = _fits_numba(q, ql)
    if kernel == "numba" and (_numba_module() is None or not fits):
        raise DUCHError("the numba kernel needs numba installed, codes of up to 128 bits and class labels or up to 64 "
                        "label bits")
    if kernel == "auto":
        return "numba" if fits and _numba_module() is not None else "numpy"
    return kernel


def chunk_rows(kernel: str, n_q: int, n_db: int, bits: int, memory_gb: float) -> int:
    """Queries per chunk so that the kernel's working memory stays under ``memory_gb`` (and at most
    MAX_CHUNK_QUERIES, so that it follows the chunk, not the number of queries)."""
    if not memory_gb > 0:
        raise DUCHError(f"--memory-gb must be positive, got {memory_gb}")
    budget = memory_gb * 2**30
    per_query = 64 * (bits + 2) + (_NUMPY_BYTES_PER_PAIR * n_db if kernel == "numpy" else 0)
    if per_query > budget:
        raise DUCHError(
            f"--memory-gb {memory_gb} is too small to score one query against {n_db} items with the numpy kernel "
            f"(needs {per_query / 2**30:.2f} GB); raise it or install numba"
        )
    return int(max(1, min(n_q, MAX_CHUNK_QUERIES, budget // per_query)))


def count_chunks(q: CodeWords, db: CodeWords, ql: np.ndarray, dl: np.ndarray, plan: Plan, kernel: str = "auto",
                 memory_gb: float = DEFAULT_MEMORY_GB):
    """Yields (start, stop, hist, m, sums) per chunk of queries: per-distance counts (Qc, B+1, 2) of all and
    relevant items, m = min(K, R) (Qc, nK), and the second pass's RankSums. Labels as ``paired`` gives them."""
    name = resolve_kernel(kernel, q, ql)
    run = _kernel_numba if name == "numba" else _kernel_numpy
    step = chunk_rows(name, len(q), len(db), q.bits, memory_gb)
    for start in range(0, len(q), step):
        stop = min(start + step, len(q))
        q_chunk = CodeWords(q.words[:, start:stop], q.bits)
        ql_chunk = ql[start:stop] if ql.ndim == 1 else ql[:, start:stop]
        yield (start, stop, *run(q_chunk, db, ql_chunk, dl, plan))


def compile_numba_kernels() -> bool:
    """Compiles every type variant of the numba kernels (codes of up to 64 or up to 128 bits, class codes or
    label bit-sets) into numba's on-disk cache, or loads them from it: about 15 s once after an install,
    which the first evaluation would otherwise spend. False when numba is not installed."""
    if _numba_module() is None:
        return False
    rng = np.random.default_rng(0)
    for bits in (64, 128):
        q, db = (as_code_words(rng.integers(0, 2, (n, bits)) * 2 - 1) for n in (9, 30))
        for ql, dl in ((rng.integers(0, 3, 9), rng.integers(0, 3, 30)),
                       (rng.integers(0, 2, (9, 5)), rng.integers(0, 2, (30, 5)))):
            labels = paired(as_labels(ql), as_labels(dl))
            for _ in count_chunks(q, db, *labels, Plan.make((20, 10), (1, 5), 30), kernel="numba"):
                pass
    return True
