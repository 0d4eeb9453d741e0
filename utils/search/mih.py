"""Exact Hamming k-NN without a linear scan: multi-index hashing over packed codes (``mih_kernels``).

``MultiIndex.build`` splits every code into m substrings (m about bits / log2(n), each at most
MAX_SUBSTRING_BITS long) and keeps, per substring, the rows grouped by its value as two arrays: the row
ids, packed ceil(log2 n) bits each (27 bits at 100M rows), and the first slot of each value (2^L + 1 per
table). Both are plain ``.npy`` files that open memory-mapped, so an index
of any size opens at once. ``search`` gives the same (distance, row) lists as a linear scan (ties by
row); a query whose search radius would cost more than a scan of the rows is scanned instead (uniform
random codes of few rows, far queries), so it is never much slower than the flat index.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from utils.errors import DUCHError
from utils.retrieval.hamming import code_words  # noqa: F401 (the word view the kernels take, named here for callers)

MAX_SUBSTRING_BITS = 24  # a table's offsets: 2^24 + 1 entries at most (64 MiB)
# a query gives up on the tables once it would probe more than n / PROBE_SHARE buckets or verify more than
# n / CANDIDATE_SHARE rows: a linear scan of the rows then costs less (benchmarks/bench_search.py)
PROBE_SHARE = 64
CANDIDATE_SHARE = 16
FILE_KEYS = ("mih_ids", "mih_offsets")


def substring_plan(code_bits: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the m substrings: m = bits / log2 n rounded up (a table has no more buckets than
    rows), at least bits / MAX_SUBSTRING_BITS; lengths as equal as they can be."""
    m = max(math.ceil(code_bits / min(max(math.log2(max(n, 2)), 1.0), MAX_SUBSTRING_BITS)), 1)
    m = min(m, code_bits)
    lengths = np.array([code_bits // m + (1 if j < code_bits % m else 0) for j in range(m)], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return starts, lengths


def _numba_kernels():
    try:
        from utils.search import mih_kernels
    except ImportError as err:  # numba missing
        raise DUCHError(f"the multi-index (--index-type mih) needs numba ({err}); pip install numba, or use "
                        f"--index-type flat") from None
    return mih_kernels


def id_bits(n: int) -> int:
    """Bits of a packed row id: enough for rows 0..n-1."""
    return max(1, int(n - 1).bit_length())


@dataclass
class MultiIndex:
    """The tables of one set of codes (see the module's docstring): ``ids`` (m, words) holds each table's row ids
    packed ``width`` bits each; ``offsets`` the first slot of every value of every table, table j's values from
    ``bases[j]`` on (2^length_j + 1 entries each)."""

    starts: np.ndarray
    lengths: np.ndarray
    width: int
    ids: np.ndarray
    offsets: np.ndarray
    rows: int

    @property
    def bases(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum((1 << self.lengths) + 1)[:-1]]).astype(np.int64)

    @classmethod
    def build(cls, words: np.ndarray, code_bits: int | None = None) -> "MultiIndex":
        """Tables over ``words`` (n, W): one counting sort per substring, O(n) each."""
        kernels = _numba_kernels()
        n = len(words)
        starts, lengths = substring_plan(code_bits or 64 * words.shape[1], n)
        width = id_bits(n)
        ids = np.zeros((len(starts), -(-n * width // 64) + 1), np.uint64)
        offsets = np.zeros(int(((1 << lengths) + 1).sum()), np.uint32 if n < 2**32 else np.int64)
        keys = np.empty(n, np.uint64)
        base = 0
        for j, (start, length) in enumerate(zip(starts, lengths)):
            size = (1 << int(length)) + 1
            table = offsets[base:base + size]
            kernels.substring_keys(words, start, length, keys)
            table[1:] = np.cumsum(np.bincount(keys.astype(np.int64), minlength=size - 1))
            kernels.fill_bucket_ids(keys, table, ids[j], width)
            base += size
        return cls(starts, lengths, width, ids, offsets, n)

    def to_json(self) -> dict:
        return {"substrings": len(self.starts), "lengths": self.lengths.tolist(), "starts": self.starts.tolist(),
                "id_bits": self.width, "rows": self.rows}

    def save(self, paths: dict) -> None:
        """``paths``: {"mih_ids": Path, "mih_offsets": Path}; each written atomically."""
        from utils.io import write_npy

        for key, array in (("mih_ids", self.ids), ("mih_offsets", self.offsets)):
            write_npy(paths[key], array)

    @classmethod
    def load(cls, paths: dict, record: dict, n: int) -> "MultiIndex":
        """Tables saved by ``save``, memory-mapped; ``record``: the ``to_json`` of the manifest."""
        from utils.io import read_npy

        ids = read_npy(paths["mih_ids"], "multi-index ids", mmap=True)
        offsets = read_npy(paths["mih_offsets"], "multi-index offsets", mmap=True)
        starts = np.asarray(record["starts"], np.int64)
        lengths = np.asarray(record["lengths"], np.int64)
        width = int(record["id_bits"])
        fits = (int(record["rows"]) == n and width == id_bits(n) and ids.dtype == np.uint64
                and ids.shape == (len(starts), -(-n * width // 64) + 1)
                and offsets.ndim == 1 and len(offsets) == int(((1 << lengths) + 1).sum()))
        if not fits:
            raise DUCHError(f"{paths['mih_ids']}: the multi-index tables do not fit {n} codes; rebuild the index "
                            f"with --overwrite")
        return cls(starts, lengths, width, ids, offsets, n)

    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.offsets.nbytes)


def search_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def exact_topk(words: np.ndarray, queries: np.ndarray, k: int, tables: MultiIndex | None = None,
               removed: np.ndarray | None = None, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(distances int32, rows int64), each (n_queries, k), ordered by (distance, row); -1 rows (and distance
    -1) where fewer than k rows exist. ``words``/``queries``: ``code_words`` of the codes and the queries.
    ``tables``: multi-index of ``words`` (None: linear scan). ``removed``: uint8 per row, 1 = left out."""
    from utils.retrieval.counting import run_on_threads

    kernels = _numba_kernels()
    n_q = len(queries)
    k = int(k)
    out_d = np.full((n_q, k), -1, np.int64)
    out_r = np.full((n_q, k), -1, np.int64)
    out_n = np.zeros(n_q, np.int64)
    if n_q == 0 or k == 0:
        return out_d.astype(np.int32), out_r
    has_removed = removed is not None
    removed = np.ascontiguousarray(removed, np.uint8) if has_removed else np.zeros(1, np.uint8)
    queries = np.ascontiguousarray(queries, np.uint64)
    n = len(words)

    budget_probes, budget_candidates = int(max(n // PROBE_SHARE, 64)), int(max(n // CANDIDATE_SHARE, 1024))
    bases = tables.bases if tables is not None else None

    def run(a: int, b: int) -> None:
        if tables is not None:
            kernels.mih_search(words, queries, a, b, k, tables.starts, tables.lengths, tables.ids, tables.width,
                               tables.offsets, bases, removed, has_removed, budget_probes, budget_candidates,
                               out_d, out_r, out_n)
            for i in np.flatnonzero(out_n[a:b] == kernels.GIVE_UP) + a:
                kernels.scan_search(words, queries, i, i + 1, k, removed, has_removed, out_d, out_r, out_n)
        else:
            kernels.scan_search(words, queries, a, b, k, removed, has_removed, out_d, out_r, out_n)

    threads = min(threads or search_threads(), n_q)
    bounds = [n_q * i // threads for i in range(threads + 1)]
    run_on_threads(run, [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b], threads)
    return out_d.astype(np.int32), out_r  # the kernels fill the first out_n places of a row; the rest stay -1


def compile_kernels() -> None:
    """Compile the kernels into numba's on-disk cache (or load them from it): about 15 s once after an install."""
    rng = np.random.default_rng(0)
    words = code_words(rng.integers(0, 256, (64, 8), dtype=np.uint8))
    tables = MultiIndex.build(words, 64)
    exact_topk(words, words[:2], 3, tables, threads=1)
    exact_topk(words, words[:2], 3, None, np.zeros(64, np.uint8), threads=1)
