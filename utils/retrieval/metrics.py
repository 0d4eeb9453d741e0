"""Retrieval metrics of hash codes: the definitions, computed exactly by counting items per distance.

Definitions (those of the unsupervised cross-modal hashing literature: DJSRH, JDSH, DUCH, with their
peculiarities kept). An item is relevant to a query when they share a label. For one query the
database is ranked by (Hamming distance, database index): ties keep database order.

- mAP@K: R relevant items at 1-based ranks p_1 < p_2 < ..., m = min(K, R);
  AP = (1/m) sum_{j=1..m} j / p_j. The list is not cut at K (p_j may exceed K); a query with R = 0
  has AP = 0 and still counts in the mean over queries.
- P@K = (relevant items among the first K) / K, K capped at the database size N.
- Within Hamming radius r (r = 0..B): precision = relevant within r / items within r (0 when no item
  lies within r), recall = relevant within r / R (0 when R = 0). Means over queries; the pairs
  (recall[r], precision[r]) are the PR curve.
- chance = relevant pairs / (Q N): the expected precision of a random ranking.

How (notes in docs/evaluation.md): distances are integers 0..B, so one pass per query counts items and
relevant items per distance (a histogram of B + 1 bins); radius precision/recall follow from its
cumulative sums. Only the items at distances <= d_max need ranks, where d_max is the first distance
whose cumulative counts hold the first m relevant items (mAP) and the first max(K) items (P@K); a second
pass visits them in database order. Time O(Q N), memory O(B) per query plus the codes. Queries are
scored a chunk at a time, the chunk sized from ``memory_gb``.

Two kernels compute the counts: compiled (numba, codes up to 128 bits with class labels or up to 64
label bits) and numpy (any width, used otherwise or when numba is missing; holds a chunk x N block).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.errors import DUCHError
from utils.retrieval.hamming import CodeWords, as_code_words, hamming_distances, packed_to_words, to_host

P_AT_K_CUTOFFS = (1, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
MAP_KS = (20, 10)
DEFAULT_MEMORY_GB = 4.0
KERNELS = ("auto", "numba", "numpy")
_NUMPY_BYTES_PER_PAIR = 20  # XOR words 8, distances 2, popcount 1, relevance 1, histogram keys 8


# ---- labels ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Labels:
    """Class codes (int64, one per item) and/or label bit-sets (uint64 words, word-major).

    1-D class codes have only ``classes``; multi-hot rows have ``sets``, and also ``classes`` when
    every row holds exactly one label (sharing a label is then equality, which is cheaper)."""

    n: int
    n_labels: int | None  # width of multi-hot rows; None for class codes
    classes: np.ndarray | None = None
    sets: np.ndarray | None = None


def as_labels(labels, name: str = "labels") -> Labels:
    """Check labels: 1-D class codes (integers) or 2-D multi-hot rows (0/1)."""
    if isinstance(labels, Labels):
        return labels
    array = to_host(labels)
    if array.size == 0:
        raise DUCHError(f"{name} is empty (shape {array.shape})")
    if array.dtype.kind not in "fiub":
        raise DUCHError(f"{name} has dtype {array.dtype}; labels must be integer class codes or 0/1 multi-hot rows")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DUCHError(f"{name} contains NaN or inf")
    if array.ndim == 1:
        if array.dtype.kind == "f" and not np.all(array == np.round(array)):
            raise DUCHError(f"{name}: 1-D labels are class codes and must be whole numbers")
        return Labels(len(array), None, classes=array.astype(np.int64))
    if array.ndim != 2:
        raise DUCHError(f"{name} must be 1-D class codes or 2-D multi-hot rows, got shape {array.shape}")
    if array.dtype.kind != "b" and not np.all((array == 0) | (array == 1)):
        raise DUCHError(f"{name}: 2-D labels are multi-hot rows and must hold only 0 and 1")
    present = array != 0
    sets = packed_to_words(np.packbits(present, axis=1))
    per_row = present.sum(axis=1)
    classes = np.argmax(present, axis=1).astype(np.int64) if np.all(per_row == 1) else None
    return Labels(array.shape[0], array.shape[1], classes=classes, sets=sets)


def _paired(q: Labels, db: Labels) -> tuple[np.ndarray, np.ndarray]:
    """The label arrays both sides use: class codes when both have them, else bit-sets."""
    if (q.n_labels is None) != (db.n_labels is None) or q.n_labels != db.n_labels:
        def kind(l):
            return "class codes (1-D)" if l.n_labels is None else f"multi-hot rows of {l.n_labels} labels"
        raise DUCHError(f"query labels are {kind(q)} but database labels are {kind(db)}")
    if q.classes is not None and db.classes is not None:
        return q.classes, db.classes
    return q.sets, db.sets


def relevance(q_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Dense (Q, N) boolean: an item is relevant to a query when they share a label.

    Arrays as ``_paired`` gives them: int64 class codes (Q,), (N,) or uint64 bit-sets (words, Q), (words, N)."""
    if q_labels.ndim == 1:
        return q_labels[:, None] == db_labels[None, :]
    out = np.zeros((q_labels.shape[1], db_labels.shape[1]), bool)
    for w in range(q_labels.shape[0]):
        out |= (q_labels[w][:, None] & db_labels[w][None, :]) != 0
    return out


