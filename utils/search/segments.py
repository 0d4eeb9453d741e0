"""The rows of an index modality as segments: each a run of rows with its codes, outputs and search structure.

A built index has one segment per modality; ``search.py index --add`` appends one more, so an archive
grows without rewriting what it holds. A segment's structure is one of SEGMENT_TYPES: ``flat`` (faiss
IndexBinaryFlat, exact), ``mih`` (``utils.search.mih``, exact, sub-linear) or ``ivf`` (faiss
IndexBinaryIVF, approximate). Codes and tables open memory-mapped; a search of several segments merges
their top k by (distance, row), so the answer is the one a single flat index of every row would give.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.errors import DUCHError
from utils.io import atomic_path, read_npy, write_npy

SEGMENT_TYPES = ("flat", "mih", "ivf")
INDEX_TYPES = ("auto", *SEGMENT_TYPES)
# ``auto``: the multi-index from this many rows on; below it the flat index. Measured on 2 cores
# (benchmarks/bench_search.py, 64-bit uniform random codes, the case least kind to the multi-index, top 10, one
# query alone): flat / mih 1.26 / 2.51 ms at 1M rows, about 2.4-3.4 / 4.1-9.7 at 2M, 7.25 / 5.52 at 3M,
# 8.55 / 5.16 at 5M, 13.1 / 10.1 at 10M. On codes clustered like trained ones the multi-index is faster from
# 1M on (1.18 / 0.49 ms).
MIH_MIN_ROWS = 3_000_000
DEFAULT_NPROBE = 16
MAX_NPROBE = 1 << 16  # inverted lists visited per query: more than any index has (faiss takes a C int)
FEW_QUERIES = 8  # below this, one thread: as fast alone, and no OpenMP spin-waits on a busy machine


def resolve_index_type(index_type: str, n: int) -> str:
    """The structure a segment of ``n`` rows gets: ``auto`` picks mih or flat by size (flat without numba)."""
    if index_type != "auto":
        return index_type
    if n < MIH_MIN_ROWS:
        return "flat"
    try:
        import numba  # noqa: F401
    except ImportError:
        return "flat"
    return "mih"


def segment_files(modality: str, number: int, kind: str) -> dict:
    """The files of one segment (the one place they are named); segment 0 keeps the plain names."""
    tail = "" if number == 0 else f".s{number}"
    names = {"codes": f"codes_{modality}{tail}.npy", "outputs": f"outputs_{modality}{tail}.npy"}
    if kind == "mih":
        names.update(mih_ids=f"mih_ids_{modality}{tail}.npy", mih_offsets=f"mih_offsets_{modality}{tail}.npy")
    else:
        names["faiss"] = f"index_{modality}{tail}.faiss"
    return names


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) inverted lists, with at least 39 codes to train each (faiss's own rule of thumb)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def make_binary_index(codes: np.ndarray, index_type: str = "flat", nlist: int | None = None,
                      nprobe: int = DEFAULT_NPROBE):
    """A faiss binary index over packed codes (d = 8 x bytes); returns (index, its parameters)."""
    import faiss  # lazy: a heavy import, paid only where it is used (start-up time)

    d = codes.shape[1] * 8
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if index_type == "flat":
        index = faiss.IndexBinaryFlat(d)
        params = {"type": "flat", "faiss_class": "IndexBinaryFlat", "exact": True}
    elif index_type == "ivf":
        nlist = min(nlist or default_nlist(len(codes)), max(1, len(codes)))
        quantizer = faiss.IndexBinaryFlat(d)
        index = faiss.IndexBinaryIVF(quantizer, d, nlist)
        index.train(codes)
        index.nprobe = min(nprobe, nlist)
        params = {"type": "ivf", "faiss_class": "IndexBinaryIVF", "exact": False, "nlist": nlist,
                  "nprobe": int(index.nprobe)}
    else:
        raise DUCHError(f"unknown index type {index_type!r}; choose one of: {', '.join(SEGMENT_TYPES)}")
    if len(codes):
        index.add(codes)
    return index, params


def write_segment(out: Path, modality: str, number: int, start: int, codes: np.ndarray, outputs: np.ndarray | None,
                  index_type: str = "auto", nlist: int | None = None, nprobe: int = DEFAULT_NPROBE) -> dict:
    """Write one segment's files (each atomically) and return its manifest record."""
    kind = resolve_index_type(index_type, len(codes))
    names = segment_files(modality, number, kind)
    write_npy(out / names["codes"], codes)
    if outputs is None:  # codes made elsewhere (search.py index --codes): no continuous outputs
        del names["outputs"]
    else:
        write_npy(out / names["outputs"], outputs.astype(np.float16))
    if kind == "mih":
        from utils.search.mih import MultiIndex, code_words

        tables = MultiIndex.build(code_words(codes), codes.shape[1] * 8)
        tables.save({key: out / names[key] for key in ("mih_ids", "mih_offsets")})
        params = {"type": "mih", "exact": True, **tables.to_json()}
    else:
        import faiss

        index, params = make_binary_index(codes, kind, nlist, nprobe)
        with atomic_path(out / names["faiss"]) as tmp:
            faiss.write_index_binary(index, str(tmp))
    return {"number": int(number), "start": int(start), "rows": int(len(codes)), "type": kind, "files": names,
            "params": params}


