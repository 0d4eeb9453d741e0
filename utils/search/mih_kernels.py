"""Compiled (numba) kernels of exact Hamming k-NN: multi-index hashing and a counting linear scan.

Codes are rows of 64-bit words (``words[row, w]``, little-endian views of the packed bytes). A substring
is ``length`` consecutive bits from bit ``start`` of that word stream. Multi-index hashing (Norouzi,
Punjani and Fleet, CVPR 2012) keeps, per substring j, every row sorted by its substring value (a bucket
per value: slots ``offsets[bases[j] + v] .. offsets[bases[j] + v + 1]`` of ``ids[j]``, whose row ids are
packed ``width`` bits each). A query probes, for r = 0, 1, ..., the
buckets whose value differs from its own substring in exactly r bits, in every table. After radius r,
every row at full distance below m (r + 1) has been seen (pigeonhole: if each of the m substrings
differed in more than r bits the codes would differ in at least m (r + 1)), so the search stops as
soon as k rows are known and the k-th distance is below that; ties are then resolved by row, as the
flat index orders them. A row met again in another table is counted only where it was met first
(smallest radius, then smallest table), so no set of seen rows is needed.

Both kernels are serial and release the GIL: the caller runs them on Python threads over query ranges.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from utils.retrieval.hamming_numba import _popcount

GIVE_UP = -1  # out_n value of a query whose next radius would cost more than its budget


@njit(inline="always")
def _substring(words, row, start, length):
    w = start >> 6
    s = start & 63
    v = words[row, w] >> np.uint64(s)
    if s + length > 64:
        v |= words[row, w + 1] << np.uint64(64 - s)
    if length == 64:
        return v
    return v & ((np.uint64(1) << np.uint64(length)) - np.uint64(1))


@njit(inline="always")
def _full_distance(words, row, query, qi):
    d = 0
    for w in range(words.shape[1]):
        d += _popcount(words[row, w] ^ query[qi, w])
    return d


@njit(nogil=True, cache=True)
def substring_keys(words, start, length, out):
    """out[row] = the substring value of every row (the tables' sort keys)."""
    for row in range(words.shape[0]):
        out[row] = _substring(words, row, start, length)


@njit(inline="always")
def _get_id(ids, p, width):
    """Slot p of a table of row ids packed ``width`` bits each into 64-bit words (one spare word at the end)."""
    bit = np.int64(p) * np.int64(width)  # int64 throughout: numba would make uint64 x int64 a float
    w = bit >> 6
    s = np.uint64(bit & 63)
    # both words, without a branch (the spare word makes w + 1 safe; two shifts, as a shift by 64 is undefined)
    v = (ids[w] >> s) | ((ids[w + 1] << (np.uint64(63) - s)) << np.uint64(1))
    return np.int64(v & ((np.uint64(1) << np.uint64(width)) - np.uint64(1)))


@njit(nogil=True, cache=True)
def fill_bucket_ids(keys, offsets, ids, width):
    """Row ids grouped by key in ascending key order, ascending rows within a key (a counting sort:
    ``offsets`` holds each key's first slot and is left unchanged), packed ``width`` bits each into ``ids``
    (zeroed words)."""
    cursor = offsets[:-1].copy()
    for row in range(keys.shape[0]):
        key = keys[row]
        bit = np.int64(cursor[key]) * np.int64(width)
        w = bit >> 6
        s = bit & 63
        ids[w] |= np.uint64(row) << np.uint64(s)
        if s + width > 64:
            ids[w + 1] |= np.uint64(row) >> np.uint64(64 - s)
        cursor[key] += 1


@njit(inline="always")
def _binomial(n, r):
    if r < 0 or r > n:
        return 0
    out = 1
    for i in range(r):
        out = out * (n - i) // (i + 1)
    return out


@njit(inline="always")
def _keep(buf_d, buf_r, fill, k):
    """Sort the buffer by (distance, row) and keep its first k entries; returns the new fill."""
    keys = buf_d[:fill] * np.int64(1 << 40) + buf_r[:fill]
    order = np.argsort(keys)
    top = min(k, fill)
    d = buf_d[order[:top]].copy()
    r = buf_r[order[:top]].copy()
    buf_d[:top] = d
    buf_r[:top] = r
    return top


@njit(inline="always")
def _take(buf_d, buf_r, hist, fill, within, bound, d, row, k):
    """Keep (d, row) in the buffer (sorted down to k entries when full); ``hist`` counts the kept distances and
    ``bound``, the distance beyond which no row can enter the top k, falls as soon as k rows lie below it.
    Returns the new (fill, within, bound)."""
    if fill == buf_d.shape[0]:
        fill = _keep(buf_d, buf_r, fill, k)
    buf_d[fill] = d
    buf_r[fill] = row
    fill += 1
    hist[d] += 1
    within += 1
    while within - hist[bound] >= k:
        within -= hist[bound]
        bound -= 1
    return fill, within, bound


@njit(nogil=True, cache=True)
def mih_search(words, queries, q_begin, q_end, k, starts, lengths, ids, width, offsets, bases, removed, has_removed,
               budget_probes, budget_candidates, out_d, out_r, out_n):
    """Exact top-k of queries[q_begin:q_end] by (distance, row); out_n[i] = results found, or GIVE_UP when
    the search would probe more than ``budget_probes`` buckets or verify more than ``budget_candidates`` rows
    (the caller then scans linearly)."""
    m = starts.shape[0]
    bits = words.shape[1] * 64
    min_len = lengths.min()
    cap = 2 * k + 256
    buf_d = np.empty(cap, np.int64)
    buf_r = np.empty(cap, np.int64)
    hist = np.zeros(bits + 1, np.int64)
    qkeys = np.empty(m, np.uint64)
    for qi in range(q_begin, q_end):
        hist[:] = 0
        fill = 0
        bound = bits  # rows farther than this cannot be in the top k
        within = 0  # rows counted with distance <= bound
        probes = 0
        candidates = 0
        gave_up = False
        for j in range(m):
            qkeys[j] = _substring(queries, qi, starts[j], lengths[j])
        for radius in range(min_len + 1):
            upcoming = 0
            for j in range(m):
                upcoming += _binomial(lengths[j], radius)
            if radius > 0 and (probes + upcoming > budget_probes or candidates > budget_candidates):
                gave_up = True
                break
            probes += upcoming
            for j in range(m):
                length = lengths[j]
                if radius > length:
                    continue
                table = ids[j]
                base = bases[j]
                top = np.uint64(1) << np.uint64(length)
                mask = (np.uint64(1) << np.uint64(radius)) - np.uint64(1)
                while mask < top:
                    bucket = qkeys[j] ^ mask
                    at = base + np.int64(bucket)
                    for p in range(offsets[at], offsets[at + 1]):
                        row = _get_id(table, p, width)
                        candidates += 1
                        if has_removed and removed[row]:
                            continue
                        d = _full_distance(words, row, queries, qi)
                        if d > bound:
                            continue
                        first = True  # met here first: no table before j within radius, none after below it
                        for i in range(m):
                            if i == j:
                                continue
                            s = _popcount(_substring(words, row, starts[i], lengths[i]) ^ qkeys[i])
                            if s < radius or (i < j and s == radius):
                                first = False
                                break
                        if not first:
                            continue
                        fill, within, bound = _take(buf_d, buf_r, hist, fill, within, bound, d, row, k)
                    if mask == 0:
                        break
                    low = mask & (~mask + np.uint64(1))  # Gosper: the next value with the same number of bits
                    ripple = mask + low
                    mask = (((ripple ^ mask) >> np.uint64(2)) // low) | ripple
            if within >= k and bound < m * (radius + 1):
                break
        if gave_up:
            out_n[qi] = GIVE_UP
            continue
        keep = 0
        for t in range(fill):  # entries beyond the bound cannot be in the top k
            if buf_d[t] <= bound:
                buf_d[keep] = buf_d[t]
                buf_r[keep] = buf_r[t]
                keep += 1
        top = _keep(buf_d, buf_r, keep, k)
        out_d[qi, :top] = buf_d[:top]
        out_r[qi, :top] = buf_r[:top]
        out_n[qi] = top


@njit(nogil=True, cache=True)
def scan_search(words, queries, q_begin, q_end, k, removed, has_removed, out_d, out_r, out_n):
    """Exact top-k by one linear pass: a row is kept only while its distance is within the k-th smallest so far
    (a histogram of the kept distances gives that bound; ties go to the smaller row). No row of distances is
    stored or sorted."""
    n = words.shape[0]
    bits = words.shape[1] * 64
    cap = 2 * k + 256
    buf_d = np.empty(cap, np.int64)
    buf_r = np.empty(cap, np.int64)
    hist = np.zeros(bits + 1, np.int64)
    for qi in range(q_begin, q_end):
        hist[:] = 0
        fill = 0
        bound = bits
        within = 0
        for row in range(n):
            d = _full_distance(words, row, queries, qi)
            if d > bound or (has_removed and removed[row]):
                continue
            if d == bound and within >= k:  # rows come in ascending order: a tie at the bound is already beaten
                continue
            fill, within, bound = _take(buf_d, buf_r, hist, fill, within, bound, d, row, k)
        top = _keep(buf_d, buf_r, fill, k)
        out_d[qi, :top] = buf_d[:top]
        out_r[qi, :top] = buf_r[:top]
        out_n[qi] = top
