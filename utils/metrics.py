"""Retrieval metrics for hash codes, vectorised over queries (no Python loop over queries or K).

Definitions follow the unsupervised cross-modal hashing literature (DJSRH, JDSH, DUCH), with their
peculiarities kept (see ``map_at_k``). Ties in Hamming distance are broken by database order.
"""
from __future__ import annotations

import torch

P_AT_K_CUTOFFS = (1, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)


def hamming_distance(query_codes: torch.Tensor, db_codes: torch.Tensor) -> torch.Tensor:
    """Pairwise Hamming distances (Q, D) between ±1 codes, exact small integers as float."""
    n_bits = query_codes.shape[1]
    return 0.5 * (n_bits - query_codes.float() @ db_codes.float().T)


def relevance(query_labels: torch.Tensor, db_labels: torch.Tensor) -> torch.Tensor:
    """(Q, D) boolean: an item is relevant to a query when they share a label.

    Labels are class codes (1-D) or multi-hot rows (2-D).
    """
    if query_labels.dim() == 1:
        return query_labels[:, None] == db_labels[None, :]
    return (query_labels.float() @ db_labels.float().T) > 0


def ranked_relevance(distance: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Relevance of the database items in ranked order; a stable sort keeps ties in database order."""
    order = torch.sort(distance, dim=1, stable=True).indices
    return torch.gather(relevant, 1, order)


def map_at_k(ranked: torch.Tensor, ks) -> dict[int, float]:
    """mAP@K for each K in ``ks`` from ranked relevance (Q, D).

    For a query with R > 0 relevant items at 1-based ranks p_1 < p_2 < ..., m = min(K, R):
    AP = mean over j = 1..m of j / p_j. The list is not cut at K (p_j may exceed K). Queries with
    R = 0 add 0 and still count in the mean.
    """
    ranked = ranked.float()
    n_relevant = ranked.sum(dim=1)  # R per query
    hits = ranked.cumsum(dim=1)  # j at each rank
    ranks = torch.arange(1, ranked.shape[1] + 1, device=ranked.device, dtype=torch.float32)
    precision_at_hit = ranked * hits / ranks  # j / p_j at relevant ranks, 0 elsewhere
    ks_t = torch.as_tensor(list(ks), device=ranked.device, dtype=torch.float32)
    m = torch.minimum(ks_t[:, None], n_relevant[None, :])  # (nK, Q)
    within = hits[None, :, :] <= m[:, :, None]  # the first m relevant items
    ap_sum = (precision_at_hit[None, :, :] * within).sum(dim=2)
    ap = torch.where(m > 0, ap_sum / m.clamp(min=1), torch.zeros_like(ap_sum))
    return {int(k): float(v) for k, v in zip(ks, ap.mean(dim=1))}


def precision_at_k(ranked: torch.Tensor, cutoffs=P_AT_K_CUTOFFS) -> dict[int, float]:
    """P@K: share of relevant items among the top K, averaged over queries; K capped at |D|."""
    n_db = ranked.shape[1]
    ks = sorted({min(int(k), n_db) for k in cutoffs})
    hits = ranked.float().cumsum(dim=1)
    idx = torch.as_tensor([k - 1 for k in ks], device=ranked.device)
    values = (hits[:, idx] / torch.as_tensor(ks, device=ranked.device, dtype=torch.float32)).mean(dim=0)
    return {k: float(v) for k, v in zip(ks, values)}


def radius_precision_recall(distance: torch.Tensor, relevant: torch.Tensor, n_bits: int):
    """Precision and recall of the items within Hamming radius r, for r = 0..n_bits.

    Means over all queries: a radius that retrieves nothing gives precision 0; a query with no
    relevant item gives recall 0. The pairs (recall[r], precision[r]) are the PR curve.
    """
    d = distance.round().long().clamp(0, n_bits)
    n_q = d.shape[0]
    retrieved = torch.zeros(n_q, n_bits + 1, device=d.device)
    retrieved.scatter_add_(1, d, torch.ones_like(d, dtype=torch.float32))
    hit = torch.zeros(n_q, n_bits + 1, device=d.device)
    hit.scatter_add_(1, d, relevant.float())
    retrieved, hit = retrieved.cumsum(dim=1), hit.cumsum(dim=1)
    n_relevant = relevant.float().sum(dim=1, keepdim=True)
    precision = torch.where(retrieved > 0, hit / retrieved.clamp(min=1), torch.zeros_like(hit))
    recall = torch.where(n_relevant > 0, hit / n_relevant.clamp(min=1), torch.zeros_like(hit))
    return precision.mean(dim=0).tolist(), recall.mean(dim=0).tolist()


def retrieval_metrics(query_codes, db_codes, query_labels, db_labels, map_ks=(20, 10), with_curves=True) -> dict:
    """All metrics of one retrieval direction."""
    distance = hamming_distance(query_codes, db_codes)
    relevant = relevance(query_labels, db_labels)
    ranked = ranked_relevance(distance, relevant)
    out = {f"map@{k}": v for k, v in map_at_k(ranked, map_ks).items()}
    out["chance"] = float(relevant.float().mean())  # expected precision of a random ranking
    if with_curves:
        out["p@k"] = {str(k): v for k, v in precision_at_k(ranked).items()}
        precision, recall = radius_precision_recall(distance, relevant, query_codes.shape[1])
        out["precision_radius"] = precision
        out["recall_radius"] = recall
    return out