def next_segment_number(records: list[dict]) -> int:
    """The number a new segment's files get: one past every number the modality's segments use, so a new
    segment never takes the file names of one the index still reads (a compacted index keeps a high number)."""
    return max((int(r["number"]) for r in records), default=-1) + 1


def _read_faiss(path: Path):
    import faiss  # lazy: a heavy import, paid only where it is used (start-up time)

    try:
        return faiss.read_index_binary(str(path))
    except RuntimeError as err:
        raise DUCHError(f"cannot read faiss index {path}: {str(err).splitlines()[0]}") from None


@dataclass
class Segment:
    """One opened segment: codes memory-mapped, its search structure, outputs on demand."""

    record: dict
    folder: Path
    bits: int
    codes: np.ndarray = field(init=False)
    structure: object = field(init=False)

    def __post_init__(self):
        self.start, self.rows, self.type = int(self.record["start"]), int(self.record["rows"]), self.record["type"]
        self.number = int(self.record["number"])
        if self.type not in SEGMENT_TYPES:
            raise ValueError(f"segment type {self.type!r}")
        files = self.record["files"]
        self.codes = read_npy(self.path(files["codes"]), "index codes", mmap=True)
        expected = (self.rows, (self.bits + 7) // 8)
        if self.codes.dtype != np.uint8 or self.codes.ndim != 2 or self.codes.shape != expected:
            raise DUCHError(f"{self.folder}: {files['codes']} holds {self.codes.dtype} of shape {self.codes.shape}, "
                            f"not packed {self.bits}-bit codes ({self.rows} rows); rebuild the index with --overwrite")
        self._outputs = None
        self.removed, self.removed_count = None, 0
        if self.type == "mih":
            from utils.search.mih import MultiIndex, code_words

            self.words = code_words(self.codes)
            self.structure = MultiIndex.load({k: self.path(files[k]) for k in ("mih_ids", "mih_offsets")},
                                             self.record["params"], self.rows)
        else:
            self.structure = _read_faiss(self.path(files["faiss"]))
            if self.structure.ntotal != self.rows:
                raise DUCHError(f"{self.folder}: the codes and the faiss index {files['faiss']} disagree in length; "
                                f"rebuild the index with --overwrite")
            nprobe = self.record["params"].get("nprobe")
            if nprobe and hasattr(self.structure, "nprobe"):
                self.structure.nprobe = int(nprobe)

    def set_removed(self, mask: np.ndarray | None) -> None:
        """This segment's rows left out by ``--remove`` (uint8 per row; None or all zero: none)."""
        count = 0 if mask is None else int(np.count_nonzero(mask))
        self.removed, self.removed_count = (mask if count else None), count

    def path(self, name: str) -> Path:
        path = self.folder / name
        if not path.is_file():
            raise DUCHError(f"{path} is missing; rebuild the index with --overwrite")
        return path

    def outputs(self) -> np.ndarray:
        if "outputs" not in self.record["files"]:
            raise DUCHError(f"{self.folder} holds codes without continuous outputs (an index of a codes file): "
                            f"--rerank needs them")
        if self._outputs is None:
            self._outputs = read_npy(self.path(self.record["files"]["outputs"]), "index outputs", mmap=True)
        return self._outputs

    def search(self, queries: np.ndarray, k: int, nprobe: int | None,
               threads: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows of the whole index) of this segment's top ``k``, removed rows left out; unfilled
        places are row -1."""
        removed = self.removed
        k = min(k, self.rows)
        if k == 0:
            return np.zeros((len(queries), 0), np.int32), np.zeros((len(queries), 0), np.int64)
        if self.type == "mih" or (self.type == "flat" and removed is not None):
            from utils.search.mih import code_words, exact_topk

            words = self.words if self.type == "mih" else code_words(self.codes)
            tables = self.structure if self.type == "mih" else None
            distances, rows = exact_topk(words, code_words(queries), k, tables, removed, threads)
        else:
            params = None
            extra = self.removed_count  # removed rows are dropped after the search
            if nprobe is not None and hasattr(self.structure, "nprobe"):
                import faiss

                params = faiss.SearchParametersIVF(nprobe=int(nprobe))
            with faiss_threads(threads):
                distances, rows = self.structure.search(queries, min(k + extra, self.rows), params=params)
            if removed is not None:
                gone = (rows >= 0) & (removed[np.maximum(rows, 0)] != 0)
                rows = np.where(gone, -1, rows)
        rows = np.where(rows >= 0, rows + self.start, -1)
        return distances, rows


@contextlib.contextmanager
def faiss_threads(n: int | None):
    """faiss's OpenMP threads set to ``n`` inside the block (None: unchanged).

    Measured on 2 cores (benchmarks/bench_search.py): one query over 1M codes takes the same time on one
    thread as on two, while two threads on a machine busy with other work spin-wait for each other (100x slower)."""
    import faiss  # lazy: a heavy import, paid only where it is used (start-up time)

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def order_by_distance_then_row(distances: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each result list sorted by (distance, row); unfilled places (row -1) moved to the end."""
    distances, rows = np.asarray(distances), np.asarray(rows)
    key_rows = np.where(rows < 0, np.iinfo(np.int64).max, rows)
    key_distances = np.where(rows < 0, np.iinfo(np.int64).max, distances.astype(np.int64))
    order = np.lexsort((key_rows, key_distances), axis=-1) if distances.size else np.zeros_like(rows)
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(rows, order, axis=1)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` by (distance, row) of several segments' lists; unfilled places dropped at the end."""
    if not parts:
        return np.zeros((n_queries, 0), np.int32), np.zeros((n_queries, 0), np.int64)
    distances = np.concatenate([p[0].astype(np.int32) for p in parts], axis=1)
    rows = np.concatenate([p[1].astype(np.int64) for p in parts], axis=1)
    distances, rows = order_by_distance_then_row(distances, rows)
    width = min(k, int((rows >= 0).sum(axis=1).max(initial=0)))
    return distances[:, :width], rows[:, :width]


class SegmentedRows:
    """Rows of several segments' arrays read as one: ``rows[i]``, ``rows[array]``, ``len``, ``np.asarray``."""

    def __init__(self, parts: list[np.ndarray], starts: list[int]):
        self.parts, self.starts = parts, np.asarray(starts, np.int64)
        self.n = int(sum(len(p) for p in parts))

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple:
        return (self.n, *self.parts[0].shape[1:]) if self.parts else (0,)

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate(self.parts) if len(self.parts) != 1 else np.asarray(self.parts[0])
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def __getitem__(self, rows):
        if isinstance(rows, (int, np.integer)):
            if not 0 <= rows < self.n:
                raise IndexError(f"row {rows} of {self.n}")
            s = int(np.searchsorted(self.starts, rows, side="right")) - 1
            return self.parts[s][rows - self.starts[s]]
        rows = np.asarray(rows, np.int64)
        if len(self.parts) == 1:
            return self.parts[0][rows]
        out = np.empty((len(rows), *self.parts[0].shape[1:]), self.parts[0].dtype)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for s, part in enumerate(self.parts):
            mine = which == s
            if mine.any():
                out[mine] = part[rows[mine] - self.starts[s]]
        return out
