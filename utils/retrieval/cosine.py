"""Retrieval by cosine similarity of float embeddings: the reference the hash codes are measured against.

The definitions are those of ``utils.retrieval.metrics`` and ``utils.retrieval.recall`` with the database
ranked by (cosine similarity, highest first; then database index): mAP@K (the list not cut at K), mAP cut at
K, P@K, chance, and instance-level R@K by index and tie-aware. The PR curve is taken over rank cut-offs
(the P@K ranks and the whole list), since float scores have no radii.

Computed by counting, query by query over chunks of the similarity matrix (a few hundred MB at most): the
L-th highest similarity (L the largest cut-off) is found by a partition, which takes linear time, and only
those L items are put in order; a relevant item beyond them gets its rank by counting the items before it.
No row of the database is sorted.
"""
from __future__ import annotations

import numpy as np

from utils.errors import DUCHError
from utils.retrieval.labels import as_labels, paired, relevance
from utils.retrieval.metrics import P_AT_K_CUTOFFS, check_map_ks
from utils.retrieval.recall import RECALL_KS, hit_probability

CHUNK_BYTES = 256 * 2 ** 20  # similarities of one chunk of queries


def unit_rows(x) -> np.ndarray:
    """Rows scaled to length 1 (float32); a zero row stays zero (similarity 0 to everything)."""
    from utils.retrieval.hamming import to_host

    x = np.asarray(to_host(x), dtype=np.float32)
    if x.ndim != 2:
        raise DUCHError(f"embeddings must be a 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DUCHError("embeddings contain NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _chunks(n_query: int, n_db: int):
    step = max(1, CHUNK_BYTES // max(4 * n_db, 1))
    for start in range(0, n_query, step):
        yield start, min(n_query, start + step)


def _top(row: np.ndarray, length: int) -> np.ndarray:
    """The indices of the first ``length`` items of ``row`` in (similarity descending, index) order."""
    n = len(row)
    if length >= n:
        candidates = np.arange(n)
    else:
        threshold = np.partition(row, n - length)[n - length]  # the length-th highest value
        above = np.flatnonzero(row > threshold)
        at = np.flatnonzero(row == threshold)[: length - len(above)]  # ties: the lowest indices
        candidates = np.concatenate([above, at])
    return candidates[np.lexsort((candidates, -row[candidates]))]


def _rank(row: np.ndarray, item: int) -> int:
    """1-based rank of ``item``: the items with a higher similarity, or an equal one and a lower index, come first."""
    value = row[item]
    return int(np.count_nonzero(row > value) + np.count_nonzero(row[:item] == value)) + 1


def cosine_metrics(query, db, query_labels, db_labels, map_ks=(20, 10), with_curves: bool = True) -> dict:
    """One retrieval direction by cosine similarity: ``map@K``, ``map_cut@K``, ``chance`` and with curves ``p@k``
    (keys str(K)), ``precision_rank``/``recall_rank`` at ``rank_cutoffs``. Embeddings: 2-D arrays (any width, the
    same on both sides); labels: anything ``as_labels`` takes."""
    ks = check_map_ks(map_ks)
    q, d = unit_rows(query), unit_rows(db)
    if q.shape[1] != d.shape[1]:
        raise DUCHError(f"query embeddings are {q.shape[1]} wide, database embeddings {d.shape[1]}: cosine "
                        "similarity needs one space")
    q_lab, db_lab = as_labels(query_labels, "query labels"), as_labels(db_labels, "database labels")
    if q_lab.n != len(q) or db_lab.n != len(d):
        raise DUCHError(f"{len(q)} query and {len(d)} database embeddings, but {q_lab.n} and {db_lab.n} labels")
    ql, dl = paired(q_lab, db_lab)
    n_db = len(d)
    p_ks = sorted({min(k, n_db) for k in P_AT_K_CUTOFFS}) if with_curves else []
    cutoffs = sorted({*p_ks, n_db}) if with_curves else []
    length = min(n_db, max([*ks, *p_ks]))
    ap, cut = np.zeros(len(ks)), np.zeros(len(ks))
    hits = np.zeros(len(cutoffs))
    recall_sum = np.zeros(len(cutoffs))
    relevant_pairs = 0
    for start, stop in _chunks(len(q), n_db):
        sims = q[start:stop] @ d.T
        rel = relevance(ql[start:stop] if ql.ndim == 1 else ql[:, start:stop], dl)
        for row, relevant in zip(sims, rel):
            total = int(relevant.sum())
            relevant_pairs += total
            top = _top(row, length)
            found = np.flatnonzero(relevant[top]) + 1  # ranks of the relevant items among the first `length`
            for i, k in enumerate(ks):
                m = min(k, total)
                if m == 0:
                    continue
                ranks = found[:m]
                if len(ranks) < m:  # the rest lie beyond the first `length`: their ranks by counting
                    beyond = np.setdiff1d(np.flatnonzero(relevant), top, assume_unique=True)
                    nearest = _top_of(row, beyond, m - len(ranks))
                    ranks = np.concatenate([ranks, [_rank(row, j) for j in nearest]])
                ap[i] += float(np.mean(np.arange(1, m + 1) / ranks))
                within = found[found <= k]
                cut[i] += float(np.mean(np.arange(1, len(within) + 1) / within)) if len(within) else 0.0
            if with_curves:
                cum = np.concatenate([[0], np.cumsum(relevant[top])])
                counts = np.array([cum[min(c, length)] if c < n_db else total for c in cutoffs], dtype=np.float64)
                hits += counts / np.asarray(cutoffs, dtype=np.float64)
                recall_sum += counts / total if total else 0.0
    n_q = max(len(q), 1)
    out = {f"map@{k}": float(v / n_q) for k, v in zip(ks, ap)}
    out.update({f"map_cut@{k}": float(v / n_q) for k, v in zip(ks, cut)})
    out["chance"] = relevant_pairs / (n_q * max(n_db, 1))
    if with_curves:
        precision = hits / n_q
        out["p@k"] = {str(k): float(precision[cutoffs.index(k)]) for k in p_ks}
        out["rank_cutoffs"] = list(cutoffs)
        out["precision_rank"] = precision.tolist()
        out["recall_rank"] = (recall_sum / n_q).tolist()
    return out


def _top_of(row: np.ndarray, items: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` of ``items`` in (similarity descending, index) order."""
    sub = _top(row[items], count)
    return items[sub]


def cosine_recall(img, txt, txt_image, ks=RECALL_KS) -> dict:
    """I->T and T->I instance-level recall by cosine similarity, in ``utils.retrieval.recall.instance_recall``'s
    layout (percentages; ties by index and tie-aware). ``txt_image[c]``: the row in ``img`` of caption c's image."""
    img, txt = unit_rows(img), unit_rows(txt)
    owner = np.asarray(txt_image).reshape(-1).astype(np.int64)
    if len(owner) != len(txt) or (len(owner) and (owner.min() < 0 or owner.max() >= len(img))):
        raise DUCHError(f"{len(txt)} caption embeddings need as many caption-to-image rows in 0..{len(img) - 1}")
    image_ids = np.arange(len(img))
    out: dict = {"index": {}, "tie_aware": {}}
    directions = {"i2t": (img, txt, image_ids, owner), "t2i": (txt, img, owner, image_ids)}
    for name, (q, d, q_ids, d_ids) in directions.items():
        index_hits, tie_hits = np.zeros(len(ks)), np.zeros(len(ks))
        for start, stop in _chunks(len(q), len(d)):
            sims = q[start:stop] @ d.T
            for row, query_id in zip(sims, q_ids[start:stop]):
                relevant = np.flatnonzero(d_ids == query_id)
                if not len(relevant):
                    continue
                best = relevant[np.lexsort((relevant, -row[relevant]))[0]]
                value = row[best]
                a = int(np.count_nonzero(row > value))
                t = int(np.count_nonzero(row == value))
                r = int(np.count_nonzero(row[relevant] == value))
                rank = _rank(row, best)
                for i, k in enumerate(ks):
                    index_hits[i] += rank <= k
                    tie_hits[i] += float(hit_probability(k - a, t, r))
        n = max(len(q), 1)
        out["index"][name] = {f"r@{k}": 100.0 * index_hits[i] / n for i, k in enumerate(ks)}
        out["tie_aware"][name] = {f"r@{k}": 100.0 * tie_hits[i] / n for i, k in enumerate(ks)}
    for form in ("index", "tie_aware"):
        out[form]["mr"] = float(np.mean([v for name in ("i2t", "t2i") for v in out[form][name].values()]))
    out["n_images"], out["n_captions"] = len(img), len(txt)
    return out
