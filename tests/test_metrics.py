"""The counting engine against straightforward per-query reference loops (the definitions, written plainly)."""
import importlib.util

import numpy as np
import pytest
import torch

from utils.errors import DUCHError
from utils.retrieval.codes import pack_codes
from utils.retrieval.hamming import as_code_words, hamming_distances
from utils.retrieval.metrics import P_AT_K_CUTOFFS, as_labels, retrieval_metrics

HAS_NUMBA = importlib.util.find_spec("numba") is not None
KERNELS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed"))]


# ---- reference: one query at a time, a stable sort of the distances, the definitions as written ------------
def reference_metrics(q, d, ql, dl, map_ks=(20, 10)):
    """q, d: ±1 codes; ql, dl: class codes (1-D) or multi-hot rows (2-D)."""
    bits, n_q, n_db = q.shape[1], len(q), len(d)
    ap = {k: [] for k in map_ks}
    cut = {k: [] for k in map_ks}
    tie = []
    pk = {k: [] for k in sorted({min(k, n_db) for k in P_AT_K_CUTOFFS})}
    prec, rec, chance = [], [], []
    for i in range(n_q):
        dist = np.array([np.sum(q[i] != d[j]) for j in range(n_db)])
        if ql.ndim == 1:
            rel = np.array([ql[i] == dl[j] for j in range(n_db)], float)
        else:
            rel = np.array([np.any((ql[i] > 0) & (dl[j] > 0)) for j in range(n_db)], float)
        chance.append(rel.mean())
        r = int(rel.sum())
        ranked = rel[np.argsort(dist, kind="stable")]
        positions = np.flatnonzero(ranked) + 1.0
        for k in map_ks:
            m = min(k, r)
            ap[k].append(np.mean(np.arange(1, m + 1) / positions[:m]) if m > 0 else 0.0)
            in_cut = positions[positions <= k]
            cut[k].append(np.mean(np.arange(1, len(in_cut) + 1) / in_cut) if len(in_cut) else 0.0)
        tie.append(tie_aware_reference(dist, rel))
        for k in pk:
            pk[k].append(ranked[:k].sum() / k)
        p_row, r_row = [], []
        for radius in range(bits + 1):
            within = dist <= radius
            p_row.append(rel[within].sum() / within.sum() if within.any() else 0.0)
            r_row.append(rel[within].sum() / r if r > 0 else 0.0)
        prec.append(p_row)
        rec.append(r_row)
    out = {f"map@{k}": np.mean(v) for k, v in ap.items()}
    out.update({f"map_cut@{k}": np.mean(v) for k, v in cut.items()})
    out["map_tie_aware"] = np.mean(tie)
    out["chance"] = np.mean(chance)
    out["p@k"] = {str(k): np.mean(v) for k, v in pk.items()}
    out["precision_radius"] = np.mean(prec, axis=0)
    out["recall_radius"] = np.mean(rec, axis=0)
    return out


def tie_aware_reference(dist, rel):
    """Expected AP over random orders within each distance, summed position by position: in a group of n
    items (r relevant; n0 items and r0 relevant before it) a relevant item at position j has on average
    (j - 1)(r - 1)/(n - 1) relevant items of its group before it."""
    total, n0, r0 = 0.0, 0, 0
    for d in sorted(set(dist.tolist())):
        n, r = int((dist == d).sum()), int(rel[dist == d].sum())
        if r:
            c = (r - 1) / (n - 1) if n > 1 else 0.0
            total += r * np.mean([(r0 + 1 + (j - 1) * c) / (n0 + j) for j in range(1, n + 1)])
        n0, r0 = n0 + n, r0 + r
    return total / r0 if r0 else 0.0


def assert_same(got, want, tol=1e-9):
    assert set(got) == set(want)
    for key, value in want.items():
        if key == "p@k":
            assert list(got[key]) == list(value)
            for k in value:
                assert got[key][k] == pytest.approx(value[k], abs=tol), (key, k)
        elif key in ("precision_radius", "recall_radius"):
            assert np.allclose(got[key], value, atol=tol, rtol=0), key
        else:
            assert got[key] == pytest.approx(value, abs=tol), key


def random_codes(rng, n, bits, distinct=None):
    """±1 codes; with ``distinct``, rows are drawn from that many codes (many ties)."""
    pool = np.where(rng.random((distinct or n, bits)) > 0.5, 1, -1).astype(np.int8)
    return pool[rng.integers(0, len(pool), n)] if distinct else pool


