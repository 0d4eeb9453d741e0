"""Compiled (numba) kernels of the counting engine: codes of up to 128 bits, one label word per item.

Imported only by ``utils.retrieval.metrics`` when numba is installed. Two passes over the database
for each query, both O(N) with O(bits) state, distances from XOR + popcount of 64-bit words:

- ``count_pairs``: histogram of (distance, relevant) pairs, 8 queries per database sweep so that each
  database word is loaded once for 8 queries and the 8 histograms do not wait on each other;
- ``rank_pass``: items at distance <= dmax (a few per query) in database order, with their exact rank
  and relevant rank, for mAP@K (untruncated and cut at K) and P@K; also 4 queries per sweep. Only
  the distances up to the one where rank max(K) falls are resolved; no row is ever sorted.

Codes are word columns ``w0`` (and ``w1`` or None for codes of up to 64 bits). Labels are one
scalar per item: signed int64 class codes (relevant when equal) or uint64 label bit-sets (relevant
when they share a bit). Compiled code is cached on disk (``cache=True``).

The kernels are serial and release the GIL (``nogil``): the caller runs them on Python threads over
contiguous query ranges. numba's own ``parallel=True`` was no faster here, took 1.8 times as long to
compile (27 s against 15 s for three type variants: benchmarks/bench_numba_threads.py) and needed a
threading layer that a forked process survives (tbb); with plain threads there is none.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload


@intrinsic
def _popcount(typingctx, x):
    """The CPU's popcount instruction (LLVM ctpop) on a uint64."""

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


def _distance(a, b, w0, w1, j):  # typed by the overload below
    pass


@overload(_distance, inline="always")
def _distance_impl(a, b, w0, w1, j):
    if w1 is None or isinstance(w1, types.NoneType):
        return lambda a, b, w0, w1, j: np.int64(_popcount(a ^ w0[j]))
    return lambda a, b, w0, w1, j: np.int64(_popcount(a ^ w0[j]) + _popcount(b ^ w1[j]))


def _relevant(lq, lx):  # typed by the overload below
    pass


@overload(_relevant, inline="always")
def _relevant_impl(lq, lx):
    if isinstance(lq, types.Integer) and lq.signed:
        return lambda lq, lx: lq == lx  # class codes
    return lambda lq, lx: (lq & lx) != 0  # label bit-sets


@njit(inline="always")
def _second_word(q1, i):
    if q1 is None:
        return np.uint64(0)
    return q1[i]


@njit(inline="always")
def _tally(h, row, a, b, lq, w0, w1, lx, j):
    h[row + 2 * _distance(a, b, w0, w1, j) + _relevant(lq, lx)] += 1


