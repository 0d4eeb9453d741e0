"""Metrics against straightforward per-query reference implementations (the literature's loops)."""
import numpy as np
import pytest
import torch

from utils.metrics import P_AT_K_CUTOFFS, hamming_distance, map_at_k, precision_at_k, radius_precision_recall, ranked_relevance, relevance, retrieval_metrics


def reference_map_k(q, d, ql, dl, k):
    """The original per-query loop (with a stable sort): AP = mean_j j / p_j over the first min(K, R) hits."""
    total = 0.0
    for i in range(len(q)):
        gnd = (ql[i] == dl).astype(float)
        r = int(gnd.sum())
        if r == 0:
            continue
        hamm = 0.5 * (q.shape[1] - d @ q[i])
        order = np.argsort(hamm, kind="stable")
        gnd = gnd[order]
        m = min(k, r)
        positions = np.nonzero(gnd)[0][:m] + 1.0
        total += np.mean(np.arange(1, m + 1) / positions)
    return total / len(q)


def random_codes(rng, n, bits):
    return np.where(rng.random((n, bits)) > 0.5, 1.0, -1.0).astype(np.float32)


@pytest.mark.parametrize("bits,n_q,n_db,n_cls", [(8, 30, 120, 5), (16, 50, 300, 7), (4, 20, 50, 3)])
def test_map_matches_reference_loop(bits, n_q, n_db, n_cls):
    rng = np.random.default_rng(bits)
    q, d = random_codes(rng, n_q, bits), random_codes(rng, n_db, bits)  # few bits: many ties
    ql, dl = rng.integers(0, n_cls, n_q), rng.integers(0, n_cls, n_db)
    ql[0] = n_cls + 5  # a query with no relevant item counts as 0
    ranked = ranked_relevance(hamming_distance(torch.tensor(q), torch.tensor(d)), relevance(torch.tensor(ql), torch.tensor(dl)))
    got = map_at_k(ranked, (20, 10, 1000))
    for k in (20, 10, 1000):
        assert got[k] == pytest.approx(reference_map_k(q, d, ql, dl, k), abs=1e-6)


def test_map_is_not_cut_at_k():
    # one query, relevant items at ranks 1 and 30 of 40: with K = 20, m = min(20, 2) = 2 -> AP = (1/1 + 2/30) / 2
    ranked = torch.zeros(1, 40, dtype=torch.bool)
    ranked[0, 0] = ranked[0, 29] = True
    assert map_at_k(ranked, (20,))[20] == pytest.approx((1 + 2 / 30) / 2)


def test_ties_broken_by_database_order():
    q = torch.tensor([[1.0, 1.0]])
    db = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    # both first items tie at distance 0; only the second is relevant -> rank 2 -> AP = 1/2
    ranked = ranked_relevance(hamming_distance(q, db), relevance(torch.tensor([1]), torch.tensor([0, 1, 1])))
    assert map_at_k(ranked, (1,))[1] == pytest.approx(0.5)


def test_hamming_distance_counts_differing_bits():
    q = torch.tensor([[1.0, -1.0, 1.0, 1.0]])
    d = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-1.0, 1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
    assert hamming_distance(q, d).tolist() == [[0.0, 4.0, 1.0]]


def test_precision_at_k_and_radius_match_loops():
    rng = np.random.default_rng(3)
    bits = 6
    q, d = random_codes(rng, 25, bits), random_codes(rng, 80, bits)
    ql, dl = rng.integers(0, 4, 25), rng.integers(0, 4, 80)
    dist = hamming_distance(torch.tensor(q), torch.tensor(d))
    rel = relevance(torch.tensor(ql), torch.tensor(dl))
    pk = precision_at_k(ranked_relevance(dist, rel))
    assert max(pk) == 80  # K capped at the database size
    precision, recall = radius_precision_recall(dist, rel, bits)
    dist_np, rel_np = dist.numpy(), rel.numpy()
    for k in (1, 5, 20, 80):
        expected = np.mean([rel_np[i][np.argsort(dist_np[i], kind="stable")][:k].mean() for i in range(25)])
        assert pk[k] == pytest.approx(expected, abs=1e-6)
    for r in range(bits + 1):
        ps, rs = [], []
        for i in range(25):
            within = dist_np[i] <= r
            ps.append(rel_np[i][within].sum() / within.sum() if within.any() else 0.0)
            rs.append(rel_np[i][within].sum() / rel_np[i].sum() if rel_np[i].any() else 0.0)
        assert precision[r] == pytest.approx(np.mean(ps), abs=1e-6)
        assert recall[r] == pytest.approx(np.mean(rs), abs=1e-6)
    assert recall[bits] == pytest.approx(1.0)  # everything lies within radius B


def test_retrieval_metrics_keys_and_perfect_codes():
    labels = torch.arange(4).repeat(5)
    codes = torch.tensor(random_codes(np.random.default_rng(0), 4, 16))[labels]
    out = retrieval_metrics(codes, codes, labels, labels)
    assert out["map@20"] == pytest.approx(1.0) and out["map@10"] == pytest.approx(1.0)
    assert out["chance"] == pytest.approx(0.25)
    assert set(out["p@k"]) == {str(min(k, 20)) for k in P_AT_K_CUTOFFS}
    assert len(out["precision_radius"]) == 17
