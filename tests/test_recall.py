"""Instance-level recall: both forms against per-query references and brute-force enumeration of tie orders."""
import itertools

import numpy as np
import pytest

from utils.errors import DUCHError
from utils.retrieval.recall import hit_probability, instance_recall, recall_at


def hamming(q, db):
    return (q[:, None, :] != db[None, :, :]).sum(-1)


def reference_by_index(dist, relevant, k):
    """Per-query loop: rank by (distance, index), hit when a relevant item is among the first k."""
    hits = []
    for d, r in zip(dist, relevant):
        order = sorted(range(len(d)), key=lambda j: (d[j], j))
        hits.append(float(any(r[j] for j in order[:k])))
    return float(np.mean(hits))


def reference_by_enumeration(dist, relevant, k):
    """Average over every order of the tied items (each group permuted independently, all orders equally likely)."""
    values = []
    for d, r in zip(dist, relevant):
        groups = [np.flatnonzero(d == v) for v in np.unique(d)]
        orders = list(itertools.product(*(itertools.permutations(g) for g in groups)))
        hit = sum(any(r[j] for j in np.concatenate([np.asarray(p) for p in perm])[:k]) for perm in orders)
        values.append(hit / len(orders))
    return float(np.mean(values))


@pytest.mark.parametrize("kernel", ["auto", "numpy"])
@pytest.mark.parametrize("seed", range(12))
def test_both_forms_equal_per_query_references_on_tiny_cases(seed, kernel, monkeypatch):
    if kernel == "numpy":  # the kernel a machine without numba uses
        from utils.retrieval import counting

        monkeypatch.setattr(counting, "_numba_module", lambda: None)
    rng = np.random.default_rng(seed)
    bits = int(rng.integers(2, 5))
    q = rng.choice([-1, 1], size=(5, bits))
    db = rng.choice([-1, 1], size=(7, bits))
    q_ids, db_ids = rng.integers(0, 3, 5), rng.integers(0, 3, 7)  # several relevant items per query, some none
    dist, relevant = hamming(q, db), q_ids[:, None] == db_ids[None, :]
    result = recall_at(q, db, q_ids, db_ids, ks=(1, 2, 3, 5, 7))
    for k in (1, 2, 3, 5, 7):
        assert result["index"][k] == pytest.approx(reference_by_index(dist, relevant, k), abs=1e-12)
        assert result["tie_aware"][k] == pytest.approx(reference_by_enumeration(dist, relevant, k), abs=1e-12)
    assert result["no_relevant"] == int((~relevant.any(axis=1)).sum())


def test_one_relevant_item_is_the_clamp_formula():
    t = np.arange(1, 9)[:, None]
    a = np.arange(0, 6)[None, :]
    for k in (1, 5, 10):
        expected = np.clip((k - a) / t, 0, 1)
        assert np.allclose(hit_probability(k - a, t, np.ones_like(t)), expected)


def test_several_relevant_items_among_ties_closed_form():
    # 2 relevant among 4 tied, none ahead: P(first within 1) = 1/2, within 2 = 1 - C(2,2)/C(4,2) = 5/6
    assert hit_probability(1, 4, 2) == pytest.approx(0.5)
    assert hit_probability(2, 4, 2) == pytest.approx(5 / 6)
    assert hit_probability(3, 4, 2) == pytest.approx(1.0)
    assert hit_probability(0, 4, 2) == 0.0


def test_all_codes_equal_tie_aware_is_k_over_n_and_index_order_decides_the_other():
    n = 20
    img = np.ones((n, 8))
    txt = np.ones((2 * n, 8))
    owner = np.repeat(np.arange(n), 2)
    out = instance_recall(img, txt, owner)
    # T->I: one relevant image among n tied: K / n; I->T: 2 of 2n tied captions
    assert out["tie_aware"]["t2i"]["r@1"] == pytest.approx(100 / n)
    assert out["tie_aware"]["t2i"]["r@5"] == pytest.approx(500 / n)
    assert out["tie_aware"]["i2t"]["r@1"] == pytest.approx(100 * 2 / (2 * n))
    # by index every query sees database item 0 first: only image 0 and its captions hit at 1
    assert out["index"]["t2i"]["r@1"] == pytest.approx(100 * 2 / (2 * n))
    assert out["index"]["i2t"]["r@1"] == pytest.approx(100 / n)
    assert out["index"]["mr"] == pytest.approx(np.mean([v for d in ("i2t", "t2i") for v in out["index"][d].values()]))


def test_distinct_codes_give_perfect_recall_in_both_forms():
    rng = np.random.default_rng(3)
    codes = np.unique(rng.choice([-1, 1], size=(64, 16)), axis=0)[:30]
    counts = rng.integers(1, 4, len(codes))  # ragged captions
    owner = np.repeat(np.arange(len(codes)), counts)
    out = instance_recall(codes, codes[owner], owner)
    for form in ("index", "tie_aware"):
        assert out[form]["mr"] == pytest.approx(100.0)
    assert out["n_captions"] == counts.sum()


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(5)
    img = rng.choice([-1, 1], size=(40, 6))
    owner = np.repeat(np.arange(40), 3)
    txt = np.where(rng.random((120, 6)) < 0.2, -img[owner], img[owner])
    whole = instance_recall(img, txt, owner)
    small = instance_recall(img, txt, owner, memory_gb=1e-6)  # one query per chunk
    assert whole == small


def test_bad_caption_owners_are_one_line():
    with pytest.raises(DUCHError, match="caption-to-image rows must lie in 0..1"):
        instance_recall(np.ones((2, 4)), np.ones((3, 4)), [0, 1, 2])
    with pytest.raises(DUCHError, match="3 caption codes but 2"):
        instance_recall(np.ones((2, 4)), np.ones((3, 4)), [0, 1])