@njit(nogil=True, cache=True)
def count_pairs(q0, q1, w0, w1, q_labels, db_labels, bits, out):
    """out[i, 2 d + r] = number of database items at distance d from query i, relevant (r = 1) or not.
    8 queries per database sweep (measured: 1.6 -> 1.1 ns per pair over 4 queries per sweep)."""
    n_q, n_db = q0.shape[0], w0.shape[0]
    width = 2 * (bits + 1)
    for t in range((n_q + 7) // 8):
        s = 8 * t
        i0, i1, i2, i3 = s, min(s + 1, n_q - 1), min(s + 2, n_q - 1), min(s + 3, n_q - 1)
        i4, i5, i6, i7 = min(s + 4, n_q - 1), min(s + 5, n_q - 1), min(s + 6, n_q - 1), min(s + 7, n_q - 1)
        a0, a1, a2, a3, a4, a5, a6, a7 = q0[i0], q0[i1], q0[i2], q0[i3], q0[i4], q0[i5], q0[i6], q0[i7]
        b0, b1, b2, b3 = _second_word(q1, i0), _second_word(q1, i1), _second_word(q1, i2), _second_word(q1, i3)
        b4, b5, b6, b7 = _second_word(q1, i4), _second_word(q1, i5), _second_word(q1, i6), _second_word(q1, i7)
        l0, l1, l2, l3 = q_labels[i0], q_labels[i1], q_labels[i2], q_labels[i3]
        l4, l5, l6, l7 = q_labels[i4], q_labels[i5], q_labels[i6], q_labels[i7]
        h = np.zeros(8 * width, np.int32)  # rows past n_q repeat the last query and are dropped
        for j in range(n_db):
            lx = db_labels[j]
            _tally(h, 0, a0, b0, l0, w0, w1, lx, j)
            _tally(h, width, a1, b1, l1, w0, w1, lx, j)
            _tally(h, 2 * width, a2, b2, l2, w0, w1, lx, j)
            _tally(h, 3 * width, a3, b3, l3, w0, w1, lx, j)
            _tally(h, 4 * width, a4, b4, l4, w0, w1, lx, j)
            _tally(h, 5 * width, a5, b5, l5, w0, w1, lx, j)
            _tally(h, 6 * width, a6, b6, l6, w0, w1, lx, j)
            _tally(h, 7 * width, a7, b7, l7, w0, w1, lx, j)
        for a in range(min(8, n_q - s)):
            for b in range(width):
                out[s + a, b] = h[a * width + b]


@njit(inline="always")
def _visit(i, t, d, lx, lq, before_all, before_rel, seen_all, seen_rel, m, map_ks, bin_of_rank, ap_sum, cut_sum,
           cut_hits, hits_bin):
    """One item at distance d <= dmax of query i (slot t of its tile), met in database order."""
    p = before_all[i, d] + seen_all[t, d] + 1  # rank: items closer, then items of this distance before it
    seen_all[t, d] += 1
    if _relevant(lq, lx):
        r = before_rel[i, d] + seen_rel[t, d] + 1  # relevant rank, likewise
        seen_rel[t, d] += 1
        for k in range(m.shape[1]):
            if r <= m[i, k]:
                ap_sum[i, k] += r / p
            if p <= map_ks[k]:  # the list cut at K
                cut_sum[i, k] += r / p
                cut_hits[i, k] += 1
        if p < bin_of_rank.shape[0]:
            hits_bin[i, bin_of_rank[p]] += 1


@njit(nogil=True, cache=True)
def rank_pass(q0, q1, w0, w1, q_labels, db_labels, dmax, before_all, before_rel, m, map_ks, bin_of_rank, ap_sum,
              cut_sum, cut_hits, hits_bin):
    """For items at distance <= dmax[i], in database order: rank p = before_all[d] + (place in bucket d);
    relevant rank r likewise. Adds r / p to ap_sum[i, k] while r <= m[i, k] and, with a count in
    cut_hits[i, k], to cut_sum[i, k] while p <= map_ks[k]; counts relevant items with p < len(bin_of_rank)
    into hits_bin[i, bin_of_rank[p]]. 4 queries per database sweep."""
    n_q, n_db = q0.shape[0], w0.shape[0]
    n_tiles = (n_q + 3) // 4
    for t in range(n_tiles):
        s = 4 * t
        i0, i1, i2, i3 = s, min(s + 1, n_q - 1), min(s + 2, n_q - 1), min(s + 3, n_q - 1)
        a0, a1, a2, a3 = q0[i0], q0[i1], q0[i2], q0[i3]
        b0, b1, b2, b3 = _second_word(q1, i0), _second_word(q1, i1), _second_word(q1, i2), _second_word(q1, i3)
        l0, l1, l2, l3 = q_labels[i0], q_labels[i1], q_labels[i2], q_labels[i3]
        top0 = dmax[i0]  # rows past n_q repeat the last query and visit nothing
        top1 = dmax[i1] if s + 1 < n_q else -1
        top2 = dmax[i2] if s + 2 < n_q else -1
        top3 = dmax[i3] if s + 3 < n_q else -1
        seen_all = np.zeros((4, before_all.shape[1]), np.int64)
        seen_rel = np.zeros((4, before_all.shape[1]), np.int64)
        for j in range(n_db):
            d0, d1 = _distance(a0, b0, w0, w1, j), _distance(a1, b1, w0, w1, j)
            d2, d3 = _distance(a2, b2, w0, w1, j), _distance(a3, b3, w0, w1, j)
            if (d0 <= top0) | (d1 <= top1) | (d2 <= top2) | (d3 <= top3):  # rare: one branch for the four
                lx = db_labels[j]
                if d0 <= top0:
                    _visit(i0, 0, d0, lx, l0, before_all, before_rel, seen_all, seen_rel, m, map_ks, bin_of_rank,
                           ap_sum, cut_sum, cut_hits, hits_bin)
                if d1 <= top1:
                    _visit(i1, 1, d1, lx, l1, before_all, before_rel, seen_all, seen_rel, m, map_ks, bin_of_rank,
                           ap_sum, cut_sum, cut_hits, hits_bin)
                if d2 <= top2:
                    _visit(i2, 2, d2, lx, l2, before_all, before_rel, seen_all, seen_rel, m, map_ks, bin_of_rank,
                           ap_sum, cut_sum, cut_hits, hits_bin)
                if d3 <= top3:
                    _visit(i3, 3, d3, lx, l3, before_all, before_rel, seen_all, seen_rel, m, map_ks, bin_of_rank,
                           ap_sum, cut_sum, cut_hits, hits_bin)