CASES = [  # bits, queries, database items, classes, distinct codes
    (12, 30, 200, 5, 8),
    (24, 40, 300, 7, None),
    (64, 25, 150, 3, 6),
    (100, 20, 120, 4, None),  # two 64-bit words
    (4, 15, 60, 3, None),
    (130, 10, 90, 4, 5),  # three words: numpy kernel
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bits,n_q,n_db,n_cls,distinct", CASES)
def test_class_labels_match_reference(kernel, bits, n_q, n_db, n_cls, distinct):
    if kernel == "numba" and bits > 128:
        pytest.skip("the numba kernel takes up to 128 bits")
    rng = np.random.default_rng(bits)
    q, d = random_codes(rng, n_q, bits, distinct), random_codes(rng, n_db, bits, distinct)
    ql, dl = rng.integers(0, n_cls, n_q), rng.integers(0, n_cls, n_db)
    ql[0] = n_cls + 5  # a query with no relevant item (R = 0) counts as 0
    got = retrieval_metrics(q, d, ql, dl, map_ks=(20, 10, 1, 1000), kernel=kernel)
    assert_same(got, reference_metrics(q, d, ql, dl, map_ks=(20, 10, 1, 1000)))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n_labels", [5, 70])  # one label word, and two (the numpy kernel)
def test_multi_hot_labels_match_reference(kernel, n_labels):
    if kernel == "numba" and n_labels > 64:
        pytest.skip("the numba kernel takes up to 64 labels")
    rng = np.random.default_rng(n_labels)
    q, d = random_codes(rng, 30, 24, 10), random_codes(rng, 160, 24, 10)
    ql = (rng.random((30, n_labels)) < 1.5 / n_labels).astype(np.int64)
    dl = (rng.random((160, n_labels)) < 1.5 / n_labels).astype(np.int64)
    ql[0] = 0  # a query without labels: R = 0
    dl[:5] = 0
    got = retrieval_metrics(q, d, ql, dl, kernel=kernel)
    assert_same(got, reference_metrics(q, d, ql, dl))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n_q,n_db", [(1, 50), (20, 1), (7, 15)])  # Q = 1, N = 1, N < K
def test_edge_sizes_match_reference(kernel, n_q, n_db):
    rng = np.random.default_rng(n_q * 100 + n_db)
    q, d = random_codes(rng, n_q, 12), random_codes(rng, n_db, 12)
    ql, dl = rng.integers(0, 2, n_q), rng.integers(0, 2, n_db)
    got = retrieval_metrics(q, d, ql, dl, kernel=kernel)
    assert_same(got, reference_metrics(q, d, ql, dl))
    assert max(int(k) for k in got["p@k"]) == min(n_db, 1000)  # K capped at the database size


@pytest.mark.parametrize("kernel", KERNELS)
def test_map_is_not_cut_at_k(kernel):
    # one query; item t has its first t // 5 bits flipped, so ranks follow database order; relevant
    # items at ranks 1 and 30 of 40: with K = 20, m = min(20, 2) = 2 -> AP = (1/1 + 2/30) / 2
    q = np.ones((1, 8), np.int8)
    d = np.ones((40, 8), np.int8)
    for t in range(40):
        d[t, : t // 5] = -1
    dl = np.zeros(40, np.int64)
    dl[[0, 29]] = 1
    got = retrieval_metrics(q, d, np.array([1]), dl, map_ks=(20,), kernel=kernel)
    assert got["map@20"] == pytest.approx((1 + 2 / 30) / 2)


@pytest.mark.parametrize("kernel", KERNELS)
def test_ties_broken_by_database_order(kernel):
    q = np.array([[1, 1]])
    db = np.array([[1, 1], [1, 1], [-1, -1]])
    # the first two items tie at distance 0; only the second is relevant -> rank 2 -> AP = 1/2
    assert retrieval_metrics(q, db, np.array([1]), np.array([0, 1, 1]), map_ks=(1,),
                             kernel=kernel)["map@1"] == pytest.approx(0.5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_perfect_codes_and_chance(kernel):
    labels = np.repeat(np.arange(4), 5)
    codes = random_codes(np.random.default_rng(0), 4, 16)[labels]
    out = retrieval_metrics(codes, codes, labels, labels, kernel=kernel)
    assert out["map@20"] == pytest.approx(1.0) and out["map@10"] == pytest.approx(1.0)
    assert out["chance"] == pytest.approx(0.25)
    assert set(out["p@k"]) == {str(min(k, 20)) for k in P_AT_K_CUTOFFS}
    assert len(out["precision_radius"]) == 17 and out["recall_radius"][16] == pytest.approx(1.0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("with_curves", [True, False])
def test_everything_at_distance_zero(kernel, with_curves):
    # every database item equals every query: all that the second pass must visit lies at distance 0
    rng = np.random.default_rng(5)
    code = random_codes(rng, 1, 16)
    q, d = np.repeat(code, 3, axis=0), np.repeat(code, 12, axis=0)
    ql, dl = np.array([0, 1, 2]), rng.integers(0, 3, 12)
    dl[:3] = [0, 1, 2]  # every query has a relevant item
    got = retrieval_metrics(q, d, ql, dl, with_curves=with_curves, kernel=kernel)
    want = reference_metrics(q, d, ql, dl)
    if not with_curves:
        want = {k: v for k, v in want.items() if k.startswith("map") or k == "chance"}
    assert_same(got, want)
    assert got["map@20"] < 1  # ties in database order: not every relevant item comes first


def test_code_forms_give_the_same_metrics():
    rng = np.random.default_rng(5)
    q, d = random_codes(rng, 12, 24, 4), random_codes(rng, 70, 24, 4)
    ql, dl = rng.integers(0, 3, 12), rng.integers(0, 3, 70)
    want = retrieval_metrics(q, d, ql, dl)
    forms = [
        (q.astype(np.float32), d.astype(np.float64), None),  # ±1 floats
        ((q > 0).astype(np.uint8), (d > 0).astype(np.int32), None),  # 0/1
        (q > 0, d > 0, None),  # booleans
        (pack_codes(q), pack_codes(d), 24),  # packed
        (torch.tensor(q), torch.tensor(d, dtype=torch.float32), None),  # tensors
    ]
    for fq, fd, bits in forms:
        assert retrieval_metrics(fq, fd, torch.tensor(ql), dl, bits=bits) == want
    one_hot = np.eye(3, dtype=np.int64)
    assert retrieval_metrics(q, d, one_hot[ql], one_hot[dl]) == want  # one-hot rows = class codes


def test_packed_padding_bits_are_ignored():
    rng = np.random.default_rng(2)
    q, d = random_codes(rng, 5, 12), random_codes(rng, 30, 12)
    packed_q, packed_d = pack_codes(q), pack_codes(d)
    packed_d[:, -1] |= 0x0F  # the 4 bits past bit 12
    assert retrieval_metrics(packed_q, packed_d, np.zeros(5), np.zeros(30),
                             bits=12) == retrieval_metrics(q, d, np.zeros(5), np.zeros(30))


@pytest.mark.parametrize("kernel", KERNELS)
def test_chunks_do_not_change_the_result(kernel):
    rng = np.random.default_rng(9)
    q, d = random_codes(rng, 37, 16, 12), random_codes(rng, 400, 16, 12)
    ql, dl = rng.integers(0, 4, 37), rng.integers(0, 4, 400)
    whole = retrieval_metrics(q, d, ql, dl, kernel=kernel)
    chunked = retrieval_metrics(q, d, ql, dl, kernel=kernel, memory_gb=400 * 20 * 3 / 2**30)  # 3 queries at a time
    assert_same(chunked, whole, tol=1e-12)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("threads", [2, 3, 64])
def test_threads_share_the_queries_without_changing_the_result(monkeypatch, threads):
    """The compiled kernels run on threads over query ranges: every query in exactly one range, whole tiles
    of 8, and the same values as one thread and as the reference loops (59 queries: 8 tiles, the last one short)."""
    import numba

    from utils.retrieval.counting import _query_ranges

    for n_q in (1, 8, 9, 59, 1000):
        ranges = _query_ranges(n_q, threads)
        assert [i for a, b in ranges for i in range(a, b)] == list(range(n_q))
        assert all(a % 8 == 0 for a, _ in ranges) and len(ranges) == min(-(-n_q // 8), 16 * threads)
    rng = np.random.default_rng(threads)
    q, d = random_codes(rng, 59, 64), random_codes(rng, 300, 64)
    ql, dl = rng.integers(0, 4, 59), rng.integers(0, 4, 300)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    one = retrieval_metrics(q, d, ql, dl, kernel="numba")
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", threads)
    assert_same(retrieval_metrics(q, d, ql, dl, kernel="numba"), one, tol=0)
    assert_same(one, reference_metrics(q, d, ql, dl), tol=1e-12)


def test_hamming_distances_count_differing_bits():
    q = np.array([[1, -1, 1, 1]])
    d = np.array([[1, -1, 1, 1], [-1, 1, -1, -1], [1, 1, 1, 1]])
    assert hamming_distances(as_code_words(q), as_code_words(d)).tolist() == [[0, 4, 1]]


@pytest.mark.parametrize(
    "q,d,ql,dl,kwargs,message",
    [
        (np.ones((2, 8)), np.ones((3, 16)), np.zeros(2), np.zeros(3), {}, "8 bits but database codes have 16"),
        (np.ones((2, 8)), np.ones((3, 8)), np.zeros(2), np.zeros(4), {}, "database labels have 4 rows"),
        (np.ones((2, 8)), np.ones((3, 8)), np.zeros(3), np.zeros(3), {}, "query labels have 3 rows"),
        (np.full((2, 8), np.nan), np.ones((3, 8)), np.zeros(2), np.zeros(3), {}, "NaN"),
        (np.full((2, 8), 2.0), np.ones((3, 8)), np.zeros(2), np.zeros(3), {}, "the value 2.0"),
        (np.array([[1, 0, -1, 1]]), np.ones((3, 4)), np.zeros(1), np.zeros(3), {}, "both -1 and 0"),
        (np.ones((0, 8)), np.ones((3, 8)), np.zeros(0), np.zeros(3), {}, "empty"),
        (np.ones((2, 8)), np.ones((3, 8)), np.zeros(2), np.zeros(3), {"map_ks": (0,)}, "at least 1"),
        (np.ones((2, 8)), np.ones((3, 8)), np.zeros(2), np.zeros((3, 4)), {}, "class codes"),
        (np.ones((2, 8)), np.ones((3, 8)), np.zeros((2, 4)), np.full((3, 4), 3), {}, "only 0 and 1"),
        (np.ones((2, 8)), np.ones((3, 8)), np.array([0.0, np.nan]), np.zeros(3), {}, "NaN"),
        (np.ones((2, 3), np.uint8), np.ones((3, 3), np.uint8), np.zeros(2), np.zeros(3), {"bits": 12},
         "3 bytes per row"),
        (np.ones((2, 8)), np.ones((3, 8)), np.zeros(2), np.zeros(3), {"memory_gb": 0}, "--memory-gb"),
    ],
)
def test_bad_input_is_refused(q, d, ql, dl, kwargs, message):
    with pytest.raises(DUCHError, match=message):
        retrieval_metrics(q, d, ql, dl, **kwargs)


def test_one_hot_rows_become_class_codes():
    labels = as_labels(np.eye(3, dtype=np.int64)[[2, 0, 1]])
    assert labels.classes.tolist() == [2, 0, 1] and labels.n_labels == 3
    assert as_labels(np.array([[1, 1, 0], [0, 0, 1]])).classes is None


@pytest.mark.parametrize("kernel", KERNELS)
def test_working_memory_stays_under_the_budget(kernel):
    """tracemalloc peak of one direction (packing, counts, chunks) under --memory-gb, with N 50 x the chunk."""
    import tracemalloc

    rng = np.random.default_rng(4)
    q, d = random_codes(rng, 60, 64, 30), random_codes(rng, 20_000, 64, 30)
    ql, dl = rng.integers(0, 6, 60), rng.integers(0, 6, 20_000)
    budget_gb = 8 / 1024  # 8 MB: the numpy kernel takes 20 queries at a time (20 bytes per pair)
    whole = retrieval_metrics(q, d, ql, dl, kernel=kernel)
    tracemalloc.start()
    got = retrieval_metrics(q, d, ql, dl, kernel=kernel, memory_gb=budget_gb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < budget_gb * 2**30
    assert_same(got, whole, tol=1e-12)


def test_without_numba_the_numpy_kernel_is_used(monkeypatch):
    from utils.retrieval import counting as metrics

    rng = np.random.default_rng(6)
    q, d = random_codes(rng, 8, 16), random_codes(rng, 40, 16)
    ql, dl = rng.integers(0, 3, 8), rng.integers(0, 3, 40)
    want = retrieval_metrics(q, d, ql, dl)
    monkeypatch.setattr(metrics, "_numba_module", lambda: None)
    assert metrics.resolve_kernel("auto", as_code_words(q), ql) == "numpy"
    assert_same(retrieval_metrics(q, d, ql, dl), want)
    with pytest.raises(DUCHError, match="numba"):
        retrieval_metrics(q, d, ql, dl, kernel="numba")


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("bits,multi_hot", [(64, False), (128, False), (32, True)])
def test_kernels_agree_on_class_structured_codes(bits, multi_hot):
    """Larger than the reference loops allow: the two kernels on clustered codes (d_max inside the clusters)."""
    rng = np.random.default_rng(bits)
    centres = random_codes(rng, 12, bits)
    ql, dl = rng.integers(0, 12, 150), rng.integers(0, 12, 4000)
    q, d = centres[ql].copy(), centres[dl].copy()
    q[rng.random(q.shape) < 0.15] *= -1
    d[rng.random(d.shape) < 0.2] *= -1
    if multi_hot:
        ql, dl = np.eye(12, dtype=np.int64)[ql], np.eye(12, dtype=np.int64)[dl]
        dl[rng.random(dl.shape) < 0.05] = 1  # some items carry extra labels
    fast = retrieval_metrics(q, d, ql, dl, map_ks=(20, 10, 100), kernel="numba")
    assert_same(fast, retrieval_metrics(q, d, ql, dl, map_ks=(20, 10, 100), kernel="numpy"), tol=1e-12)
    assert fast["map@20"] > 0.9  # clustered: the second pass visits only a cluster's near part
