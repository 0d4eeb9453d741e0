"""The other mAP definitions of evaluate.py / metrics.json: cut at K, and tie-aware (He et al., CVPR 2018),
against per-query loops and, for tie-aware, the mean over every order of the tied items on tiny cases."""

import itertools
import math

import numpy as np
import pytest

from utils.retrieval.metrics import map_definitions, retrieval_metrics, tie_aware_ap


def ap_full(rel_ranked):
    """AP of a whole ranked 0/1 list: mean over relevant items of (relevant so far) / rank."""
    hits, total = 0, 0.0
    for rank, r in enumerate(rel_ranked, 1):
        if r:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def ap_cut(rel_ranked, k):
    hits, total = 0, 0.0
    for rank, r in enumerate(rel_ranked[:k], 1):
        if r:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def distances(q, db):
    return [[int((a != b).sum()) for b in db] for a in q]


def ranked(dist_row, rel_row):
    """Relevance in (distance, database index) order, one query."""
    order = sorted(range(len(dist_row)), key=lambda j: (dist_row[j], j))
    return [rel_row[j] for j in order]


def random_case(seed, n_q=7, n_db=23, bits=6, n_classes=3):
    rng = np.random.default_rng(seed)
    q = rng.choice([-1, 1], size=(n_q, bits)).astype(np.int8)
    db = rng.choice([-1, 1], size=(n_db, bits)).astype(np.int8)
    ql, dl = rng.integers(0, n_classes, n_q), rng.integers(0, n_classes, n_db)
    ql[0] = n_classes + 5  # a query without relevant items counts 0
    return q, db, ql, dl


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cut_at_k_against_a_per_query_loop(seed):
    q, db, ql, dl = random_case(seed)
    dist = distances(q, db)
    got = map_definitions(q, db, ql, dl, map_ks=(1, 5, 20, 100))
    for k in (1, 5, 20, 100):
        want = np.mean([ap_cut(ranked(dist[i], list(ql[i] == dl)), k) for i in range(len(q))])
        assert got[f"map_cut@{k}"] == pytest.approx(want, abs=1e-12)
    # cut at K differs from the DUCH definition (not cut) on this case, and equals it when K >= N
    duch = retrieval_metrics(q, db, ql, dl, map_ks=(5, 100), with_curves=False)
    assert got["map_cut@5"] != pytest.approx(duch["map@5"], abs=1e-6)
    full = np.mean([ap_full(ranked(dist[i], list(ql[i] == dl))) for i in range(len(q))])
    assert got["map_cut@100"] == pytest.approx(full, abs=1e-12) and duch["map@100"] == pytest.approx(full, abs=1e-12)


def mean_over_tie_orders(dist_row, rel_row):
    """AP averaged over every order of the items within each distance (the tiny cases enumerate them all)."""
    groups = [[j for j in range(len(dist_row)) if dist_row[j] == d] for d in sorted(set(dist_row))]
    aps = []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        aps.append(ap_full([rel_row[j] for g in perms for j in g]))
    return float(np.mean(aps))


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_tie_aware_against_every_tie_order(seed):
    q, db, ql, dl = random_case(seed, n_q=4, n_db=7, bits=2, n_classes=2)  # 7 items on 3 distances: big tie groups
    dist = distances(q, db)
    got = map_definitions(q, db, ql, dl, map_ks=(5,))["map_tie_aware"]
    want = np.mean([mean_over_tie_orders(dist[i], list(ql[i] == dl)) for i in range(len(q))])
    assert got == pytest.approx(want, abs=1e-12)


def test_tie_aware_closed_form_by_hand():
    # one group of 3 items, 1 relevant: expected precision (1 + 1/2 + 1/3) / 3, whereas database order
    # (the relevant item last, say) gives 1/3
    assert tie_aware_ap(np.array([[3]]), np.array([[1]]))[0] == pytest.approx(11 / 18)
    q, db = np.array([[1, 1]], np.int8), np.array([[1, -1], [-1, 1], [-1, -1]], np.int8)  # distances 1, 1, 2
    got = map_definitions(q, db, np.array([0]), np.array([1, 0, 0]), map_ks=(3,))  # relevant: the 2nd and the 3rd
    # orders of the tie: (non, rel, rel) AP (1/2 + 2/3) / 2, (rel, non, rel) AP (1 + 2/3) / 2
    assert got["map_tie_aware"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + (1 + 2 / 3) / 2) / 2)
    assert got["map_cut@3"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # database order
    # no ties: the plain AP; items [rel, non, rel] at distances 0, 1, 2
    assert tie_aware_ap(np.array([[1, 1, 1]]), np.array([[1, 0, 1]]))[0] == pytest.approx((1 + 2 / 3) / 2)
    # all relevant: 1 whatever the order; none relevant: 0
    assert tie_aware_ap(np.array([[4, 2]]), np.array([[4, 2]]))[0] == pytest.approx(1.0)
    assert tie_aware_ap(np.array([[4, 2]]), np.array([[0, 0]]))[0] == 0.0
    assert math.isfinite(tie_aware_ap(np.array([[0, 5]]), np.array([[0, 2]]))[0])


def test_metrics_json_names_the_definitions(tmp_path):
    import torch

    from utils.retrieval.evaluation import Codes, evaluate_codes

    q, db, ql, dl = random_case(9, n_q=6, n_db=15, bits=8)
    codes = Codes(torch.tensor(q), torch.tensor(q), torch.tensor(db), torch.tensor(db))
    metrics = evaluate_codes(codes, torch.tensor(ql), torch.tensor(dl))
    assert set(metrics["map_definitions"]) == {"map@K", "map_cut@K", "map_tie_aware"}
    for key in ("map_cut@20", "map_cut@10", "map_tie_aware"):
        assert set(metrics[key]) == {"i2t", "t2i", "i2i", "t2t", "avg"}
    assert metrics["map_cut@20"]["i2t"] == pytest.approx(map_definitions(q, db, ql, dl)["map_cut@20"])
    assert "map_cut@20" not in evaluate_codes(codes, torch.tensor(ql), torch.tensor(dl), with_curves=False)
