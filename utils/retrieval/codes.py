"""Hash code formats: ±1 codes (what the networks output after sign) and packed bits (what is stored).

Packed layout, the one place it is defined: ``np.packbits(code > 0, axis=1)``, numpy's default
big-endian bit order (bit 0 of a code is the high bit of byte 0), uint8 rows of ceil(bits / 8)
bytes. faiss binary indexes take these rows as they are.
"""
from __future__ import annotations

import numpy as np

from utils.errors import DUCHError


def n_bytes(bits: int) -> int:
    return (int(bits) + 7) // 8


def pack_codes(codes) -> np.ndarray:
    """±1 (or {0, 1}) codes of shape (n, bits) -> packed uint8 (n, ceil(bits / 8)); +1 -> bit 1."""
    array = np.asarray(codes.detach().cpu() if hasattr(codes, "detach") else codes)
    if array.ndim != 2:
        raise DUCHError(f"codes must be a 2-D array (items x bits), got shape {array.shape}")
    return np.packbits(array > 0, axis=1)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Packed uint8 rows -> ±1 int8 codes of shape (n, bits)."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise DUCHError(f"packed codes must be a 2-D uint8 array, got {packed.dtype} of shape {packed.shape}")
    if packed.shape[1] != n_bytes(bits):
        raise DUCHError(f"packed codes have {packed.shape[1]} bytes per row, but {bits} bits need {n_bytes(bits)}")
    bits01 = np.unpackbits(packed, axis=1, count=int(bits))
    return (bits01.astype(np.int8) * 2 - 1).astype(np.int8)
