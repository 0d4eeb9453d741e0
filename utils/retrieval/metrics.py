"""Retrieval metrics of hash codes: the definitions, computed exactly by counting items per distance.

Definitions (those of the unsupervised cross-modal hashing literature: DJSRH, JDSH, DUCH, with their
peculiarities kept). An item is relevant to a query when they share a label. For one query the
database is ranked by (Hamming distance, database index): ties keep database order.

- mAP@K: R relevant items at 1-based ranks p_1 < p_2 < ..., m = min(K, R);
  AP = (1/m) sum_{j=1..m} j / p_j. The list is not cut at K (p_j may exceed K); a query with R = 0
  has AP = 0 and still counts in the mean over queries.
- mAP cut at K: AP = mean of j / p_j over the relevant items with p_j <= K; 0 when there is none.
- tie-aware mAP: the expected AP of the whole list when the items at each distance are put in a
  uniformly random order (He et al., CVPR 2018), in closed form from the counts per distance.
- P@K = (relevant items among the first K) / K, K capped at the database size N.
- Within Hamming radius r (r = 0..B): precision = relevant within r / items within r (0 when no item
  lies within r), recall = relevant within r / R (0 when R = 0). Means over queries; the pairs
  (recall[r], precision[r]) are the PR curve.
- chance = relevant pairs / (Q N): the expected precision of a random ranking.

All of them come from one pass of the counting engine (``utils.retrieval.counting``; notes in
docs/evaluation.md): nothing is sorted and no query x database matrix is built.
"""
from __future__ import annotations

import numpy as np

from utils.errors import DUCHError
from utils.retrieval.counting import DEFAULT_MEMORY_GB, Plan, count_chunks, resolve_kernel  # noqa: F401 (re-exported)
from utils.retrieval.hamming import as_code_words
from utils.retrieval.labels import as_labels, paired

P_AT_K_CUTOFFS = (1, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
MAP_KS = (20, 10)


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


def retrieval_metrics(
    query_codes, db_codes, query_labels, db_labels, map_ks=MAP_KS, with_curves: bool = True,
    memory_gb: float = DEFAULT_MEMORY_GB, bits: int | None = None, kernel: str = "auto",
) -> dict:
    """All metrics of one retrieval direction, from one counting pass: ``map@K``, ``map_cut@K`` for each K,
    ``map_tie_aware`` (MAP_DEFINITIONS), ``chance``, and with curves ``p@k`` (keys str(K)),
    ``precision_radius`` and ``recall_radius`` (lists over r = 0..B).

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
    ql, dl = paired(q_lab, db_lab)
    plan = Plan.make(ks, P_AT_K_CUTOFFS if with_curves else (), len(db))
    n_q, n_db, bits = len(q), len(db), q.bits

    ap_total, cut_total, tie_total = np.zeros(len(ks)), np.zeros(len(ks)), 0.0
    harmonic = harmonic_numbers(n_db)
    hits_total = np.zeros(len(plan.p_ks))
    precision_total, recall_total = np.zeros(bits + 1), np.zeros(bits + 1)
    relevant_pairs = 0
    for _, _, hist, m, sums in count_chunks(q, db, ql, dl, plan, kernel, memory_gb):
        ap_total += np.where(m > 0, sums.ap / np.maximum(m, 1), 0.0).sum(axis=0)
        cut_total += np.where(sums.cut_hits > 0, sums.cut / np.maximum(sums.cut_hits, 1), 0.0).sum(axis=0)
        n_all, n_rel = hist.sum(axis=2), hist[:, :, 1]
        tie_total += tie_aware_ap(n_all, n_rel, harmonic).sum()
        if len(plan.p_ks):
            hits_total += (np.cumsum(sums.hits_bin, axis=1) / plan.p_ks[None, :]).sum(axis=0)
        cum_all, cum_rel = n_all.cumsum(axis=1), n_rel.cumsum(axis=1)
        n_rel = cum_rel[:, -1:]
        precision_total += np.where(cum_all > 0, cum_rel / np.maximum(cum_all, 1), 0.0).sum(axis=0)
        recall_total += np.where(n_rel > 0, cum_rel / np.maximum(n_rel, 1), 0.0).sum(axis=0)
        relevant_pairs += int(n_rel.sum())

    out = {f"map@{k}": float(v / n_q) for k, v in zip(ks, ap_total)}
    out.update({f"map_cut@{k}": float(v / n_q) for k, v in zip(ks, cut_total)})
    out["map_tie_aware"] = float(tie_total / n_q)
    out["chance"] = relevant_pairs / (n_q * n_db)
    if with_curves:
        out["p@k"] = {str(int(k)): float(v / n_q) for k, v in zip(plan.p_ks, hits_total)}
        out["precision_radius"] = (precision_total / n_q).tolist()
        out["recall_radius"] = (recall_total / n_q).tolist()
    return out


# ---- the mAP definitions, for numbers comparable across papers ---------------------------------------
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


def map_definitions(
    query_codes, db_codes, query_labels, db_labels, map_ks=MAP_KS, bits: int | None = None,
    memory_gb: float = DEFAULT_MEMORY_GB,
) -> dict:
    """``map_cut@K`` for each K and ``map_tie_aware`` of one retrieval direction (MAP_DEFINITIONS): the
    engine's figures of those definitions; means over queries, a query without relevant items counting 0."""
    out = retrieval_metrics(query_codes, db_codes, query_labels, db_labels, map_ks=map_ks, with_curves=False,
                            memory_gb=memory_gb, bits=bits)
    return {key: value for key, value in out.items() if key.startswith("map_cut@") or key == "map_tie_aware"}