# ---- what the second pass needs ---------------------------------------------------------------------
@dataclass
class _Plan:
    map_ks: np.ndarray  # (nK,) int64
    p_ks: np.ndarray  # (nP,) int64, capped at N, sorted, unique; empty without curves
    bin_of_rank: np.ndarray  # rank p -> index of the first P@K cutoff >= p, for p = 1..max(p_ks)

    @classmethod
    def make(cls, map_ks, with_curves: bool, n_db: int) -> "_Plan":
        p_ks = np.array(sorted({min(int(k), n_db) for k in P_AT_K_CUTOFFS}) if with_curves else [], np.int64)
        p_max = int(p_ks[-1]) if len(p_ks) else 0
        bin_of_rank = np.searchsorted(p_ks, np.arange(p_max + 1), side="left").astype(np.int64)
        return cls(np.asarray(map_ks, np.int64), p_ks, bin_of_rank)


def _second_pass_inputs(hist: np.ndarray, plan: _Plan):
    """From per-distance counts (Qc, B+1, 2): m = min(K, R), d_max, and the counts before each distance."""
    n_all, n_rel = hist.sum(axis=2), hist[:, :, 1]
    cum_all, cum_rel = n_all.cumsum(axis=1), n_rel.cumsum(axis=1)
    m = np.minimum(plan.map_ks[None, :], cum_rel[:, -1:])
    m_max = m.max(axis=1)
    d_map = np.where(m_max > 0, np.argmax(cum_rel >= m_max[:, None], axis=1), -1)
    dmax = d_map
    if len(plan.p_ks):
        dmax = np.maximum(d_map, np.argmax(cum_all >= plan.p_ks[-1], axis=1))
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
    """Contiguous query ranges, a few per thread (for balance), each a whole number of the kernels' tiles."""
    tiles = -(-n_q // tile)
    pieces = min(tiles, 4 * threads)
    bounds = [tile * (tiles * i // pieces) for i in range(pieces)] + [n_q]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def _run_on_threads(work, ranges, threads: int) -> None:
    """``work(a, b)`` for each query range; the numba kernels release the GIL, so threads run in parallel."""
    if threads == 1 or len(ranges) == 1:
        for a, b in ranges:
            work(a, b)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(work, a, b) for a, b in ranges]:
            done.result()


def _kernel_numba(q: CodeWords, db: CodeWords, ql: np.ndarray, dl: np.ndarray, plan: _Plan):
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

    _run_on_threads(count, ranges, threads)
    hist = counts.reshape(n_q, bits + 1, 2)
    m, dmax, before_all, before_rel = _second_pass_inputs(hist, plan)
    ap_sum = np.zeros((n_q, len(plan.map_ks)))
    hits_bin = np.zeros((n_q, max(len(plan.p_ks), 1)), np.int64)

    def rank(a, b):
        nb.rank_pass(q0[a:b], second_word(a, b), w0, w1, ql[a:b], dl, dmax[a:b], before_all[a:b], before_rel[a:b],
                     m[a:b], plan.bin_of_rank, ap_sum[a:b], hits_bin[a:b])

    _run_on_threads(rank, ranges, threads)
    return hist, m, ap_sum, hits_bin


def _kernel_numpy(q: CodeWords, db: CodeWords, ql: np.ndarray, dl: np.ndarray, plan: _Plan):
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
    m, dmax, _, _ = _second_pass_inputs(hist, plan)
    ap_sum = np.zeros((n_q, len(plan.map_ks)))
    hits_bin = np.zeros((n_q, max(len(plan.p_ks), 1)), np.int64)
    p_max = len(plan.bin_of_rank) - 1
    for i in np.flatnonzero(dmax >= 0):
        near = np.flatnonzero(distance[i] <= dmax[i])  # database order
        ranked = near[np.argsort(distance[i, near], kind="stable")]  # (distance, index) order
        p = np.flatnonzero(relevant[i, ranked]) + 1.0  # ranks of the relevant items among them
        j = np.arange(1, len(p) + 1)
        for c, mk in enumerate(m[i]):
            ap_sum[i, c] = np.sum(j[:mk] / p[:mk])
        p_in = p[p <= p_max].astype(np.int64)
        hits_bin[i] += np.bincount(plan.bin_of_rank[p_in], minlength=hits_bin.shape[1])
    return hist, m, ap_sum, hits_bin


def compile_numba_kernels() -> bool:
    """Compiles every type variant of the numba kernels (codes of up to 64 or up to 128 bits, class codes or
    label bit-sets) into numba's on-disk cache, or loads them from it: about 15 s once after an install,
    which the first evaluation would otherwise spend. False when numba is not installed."""
    if _numba_module() is None:
        return False
    rng = np.random.default_rng(0)
    for bits in (64, 128):
        q, db = rng.integers(0, 2, (9, bits)) * 2 - 1, rng.integers(0, 2, (30, bits)) * 2 - 1
        retrieval_metrics(q, db, rng.integers(0, 3, 9), rng.integers(0, 3, 30), kernel="numba")
        retrieval_metrics(q, db, rng.integers(0, 2, (9, 5)), rng.integers(0, 2, (30, 5)), kernel="numba")
    return True


# ---- the engine -------------------------------------------------------------------------------------
def check_map_ks(map_ks) -> tuple[int, ...]:
    ks = tuple(int(k) for k in map_ks)
    if not ks:
        raise DUCHError("give at least one K for mAP@K")
    if min(ks) < 1:
        raise DUCHError(f"K of mAP@K must be at least 1, got {min(ks)}")
    if max(ks) > MAX_MAP_K:
        raise DUCHError(f"K of mAP@K must be at most {MAX_MAP_K:,} (a K above the database size ranks the whole "
                        f"database), got {max(ks)}")
    return ks


MAX_MAP_K = 10 ** 8


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
    """Queries per chunk so that the kernel's working memory stays under ``memory_gb``."""
    if not memory_gb > 0:
        raise DUCHError(f"--memory-gb must be positive, got {memory_gb}")
    budget = memory_gb * 2**30
    per_query = 64 * (bits + 2) + (_NUMPY_BYTES_PER_PAIR * n_db if kernel == "numpy" else 0)
    if per_query > budget:
        raise DUCHError(
            f"--memory-gb {memory_gb} is too small to score one query against {n_db} items with the numpy kernel "
            f"(needs {per_query / 2**30:.2f} GB); raise it or install numba"
        )
    return int(max(1, min(n_q, budget // per_query)))


def retrieval_metrics(
    query_codes, db_codes, query_labels, db_labels, map_ks=MAP_KS, with_curves: bool = True,
    memory_gb: float = DEFAULT_MEMORY_GB, bits: int | None = None, kernel: str = "auto",
) -> dict:
    """All metrics of one retrieval direction: ``map@K`` for each K, ``chance``, and with curves ``p@k``
    (keys str(K)), ``precision_radius`` and ``recall_radius`` (lists over r = 0..B).

    Codes: anything ``as_code_words`` takes (or its result); labels: anything ``as_labels`` takes."""
    ks = check_map_ks(map_ks)
    q = as_code_words(query_codes, bits, "query codes")
    db = as_code_words(db_codes, bits, "database codes")
    if q.bits != db.bits:
        raise DUCHError(f"query codes have {q.bits} bits but database codes have {db.bits}")
    q_lab, db_lab = as_labels(query_labels, "query labels"), as_labels(db_labels, "database labels")
    if q_lab.n != len(q):
        raise DUCHError(f"query labels have {q_lab.n} rows but there are {len(q)} query codes")
    if db_lab.n != len(db):
        raise DUCHError(f"database labels have {db_lab.n} rows but there are {len(db)} database codes")
    ql, dl = _paired(q_lab, db_lab)
    name = resolve_kernel(kernel, q, ql)
    run = _kernel_numba if name == "numba" else _kernel_numpy
    plan = _Plan.make(ks, with_curves, len(db))
    n_q, n_db, bits = len(q), len(db), q.bits
    step = chunk_rows(name, n_q, n_db, bits, memory_gb)

    ap_total = np.zeros(len(ks))
    hits_total = np.zeros(len(plan.p_ks))
    precision_total, recall_total = np.zeros(bits + 1), np.zeros(bits + 1)
    relevant_pairs = 0
    for start in range(0, n_q, step):
        stop = min(start + step, n_q)
        q_chunk = CodeWords(q.words[:, start:stop], bits)
        ql_chunk = ql[start:stop] if ql.ndim == 1 else ql[:, start:stop]
        hist, m, ap_sum, hits_bin = run(q_chunk, db, ql_chunk, dl, plan)
        ap_total += np.where(m > 0, ap_sum / np.maximum(m, 1), 0.0).sum(axis=0)
        if len(plan.p_ks):
            hits_total += (np.cumsum(hits_bin, axis=1) / plan.p_ks[None, :]).sum(axis=0)
        cum_all, cum_rel = hist.sum(axis=2).cumsum(axis=1), hist[:, :, 1].cumsum(axis=1)
        n_rel = cum_rel[:, -1:]
        precision_total += np.where(cum_all > 0, cum_rel / np.maximum(cum_all, 1), 0.0).sum(axis=0)
        recall_total += np.where(n_rel > 0, cum_rel / np.maximum(n_rel, 1), 0.0).sum(axis=0)
        relevant_pairs += int(n_rel.sum())

    out = {f"map@{k}": float(v / n_q) for k, v in zip(ks, ap_total)}
    out["chance"] = relevant_pairs / (n_q * n_db)
    if with_curves:
        out["p@k"] = {str(int(k)): float(v / n_q) for k, v in zip(plan.p_ks, hits_total)}
        out["precision_radius"] = (precision_total / n_q).tolist()
        out["recall_radius"] = (recall_total / n_q).tolist()
    return out


# ---- other mAP definitions, for numbers comparable across papers --------------------------------------
# Kept apart from the engine above: exact, by counting, on dense distance blocks of a chunk of queries.
MAP_DEFINITIONS = {
    "map@K": "DUCH / DJSRH / JDSH release: AP = (1/m) sum_{j<=m} j / p_j over the first m = min(K, R) relevant items "
             "ranked by (distance, database index); the list is not cut at K (p_j may exceed K)",
    "map_cut@K": "the list cut at K: AP = mean of precision@p over the relevant ranks p <= K (ranked by (distance, "
                 "database index)); 0 when none of the first K is relevant",
    "map_tie_aware": "tie-aware AP of the full list (He et al., CVPR 2018): the exact expectation of AP over uniformly "
                     "random orders of the items at equal distance, from the counts per distance",
}


def harmonic_numbers(n: int) -> np.ndarray:
    """H[0..n] with H[0] = 0, in float64."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64))])


def tie_aware_ap(counts: np.ndarray, relevant: np.ndarray, harmonic: np.ndarray | None = None) -> np.ndarray:
    """Expected AP over random tie orders, per query, from (Q, D) item and relevant-item counts per distance.

    In the group at distance d (n items, r relevant, N0 items and R0 relevant before it) a relevant item
    sits at a uniform position j = 1..n, with (j - 1)(r - 1)/(n - 1) other relevant items expected before
    it, so its expected precision is (1/n) sum_j (R0 + 1 + (j - 1) c) / (N0 + j), c = (r - 1)/(n - 1),
    = (1/n) [(R0 + 1 - c (N0 + 1)) (H(N0 + n) - H(N0)) + c n]. AP = (1/R) sum_d r_d (that); 0 when R = 0.
    """
    counts = np.asarray(counts, np.float64)
    relevant = np.asarray(relevant, np.float64)
    n_before = np.cumsum(counts, axis=1) - counts
    r_before = np.cumsum(relevant, axis=1) - relevant
    if harmonic is None:
        harmonic = harmonic_numbers(int(counts.sum(axis=1).max(initial=0)))
    n_safe = np.maximum(counts, 1)
    c = np.where(counts > 1, (relevant - 1) / np.maximum(counts - 1, 1), 0.0)
    lo, hi = n_before.astype(np.int64), (n_before + counts).astype(np.int64)
    group = ((r_before + 1 - c * (n_before + 1)) * (harmonic[hi] - harmonic[lo]) + c * counts) / n_safe
    total_relevant = relevant.sum(axis=1)
    ap = np.where(relevant > 0, relevant * group, 0.0).sum(axis=1)
    return np.where(total_relevant > 0, ap / np.maximum(total_relevant, 1), 0.0)


def cut_ap(rel_sorted: np.ndarray, k: int) -> np.ndarray:
    """AP of each row cut at K: rows are relevance (0/1) in ranked order."""
    top = np.asarray(rel_sorted[:, :k], np.float64)
    precision = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    hits = top.sum(axis=1)
    return np.where(hits > 0, (precision * top).sum(axis=1) / np.maximum(hits, 1), 0.0)


def map_definitions(
    query_codes, db_codes, query_labels, db_labels, map_ks=MAP_KS, bits: int | None = None,
    memory_gb: float = DEFAULT_MEMORY_GB,
) -> dict:
    """``map_cut@K`` for each K and ``map_tie_aware`` of one retrieval direction (MAP_DEFINITIONS); means over
    queries, a query without relevant items counting 0 as in mAP@K."""
    ks = check_map_ks(map_ks)
    q = as_code_words(query_codes, bits, "query codes")
    db = as_code_words(db_codes, bits, "database codes")
    if q.bits != db.bits:
        raise DUCHError(f"query codes have {q.bits} bits but database codes have {db.bits}")
    ql, dl = _paired(as_labels(query_labels, "query labels"), as_labels(db_labels, "database labels"))
    n_q, n_db, n_bins = len(q), len(db), q.bits + 1
    step = max(1, min(n_q, int(memory_gb * 2**30 / max(1, 40 * n_db))))
    harmonic = harmonic_numbers(n_db)
    cut_total, tie_total = np.zeros(len(ks)), 0.0
    for start in range(0, n_q, step):
        stop = min(start + step, n_q)
        dist = hamming_distances(CodeWords(q.words[:, start:stop], q.bits), db).astype(np.int64)
        rel = relevance(ql[start:stop] if ql.ndim == 1 else ql[:, start:stop], dl)
        order = np.argsort(dist, axis=1, kind="stable")  # ties by database index
        rel_sorted = np.take_along_axis(rel, order, axis=1)
        for i, k in enumerate(ks):
            cut_total[i] += cut_ap(rel_sorted, int(min(k, n_db))).sum()
        keys = dist + n_bins * np.arange(stop - start)[:, None]
        counts = np.bincount(keys.ravel(), minlength=(stop - start) * n_bins).reshape(-1, n_bins)
        size = (stop - start) * n_bins
        rel_counts = np.bincount(keys.ravel(), weights=rel.ravel(), minlength=size).reshape(-1, n_bins)
        tie_total += tie_aware_ap(counts, rel_counts, harmonic).sum()
    out = {f"map_cut@{k}": float(v / n_q) for k, v in zip(ks, cut_total)}
    out["map_tie_aware"] = float(tie_total / n_q)
    return out
