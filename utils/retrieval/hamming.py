"""Codes in Hamming space: any code array -> checked 64-bit words, and Hamming distances by popcount.

Accepted codes (the one place they are checked): ±1 of any integer or float dtype, {0, 1}, or packed
uint8 rows (``utils.retrieval.codes`` layout) when the bit length is given. Tensors from any device are
copied to host memory first: ranking runs on the CPU (codes are Q x B bytes, the copy is negligible).
Words are word-major, shape (ceil(bits / 64), n), so each word column is contiguous for the kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.errors import DUCHError
from utils.retrieval.codes import n_bytes, pack_codes

_BLOCK_ELEMENTS = 1 << 24  # codes are checked and packed this many values at a time (bounded memory)


@dataclass(frozen=True)
class CodeWords:
    """Packed codes as uint64 words (n_words, n); bits past ``bits`` are zero."""

    words: np.ndarray
    bits: int

    def __len__(self) -> int:
        return self.words.shape[1]


def to_host(array) -> np.ndarray:
    """A numpy view or copy of an array or a tensor on any device."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_code_values(block: np.ndarray, name: str) -> None:
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        raise DUCHError(f"{name} contains NaN or inf; codes must be ±1 or 0/1")
    if block.dtype.kind not in "fiub":
        raise DUCHError(f"{name} has dtype {block.dtype}; codes must be numbers ±1 or 0/1")
    if block.dtype.kind == "b":
        return
    plus_minus = np.all((block == 1) | (block == -1))
    if not plus_minus and not np.all((block == 0) | (block == 1)):
        bad = block[(block != 1) & (block != -1) & (block != 0)]
        found = f"the value {bad.flat[0].item()!r}" if bad.size else "both -1 and 0"
        raise DUCHError(
            f"{name} holds {found}; codes must be all ±1 or all 0/1 (packed uint8 codes need --bits B)"
        )


def as_code_words(codes, bits: int | None = None, name: str = "codes") -> CodeWords:
    """Check and pack codes. ``bits`` given: uint8 arrays are packed rows of ceil(bits / 8) bytes and
    other arrays must be ``bits`` wide; not given: every array holds one value per bit."""
    if isinstance(codes, CodeWords):
        return codes
    array = to_host(codes)
    if array.ndim != 2:
        raise DUCHError(f"{name} must be a 2-D array (items x bits), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DUCHError(f"{name} is empty (shape {array.shape})")
    if bits is not None and array.dtype == np.uint8:
        if array.shape[1] != n_bytes(bits):
            raise DUCHError(f"{name} has {array.shape[1]} bytes per row, but {bits} packed bits take {n_bytes(bits)}")
        packed = array.copy()
        if bits % 8:
            packed[:, -1] &= np.uint8((0xFF << (8 - bits % 8)) & 0xFF)  # bits past the code length are ignored
    else:
        if bits is not None and array.shape[1] != bits:
            raise DUCHError(f"{name} has {array.shape[1]} values per row, but --bits is {bits}")
        bits = array.shape[1]
        rows = max(1, _BLOCK_ELEMENTS // bits)
        packed = np.empty((array.shape[0], n_bytes(bits)), np.uint8)
        for start in range(0, array.shape[0], rows):
            block = array[start : start + rows]
            _check_code_values(block, name)
            packed[start : start + rows] = pack_codes(block)
    return CodeWords(packed_to_words(packed), int(bits))


def code_words(packed: np.ndarray) -> np.ndarray:
    """Packed uint8 codes (n, bytes) as rows of 64-bit words (n, words), zero-padded to whole words: a view when
    the rows are whole words already (64, 128, ... bits; memory-mapped codes stay mapped), else a copy."""
    packed = np.asarray(packed)
    n, width = packed.shape
    if width % 8 == 0 and packed.flags.c_contiguous:
        return packed.view(np.uint64).reshape(n, width // 8)
    padded = np.zeros((n, 8 * -(-width // 8)), np.uint8)
    padded[:, :width] = packed
    return padded.view(np.uint64)


def packed_to_words(packed: np.ndarray) -> np.ndarray:
    """Packed uint8 rows -> uint64 words, word-major (n_words, n): ``code_words`` transposed, each word column
    contiguous for the counting kernels."""
    return np.ascontiguousarray(code_words(packed).T)


def hamming_distances(query: CodeWords, db: CodeWords, out: np.ndarray | None = None) -> np.ndarray:
    """Dense (Q, N) Hamming distances as uint16 (popcount of XOR, one word at a time)."""
    if query.bits != db.bits:
        raise DUCHError(f"query codes have {query.bits} bits but database codes have {db.bits}")
    q, d = query.words, db.words
    out = np.zeros((q.shape[1], d.shape[1]), np.uint16) if out is None else out
    out[...] = 0
    scratch = np.empty(out.shape, np.uint64)
    for w in range(q.shape[0]):
        np.bitwise_xor(q[w][:, None], d[w][None, :], out=scratch)
        out += np.bitwise_count(scratch)
    return out
