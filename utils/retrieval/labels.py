"""Labels of retrieval items: class codes or multi-hot rows, and which database items are relevant to a query.

An item is relevant to a query when they share a label. Class codes (one label per item) compare by
equality; multi-hot rows become bit-sets (uint64 words) and compare by a shared bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.errors import DUCHError
from utils.retrieval.hamming import packed_to_words, to_host


@dataclass(frozen=True)
class Labels:
    """Class codes (int64, one per item) and/or label bit-sets (uint64 words, word-major).

    1-D class codes have only ``classes``; multi-hot rows have ``sets``, and also ``classes`` when
    every row holds exactly one label (sharing a label is then equality, which is cheaper)."""

    n: int
    n_labels: int | None  # width of multi-hot rows; None for class codes
    classes: np.ndarray | None = None
    sets: np.ndarray | None = None


def as_labels(labels, name: str = "labels") -> Labels:
    """Check labels: 1-D class codes (integers) or 2-D multi-hot rows (0/1)."""
    if isinstance(labels, Labels):
        return labels
    array = to_host(labels)
    if array.size == 0:
        raise DUCHError(f"{name} is empty (shape {array.shape})")
    if array.dtype.kind not in "fiub":
        raise DUCHError(f"{name} has dtype {array.dtype}; labels must be integer class codes or 0/1 multi-hot rows")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DUCHError(f"{name} contains NaN or inf")
    if array.ndim == 1:
        if array.dtype.kind == "f" and not np.all(array == np.round(array)):
            raise DUCHError(f"{name}: 1-D labels are class codes and must be whole numbers")
        return Labels(len(array), None, classes=array.astype(np.int64))
    if array.ndim != 2:
        raise DUCHError(f"{name} must be 1-D class codes or 2-D multi-hot rows, got shape {array.shape}")
    if array.dtype.kind != "b" and not np.all((array == 0) | (array == 1)):
        raise DUCHError(f"{name}: 2-D labels are multi-hot rows and must hold only 0 and 1")
    present = array != 0
    sets = packed_to_words(np.packbits(present, axis=1))
    per_row = present.sum(axis=1)
    classes = np.argmax(present, axis=1).astype(np.int64) if np.all(per_row == 1) else None
    return Labels(array.shape[0], array.shape[1], classes=classes, sets=sets)


def paired(q: Labels, db: Labels) -> tuple[np.ndarray, np.ndarray]:
    """The label arrays both sides use: class codes when both have them, else bit-sets."""
    if (q.n_labels is None) != (db.n_labels is None) or q.n_labels != db.n_labels:
        def kind(l):
            return "class codes (1-D)" if l.n_labels is None else f"multi-hot rows of {l.n_labels} labels"
        raise DUCHError(f"query labels are {kind(q)} but database labels are {kind(db)}")
    if q.classes is not None and db.classes is not None:
        return q.classes, db.classes
    return q.sets, db.sets


def relevance(q_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """Dense (Q, N) boolean: an item is relevant to a query when they share a label.

    Arrays as ``paired`` gives them: int64 class codes (Q,), (N,) or uint64 bit-sets (words, Q), (words, N)."""
    if q_labels.ndim == 1:
        return q_labels[:, None] == db_labels[None, :]
    out = np.zeros((q_labels.shape[1], db_labels.shape[1]), bool)
    for w in range(q_labels.shape[0]):
        out |= (q_labels[w][:, None] & db_labels[w][None, :]) != 0
    return out
