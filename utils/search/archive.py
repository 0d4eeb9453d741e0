"""An index folder opened for searching: manifest, segments (codes and structures, memory-mapped), metadata.

Opening reads the manifest, checks that every file it vouches for is the one it was written with
(size and time, the content only when those moved), maps the codes and tables, and connects to the
metadata file: nothing proportional to the number of rows is read, so an index of any size opens at
once. Ranking is exact for flat and mih segments: the k smallest distances and, among equal distances,
the smaller row (checked against brute force in the tests and re-asserted for every result list).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.errors import DUCHError, did_you_mean
from utils.fingerprints import difference
from utils.io import read_json, read_npy
from utils.search.metadata import FILTER_FIELDS, METADATA_NAME, ColumnStore, MetadataStore, RowView
from utils.search.segments import (
    FEW_QUERIES,
    MAX_NPROBE,
    Segment,
    SegmentedRows,
    faiss_threads,
    make_binary_index,
    merge_topk,
    order_by_distance_then_row,
)

FORMAT = "duch-search-index"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
MODALITIES = ("images", "captions")
FILTER_CACHE = 8  # flat indexes of the rows of recent class/split filters, kept per index


def rebuild_hint(manifest: dict, index_dir: Path) -> str:
    run = (manifest.get("run") or {}).get("dir") if isinstance(manifest.get("run"), dict) else None
    source = (manifest.get("source") or {}).get("codes") if isinstance(manifest.get("source"), dict) else None
    what = f"--run {run}" if run else f"--codes {source}" if source else "--run RUN_DIR"
    return f"python search.py index {what} --out {index_dir} --overwrite"


class SearchIndex:
    """An index folder read back (see the module's docstring)."""

    def __init__(self, index_dir: Path, manifest: dict):
        self.dir = index_dir
        self.manifest = manifest
        bits = manifest["bit"]
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 1 << 16:
            raise ValueError(f"'bit' is {bits!r}, not a code length")
        self.bits = bits
        if not (manifest.get("checkpoint") if manifest.get("run") else manifest["source"]["codes"]):
            raise ValueError("neither a run with its checkpoint nor a codes file is recorded")
        self.segments: dict[str, list[Segment]] = {}
        self.codes: dict[str, SegmentedRows] = {}
        self.removed: dict[str, np.ndarray | None] = {}
        self._filters: OrderedDict = OrderedDict()  # (modality, classes, splits) -> (rows matching, their flat index)
        self._filter_lock = threading.Lock()
        counts = {}
        for modality in MODALITIES:
            segments = [Segment(record, index_dir, bits) for record in manifest["segments"][modality]]
            expected = 0
            for segment in segments:
                if segment.start != expected:
                    raise ValueError(f"{modality} segments do not follow each other (row {segment.start})")
                expected += segment.rows
            self.segments[modality] = segments
            self.codes[modality] = SegmentedRows([s.codes for s in segments], [s.start for s in segments])
            counts[modality] = expected
            self.removed[modality] = mask = self._removed_mask(modality, expected)
            for segment in segments:  # each segment's share, found once here rather than at every search
                segment.set_removed(None if mask is None else mask[segment.start:segment.start + segment.rows])
        meta = manifest["metadata"]
        self.names = {m: {f: dict(meta["names"][m][f]) for f in FILTER_FIELDS} for m in MODALITIES}
        if not all(isinstance(c, int) for names in self.names.values() for f in names.values() for c in f.values()):
            raise ValueError("metadata names: counts are not integers")
        self._folders = self._image_folders()
        # the folders as written and resolved (paths are stored resolved), normalised once for _check_path
        self._allowed = sorted({os.path.normpath(os.path.abspath(f)) for f in self._folders}
                               | {os.path.realpath(f) for f in self._folders})
        if meta.get("kind") == "columns":  # an index of a codes file with class codes
            self.store = ColumnStore(index_dir, dict(meta["files"]), counts)
        else:
            self.store = MetadataStore(self._file(METADATA_NAME), str(meta["build_id"]), counts)
        self.metadata = {m: RowView(self.store, m, self._check_path) for m in MODALITIES}

    def _removed_mask(self, modality: str, n: int) -> np.ndarray | None:
        record = (self.manifest.get("removed") or {}).get(modality)
        if not record or not record.get("file"):
            return None
        if not isinstance(record["file"], str):
            raise ValueError(f"removed {modality}: {record['file']!r} is not a file name")
        rows = read_npy(self._file(record["file"]), "removed rows")
        if rows.ndim != 1 or rows.dtype.kind not in "iu" or (len(rows) and not 0 <= rows.min() <= rows.max() < n):
            raise DUCHError(f"{self.dir}: {record['file']} is not a list of {modality} rows; rebuild the index with "
                            f"--overwrite")
        mask = np.zeros(n, np.uint8)
        mask[rows] = 1
        return mask

    def is_removed(self, modality: str, row: int) -> bool:
        mask = self.removed[modality]
        return mask is not None and bool(mask[row])

    def removed_count(self, modality: str) -> int:
        return sum(segment.removed_count for segment in self.segments[modality])

    def image_folders(self) -> list[str]:
        """The folders whose images the index may show: the dataset's image folder and every --image-dir."""
        return list(self._folders)

    def _image_folders(self) -> list[str]:
        folders = [(self.manifest.get("dataset") or {}).get("image_dir")]
        folders.append((self.manifest.get("image_dir") or {}).get("path"))
        folders += [a.get("image_dir") for a in self.manifest.get("added") or []]
        return [str(f) for f in folders if isinstance(f, str) and f]

    def _check_path(self, modality: str, meta: dict) -> None:
        """A row's image path lies inside the index's image folders as written: a hand-edited or damaged metadata
        row cannot make a results page embed another file (links are resolved where the file is read)."""
        from utils.paths import below

        path = meta.get("path")
        if path is None:
            return
        if isinstance(path, str):
            path = os.path.normpath(os.path.abspath(path))
            if any(below(path, folder) for folder in self._allowed):
                return
        raise DUCHError(f"{self.dir}: {modality} row {meta.get('row')} names the image {path!r}, outside the "
                        f"index's image folders; refused (rebuild the index with --overwrite)")

    @classmethod
    def open(cls, index_dir: str | Path, verify_checkpoint: bool = True) -> "SearchIndex":
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise DUCHError(f"index folder not found: {index_dir}; build it with: python search.py index --run RUN_DIR "
                            f"(default output RUN_DIR/index)")
        manifest_path = index_dir / MANIFEST_NAME
        if not manifest_path.is_file():
            raise DUCHError(f"{index_dir} holds no finished index ({MANIFEST_NAME} missing); build it with: "
                            f"python search.py index --run RUN_DIR --out {index_dir}")
        manifest = read_json(manifest_path, "index manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise DUCHError(f"{manifest_path} is not a manifest of search.py index")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise DUCHError(f"{index_dir} is an index of format version {manifest.get('format_version')}; this version "
                            f"reads version {FORMAT_VERSION} (segments, SQLite metadata): rebuild it with: "
                            f"{rebuild_hint(manifest, index_dir)}")
        try:
            check_digests(manifest, index_dir)
            if verify_checkpoint and manifest.get("checkpoint"):
                check_checkpoint(manifest, index_dir)
            return cls(index_dir, manifest)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as err:  # a hand-edited or damaged one
            raise DUCHError(f"{manifest_path} is damaged ({type(err).__name__}: {err}); rebuild the index with "
                            f"--overwrite") from None

    def _file(self, name: str) -> Path:
        path = self.dir / name
        if not path.is_file():
            raise DUCHError(f"{path} is missing; rebuild the index with: {rebuild_hint(self.manifest, self.dir)}")
        return path

    def outputs(self, modality: str) -> SegmentedRows:
        """Continuous outputs (float16 on disk) of one modality, for re-ranking and row queries."""
        segments = self.segments[modality]
        return SegmentedRows([s.outputs() for s in segments], [s.start for s in segments])

    def has_outputs(self, modality: str) -> bool:
        return all("outputs" in s.record["files"] for s in self.segments[modality])

    def __len__(self) -> int:
        return self.size("images")

    def size(self, modality: str) -> int:
        return len(self.codes[modality])

    def set_nprobe(self, nprobe: int | None) -> None:
        if nprobe is None:
            return
        if isinstance(nprobe, bool) or not isinstance(nprobe, int) or not 1 <= nprobe <= MAX_NPROBE:
            raise DUCHError(f"--nprobe must be 1..{MAX_NPROBE} (inverted lists visited per query), got {nprobe}")
        for segments in self.segments.values():
            for segment in segments:
                if hasattr(segment.structure, "nprobe"):
                    segment.structure.nprobe = int(nprobe)

    def hamming_topk(self, target: str, query_codes: np.ndarray, k: int, nprobe: int | None = None,
                     classes: Sequence[str] | None = None,
                     splits: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, rows), each (n_queries, min(k, rows searched)), ordered by (distance, row); removed rows
        are never returned.

        ``nprobe``: lists an IVF index visits for these queries only (the index keeps its own). ``classes`` /
        ``splits``: only rows of one of these classes and one of these splits are ranked, before the top k is cut,
        by an exact search over the matching rows, so k results come back when k rows match."""
        query_codes = np.ascontiguousarray(query_codes, dtype=np.uint8)
        n_q = len(query_codes)
        threads = 1 if n_q < FEW_QUERIES else None
        if classes is not None or splits is not None:
            matching, index = self.row_filter(target, classes, splits)
            k = min(int(k), index.ntotal)
            if not n_q or k == 0:
                return np.zeros((n_q, 0), np.int32), np.zeros((n_q, 0), np.int64)
            with faiss_threads(threads):
                distances, rows = index.search(query_codes, k)
            rows = np.where(rows >= 0, matching[np.maximum(rows, 0)], -1)  # rows of the filtered index -> the index's
            return order_by_distance_then_row(distances, rows)
        parts = [segment.search(query_codes, int(k), nprobe, threads) for segment in self.segments[target]]
        return merge_topk(parts, n_q, int(k))

    def labels(self, target: str) -> dict[str, dict[str, int]]:
        """Per field ("class", "split"): {name: rows}, as the manifest records them."""
        return self.names[target]

    def row_filter(self, target: str, classes: Sequence[str] | None, splits: Sequence[str] | None):
        """(rows of ``target`` whose class is one of ``classes`` and split one of ``splits``, ascending, removed
        rows left out; an exact IndexBinaryFlat of their codes). None: no condition on that field. An unknown class
        or split name is an error naming the known ones. The last few filters are kept (a copy of the matching codes
        each); a filter is built once, however many requests ask for it at the same time."""
        labels = self.labels(target)
        key = (target, None if classes is None else tuple(sorted(set(classes))),
               None if splits is None else tuple(sorted(set(splits))))
        for field, wanted in (("class", key[1]), ("split", key[2])):
            known = list(labels[field])
            for name in wanted or ():
                if name not in known:
                    plural = {"class": "classes", "split": "splits"}[field]
                    raise DUCHError(f"unknown {field} {name!r}{did_you_mean(name, known)}; the index's {target} have "
                                    f"{plural}: {', '.join(known) if known else 'none'}")
        with self._filter_lock:
            if key in self._filters:
                self._filters.move_to_end(key)
                return self._filters[key]
            matching = self.store.matching_rows(target, key[1], key[2])
            removed = self.removed[target]
            if removed is not None:
                matching = matching[removed[matching] == 0]
            entry = (matching, make_binary_index(self.codes[target][matching], "flat")[0])
            self._filters[key] = entry
            while len(self._filters) > FILTER_CACHE:
                self._filters.popitem(last=False)
            return entry


REFRESH_SECONDS = 1.0  # how often a LiveIndex looks whether the manifest was replaced (one stat)


class LiveIndex:
    """An index folder followed as ``search.py index --add / --remove / --compact / --overwrite`` replaces its
    manifest: ``current()`` stats the manifest at most once per REFRESH_SECONDS and, when it was replaced, opens
    the new index and swaps it in whole (``on_swap(new, old)`` runs first), so each caller works on one index,
    old or new. A manifest that cannot be opened leaves the index opened before in place, said once."""

    def __init__(self, index_dir: Path, on_swap=None):
        self.dir, self.on_swap = index_dir, on_swap
        self._index = SearchIndex.open(index_dir)
        self._seen, self._checked = self._stat(), time.monotonic()
        self._lock = threading.Lock()

    def _stat(self):
        try:
            st = (self.dir / MANIFEST_NAME).stat()
        except OSError:
            return None  # a rebuild in progress: the index opened goes on answering
        return st.st_ino, st.st_mtime_ns, st.st_size

    def current(self) -> SearchIndex:
        now = time.monotonic()
        if now - self._checked >= REFRESH_SECONDS:
            self._checked = now
            stat = self._stat()
            if stat is not None and stat != self._seen:
                self._swap(stat)
        return self._index

    def _swap(self, stat) -> None:
        with self._lock:
            if stat == self._seen:
                return
            self._seen = stat
            try:
                new = SearchIndex.open(self.dir)
            except DUCHError as err:
                print(f"warning: {self.dir} changed but cannot be opened ({err}); still answering from the index "
                      f"opened before", file=sys.stderr)
                return
            if self.on_swap is not None:
                self.on_swap(new, self._index)
            self._index = new


def checkpoint_file(manifest: dict, index_dir: Path) -> Path:
    """The checkpoint an index was built from: its recorded path, else the same place relative to the index
    (an index folder moved together with its run)."""
    record = manifest["checkpoint"]
    path = Path(record["path"])
    if not path.is_file() and record.get("relative_to_index"):
        moved = index_dir / record["relative_to_index"]
        if moved.is_file():
            return moved
    return path


def check_digests(manifest: dict, index_dir: Path) -> None:
    """Every file of the index is the one its manifest (written last) vouches for: no file of another build."""
    from utils.paths import contained

    digests = manifest.get("digests")
    if not isinstance(digests, dict) or not digests:
        raise DUCHError(f"{index_dir / MANIFEST_NAME} vouches for no file ('digests' missing or not a JSON object: an "
                        f"index of an earlier version, or an edited manifest), so its files cannot be checked to be "
                        f"of one build; rebuild the index with --overwrite")
    for name, record in digests.items():
        path = contained(index_dir, name, "index file")
        if not isinstance(record, dict) or difference(record, path) is not None:
            why = "missing" if not path.is_file() else "not the file the manifest was written with"
            raise DUCHError(f"{path} is {why} (an interrupted or concurrent rebuild, or a damaged copy); rebuild the "
                            f"index with: {rebuild_hint(manifest, index_dir)}")


def check_checkpoint(manifest: dict, index_dir: Path) -> None:
    """The index must come from the checkpoint the run holds now: its sha256 is compared."""
    from utils.search.encoders import sha256_of

    record = manifest["checkpoint"]
    path = checkpoint_file(manifest, index_dir)
    if not path.is_file():
        raise DUCHError(f"the checkpoint this index was built from, {path}, no longer exists (run folder moved or "
                        f"deleted); rebuild the index from the run: python search.py index --run RUN_DIR --overwrite")
    now = sha256_of(path)
    if now != record["sha256"]:
        raise DUCHError(f"{path} has changed since this index was built (sha256 {record['sha256'][:12]}... then, "
                        f"{now[:12]}... now: the run was retrained or resumed); rebuild it: python search.py index "
                        f"--run {manifest['run']['dir']} --checkpoint {record['which']} --overwrite")
