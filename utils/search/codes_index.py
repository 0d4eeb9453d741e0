"""``search.py index --codes FILE.npz``: an index of codes that any method produced, searched by stored rows.

The file holds the keys ``evaluate.py`` reads: ``db_img`` and ``db_txt`` (±1 or 0/1 codes, one row per
item; either may be absent), optionally ``db_labels`` (class codes, or multi-hot rows). Images and
captions keep the file's row order; caption row i belongs to image row i, as in a codes file of
``main.py``. Such an index holds no model and no continuous outputs: ``query --row`` and ``serve``
search it, sentences and images cannot be encoded, and ``--rerank`` is refused.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from utils.errors import DUCHError
from utils.io import check_writable_dir
from utils.retrieval.codes import pack_codes
from utils.search import writer
from utils.search.archive import MANIFEST_NAME, MODALITIES
from utils.search.encoders import sha256_of
from utils.search.metadata import codes_row

CODE_KEYS = {"images": ("db_img", "db"), "captions": ("db_txt",)}
LABEL_KEY = "db_labels"


def _packed(array: np.ndarray, name: str) -> np.ndarray:
    """±1 / 0/1 codes checked as evaluate.py checks them, packed as the index stores them."""
    from utils.retrieval.hamming import as_code_words

    as_code_words(array, name=name)  # shape and values, or one error naming the key
    return pack_codes(array)


def _class_names(labels: np.ndarray | None, n: int) -> tuple[list, list]:
    if labels is None:
        return [None] * n, [None] * n
    if labels.ndim == 1:
        codes = labels.astype(np.int64).tolist()
        return [str(c) for c in codes], codes
    return [";".join(str(c) for c in np.flatnonzero(row)) or None for row in labels], [None] * n


def _rows(modality: str, n: int, names: list, codes: list):
    """The metadata rows of one modality, one at a time."""
    for i in range(n):
        named = i < len(names)
        yield codes_row(modality, i, names[i] if named else None, codes[i] if named else None, len(names))


def write_label_columns(out: Path, labels: np.ndarray | None, counts: dict[str, int]) -> dict:
    """The metadata of an index of codes with class codes (or none): ``labels_<modality>.npy`` (caption row i
    takes image row i's class); its manifest record."""
    from utils.io import write_npy
    from utils.search.metadata import LABELS_FILE, column_names

    files, names = {}, {}
    for modality in MODALITIES:
        n = counts[modality]
        column = None
        if labels is not None:
            column = np.full(n, -1, np.int64)
            column[:min(n, len(labels))] = labels[:n]
            files[modality] = LABELS_FILE.format(modality)
            write_npy(out / files[modality], column)
        else:
            files[modality] = None
        names[modality] = column_names(column, n)
    return {"kind": "columns", "files": files, "names": names}


def build_from_codes(opts, out: Path) -> dict:
    """Write the index folder of a codes file; returns the manifest."""
    from utils.retrieval.evaluation import read_codes_npz

    path = Path(opts.codes)
    writer.refuse_existing(out, opts.overwrite)
    arrays = read_codes_npz(path)
    found = {m: next((arrays[k] for k in keys if k in arrays), None) for m, keys in CODE_KEYS.items()}
    if all(a is None for a in found.values()):
        raise DUCHError(f"{path} holds neither db_img nor db_txt (found: {', '.join(sorted(arrays)) or 'nothing'}); "
                        f"--codes indexes the database codes of a codes file, as evaluate.py reads them")
    widths = {a.shape[1] for a in found.values() if a is not None and a.ndim == 2}
    if len(widths) > 1:
        raise DUCHError(f"{path}: db_img and db_txt codes differ in length ({sorted(widths)} bits)")
    bits = widths.pop() if widths else 0
    packed = {m: _packed(a, f"{path.name}: {CODE_KEYS[m][0]}") if a is not None
              else np.zeros((0, (bits + 7) // 8), np.uint8) for m, a in found.items()}
    labels = arrays.get(LABEL_KEY)
    n_images = len(packed["images"]) or len(packed["captions"])
    if labels is not None and len(labels) != n_images:
        raise DUCHError(f"{path}: db_labels has {len(labels)} rows but the codes have {n_images}")
    names, class_codes = _class_names(labels, n_images)
    check_writable_dir(out, "index folder")
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    segments = writer.write_first_segments(out, packed, {m: None for m in MODALITIES}, opts.index_type, opts.nlist,
                                           opts.nprobe)
    if labels is None or labels.ndim == 1:  # class codes: a column per modality, memory-mapped
        metadata = write_label_columns(out, None if labels is None else labels.astype(np.int64),
                                       {m: len(packed[m]) for m in MODALITIES})
    else:  # multi-hot rows: the names of each row's labels, in the SQLite file
        metadata = writer.write_fresh_metadata(out, {m: _rows(m, len(packed[m]), names, class_codes)
                                                     for m in MODALITIES})
    manifest = {
        "bit": int(bits), "bytes_per_code": int((bits + 7) // 8),
        "run": None, "checkpoint": None, "features": None, "encoders": {"image": None, "text": None},
        "source": {"codes": str(path.resolve()), "sha256": sha256_of(path)},
        "dataset": None, "image_dir": None,
        "segments": segments, "metadata": metadata, "counts": {},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return writer.commit(out, manifest)
