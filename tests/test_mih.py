"""Exact Hamming k-NN by multi-index hashing and by the counting scan (utils/search/mih.py) against brute force:
random, class-structured and duplicated codes, 8 to 128 bits, k from 1 to 1000, removed rows, ties by row."""
import numpy as np
import pytest

from utils.search import mih
from utils.search.mih import MultiIndex, code_words, exact_topk, substring_plan


def brute_force(codes: np.ndarray, queries: np.ndarray, k: int, removed=None):
    """(distances, rows) of every query by (distance, row), removed rows left out."""
    out = []
    keep = np.arange(len(codes)) if removed is None else np.flatnonzero(removed == 0)
    for q in queries:
        d = np.bitwise_count(codes[keep] ^ q).sum(axis=1)
        order = np.lexsort((keep, d))[:k]
        out.append((d[order], keep[order]))
    return out


def make_codes(kind: str, n: int, n_bytes: int, rng) -> np.ndarray:
    if kind == "uniform":
        return rng.integers(0, 256, (n, n_bytes), dtype=np.uint8)
    if kind == "classes":  # cluster centres with 1/8 of the bits flipped, as trained codes of classes
        centres = rng.integers(0, 256, (7, n_bytes), dtype=np.uint8)
        flips = rng.integers(0, 256, (3, n, n_bytes), dtype=np.uint8)
        return centres[rng.integers(0, 7, n)] ^ (flips[0] & flips[1] & flips[2])
    return np.repeat(rng.integers(0, 256, (max(1, n // 50), n_bytes), dtype=np.uint8), 50, axis=0)[:n]  # duplicates


def assert_exact(codes, queries, k, tables, removed=None):
    distances, rows = exact_topk(code_words(codes), code_words(queries), k, tables, removed)
    for i, (d, r) in enumerate(brute_force(codes, queries, k, removed)):
        assert rows[i, :len(r)].tolist() == r.tolist()
        assert distances[i, :len(d)].tolist() == d.tolist()
        assert (rows[i, len(r):] == -1).all()


@pytest.mark.parametrize("bits", [8, 16, 24, 64, 128])
@pytest.mark.parametrize("kind", ["uniform", "classes", "duplicates"])
def test_multi_index_equals_brute_force(bits, kind, monkeypatch):
    rng = np.random.default_rng(bits)
    codes = make_codes(kind, 3000, bits // 8, rng)
    queries = np.concatenate([codes[:4], make_codes("uniform", 4, bits // 8, rng)])  # stored codes and far ones
    tables = MultiIndex.build(code_words(codes), bits)
    removed = (rng.random(len(codes)) < 0.2).astype(np.uint8)
    for k in (1, 10, 1000):
        assert_exact(codes, queries, k, None)  # the counting scan
        assert_exact(codes, queries, k, None, removed)
        assert_exact(codes, queries, k, tables)
        assert_exact(codes, queries, k, tables, removed)
    # without the give-up rule every query walks the radii to the end, and is still exact
    monkeypatch.setattr(mih, "PROBE_SHARE", 1e-12)
    monkeypatch.setattr(mih, "CANDIDATE_SHARE", 1e-12)
    for k in (1, 10, 1000):
        assert_exact(codes, queries, k, tables)
        assert_exact(codes, queries, k, tables, removed)


def test_more_rows_asked_than_exist_and_empty_tables():
    rng = np.random.default_rng(0)
    codes = make_codes("uniform", 5, 8, rng)
    tables = MultiIndex.build(code_words(codes), 64)
    distances, rows = exact_topk(code_words(codes), code_words(codes[:2]), 9, tables)
    assert (rows[:, :5] >= 0).all() and (rows[:, 5:] == -1).all() and (distances[:, 5:] == -1).all()
    everything_removed = np.ones(5, np.uint8)
    assert (exact_topk(code_words(codes), code_words(codes[:1]), 3, tables, everything_removed)[1] == -1).all()
    empty = np.zeros((0, 8), np.uint8)
    empty_tables = MultiIndex.build(code_words(empty), 64)
    assert exact_topk(code_words(empty), code_words(codes[:1]), 3, empty_tables)[1].tolist() == [[-1, -1, -1]]


def test_substring_plan_follows_the_size():
    """m about bits / log2(n), no table longer than MAX_SUBSTRING_BITS, the lengths covering every bit once."""
    for bits, n, m in ((64, 1_000_000, 4), (64, 10_000_000, 3), (64, 100_000_000, 3), (128, 100_000_000, 6),
                       (16, 100, 3), (8, 10, 3)):
        starts, lengths = substring_plan(bits, n)
        assert len(lengths) == m and lengths.sum() == bits and lengths.max() - lengths.min() <= 1
        assert lengths.max() <= mih.MAX_SUBSTRING_BITS and starts.tolist() == [0, *np.cumsum(lengths)[:-1].tolist()]


def test_tables_round_trip_memory_mapped(tmp_path):
    rng = np.random.default_rng(1)
    codes = make_codes("classes", 500, 8, rng)
    tables = MultiIndex.build(code_words(codes), 64)
    paths = {key: tmp_path / f"{key}.npy" for key in mih.FILE_KEYS}
    tables.save(paths)
    loaded = MultiIndex.load(paths, tables.to_json(), len(codes))
    assert isinstance(loaded.ids, np.memmap) and isinstance(loaded.offsets, np.memmap)
    assert_exact(codes, codes[:5], 20, loaded)
    from utils.errors import DUCHError

    with pytest.raises(DUCHError, match="do not fit 499 codes"):
        MultiIndex.load(paths, tables.to_json(), len(codes) - 1)


def test_automatic_choice_follows_the_size():
    from utils.search.segments import MIH_MIN_ROWS, resolve_index_type

    assert resolve_index_type("auto", MIH_MIN_ROWS - 1) == "flat"
    assert resolve_index_type("auto", MIH_MIN_ROWS) == "mih"
    assert resolve_index_type("ivf", 10) == "ivf" and resolve_index_type("mih", 10) == "mih"
