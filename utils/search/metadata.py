"""Per-row metadata of an index: one SQLite file (``metadata.sqlite``), read a row at a time, or, for an index
of a codes file, a memory-mapped column of class codes per modality (``ColumnStore``).

A table per modality (``images``, ``captions``), keyed by row, with indexes on class, split and file
name: opening costs nothing at any size, a result's fields are one lookup, and the class / split
filters are queries. The rows an index holds are the manifest's counts: rows beyond them (an ``--add``
that was interrupted before its manifest) are never read, and the next ``--add`` replaces them. The file
carries the build id of its index (table ``info``), checked when the index opens.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from utils.errors import DUCHError

METADATA_NAME = "metadata.sqlite"
FIELDS = {
    "images": ("row", "filename", "class", "class_code", "split", "path", "captions"),
    "captions": ("row", "image_row", "sentence", "filename", "class", "class_code", "split", "path", "caption",
                 "split_caption"),
}
JSON_FIELDS = {"captions"}  # stored as JSON text (a list)
FILTER_FIELDS = ("class", "split")


def _schema(modality: str) -> str:
    columns = ", ".join(f'"{f}" INTEGER PRIMARY KEY' if f == "row" else f'"{f}"' for f in FIELDS[modality])
    return f'CREATE TABLE IF NOT EXISTS "{modality}" ({columns})'


def _indexes(modality: str) -> list[str]:
    return [f'CREATE INDEX IF NOT EXISTS "{modality}_{f}" ON "{modality}" ("{f}")'
            for f in (*FILTER_FIELDS, "filename", "path")]


def _values(modality: str, rows: Iterable[dict]) -> Iterable[tuple]:
    """The column values of each row, in ``_column_order``: one tuple per row, made with C-level helpers (a row
    of a run's index in about 1.5 microseconds; json.dumps with ensure_ascii=False alone took 5)."""
    from operator import itemgetter

    plain = _column_order(modality)[:-1]  # the last column is the JSON list (images) or the flag (captions)
    take, dumps = itemgetter(*plain), json.JSONEncoder().encode  # ASCII escapes: json.loads gives the same text
    for row in rows:
        try:
            values = take(row)
        except KeyError:  # a row without some field: None there
            values = tuple(row.get(f) for f in plain)
        if modality == "images":
            captions = row.get("captions")
            yield (*values, dumps(captions) if captions else "[]")
        else:
            flag = row.get("split_caption")
            yield (*values, None if flag is None else int(flag))


def _column_order(modality: str) -> list[str]:
    """The columns in the order ``_values`` gives them: the plain ones, then the one converted (the JSON list of
    an image row, the flag of a caption row)."""
    converted = "captions" if modality == "images" else "split_caption"
    return [f for f in FIELDS[modality] if f != converted] + [converted]


def write_rows(path: Path, build_id: str, rows: dict[str, Iterable[dict]], first_rows: dict[str, int] | None = None,
               fresh: bool = True) -> None:
    """Write ``rows`` ({modality: row dicts}) into ``path``. ``fresh``: a new file (the caller renames it into
    place); else rows from ``first_rows[modality]`` on are replaced in the existing file, in one transaction."""
    con = sqlite3.connect(str(path), timeout=60)
    if fresh:  # a file no reader sees until it is renamed into place: no journal needed while it is written
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA cache_size = -262144")  # 256 MiB: the indexes are sorted in memory
    try:
        with con:
            con.execute("CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT)")
            con.execute("INSERT OR REPLACE INTO info VALUES ('build_id', ?)", (build_id,))
            for modality, items in rows.items():
                con.execute(_schema(modality))
                if not fresh:
                    con.execute(f'DELETE FROM "{modality}" WHERE "row" >= ?', ((first_rows or {})[modality],))
                marks = ", ".join("?" * len(FIELDS[modality]))
                columns = ", ".join(f'"{f}"' for f in _column_order(modality))
                con.executemany(f'INSERT INTO "{modality}" ({columns}) VALUES ({marks})', _values(modality, items))
                for statement in _indexes(modality):
                    con.execute(statement)
    finally:
        con.close()


def counted(rows: Iterable[dict], counts: dict) -> Iterable[dict]:
    """``rows`` passed on one by one while ``counts`` ({} to start) becomes their ``name_counts``: one pass over
    rows that may be too many to hold."""
    from collections import Counter

    tallies = {f: Counter() for f in FILTER_FIELDS}
    classes, splits = tallies["class"], tallies["split"]
    for row in rows:
        get = row.get
        classes[get("class")] += 1
        splits[get("split")] += 1
        yield row
    for f in FILTER_FIELDS:  # rows without a value (None, "") are not a name
        counts[f] = dict(sorted((str(name), n) for name, n in tallies[f].items() if name))


def name_counts(rows: Iterable[dict]) -> dict[str, dict[str, int]]:
    """{"class": {name: rows}, "split": {...}} of some rows (the manifest keeps them: the filters' choices)."""
    counts: dict = {}
    for _ in counted(rows, counts):
        pass
    return counts


def add_counts(a: dict, b: dict) -> dict:
    return {f: dict(sorted({n: a.get(f, {}).get(n, 0) + b.get(f, {}).get(n, 0)
                            for n in {*a.get(f, {}), *b.get(f, {})}}.items())) for f in FILTER_FIELDS}


class MetadataStore:
    """The metadata file of an opened index, read-only; safe to share between threads."""

    def __init__(self, path: Path, build_id: str, counts: dict[str, int]):
        self.path = path
        self.counts = counts
        if not path.is_file():
            raise DUCHError(f"{path} is missing; rebuild the index with --overwrite")
        try:
            self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60, check_same_thread=False)
            found = self._con.execute("SELECT value FROM info WHERE key = 'build_id'").fetchone()
        except sqlite3.DatabaseError as err:
            raise DUCHError(f"{path} is not a readable metadata file ({err}); rebuild the index with "
                            f"--overwrite") from None
        if not found or found[0] != build_id:
            raise DUCHError(f"{path} belongs to another build of the index (an interrupted or concurrent rebuild, or "
                            f"a file copied in); rebuild the index with --overwrite")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._con.close()

    def _query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._con.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as err:
            raise DUCHError(f"{self.path} cannot be read ({err}); rebuild the index with --overwrite") from None

    def row(self, modality: str, row: int) -> dict:
        """The fields of one row (``captions``: a list)."""
        return self.rows(modality, [row])[0]

    def _select_in(self, sql: str, values: Sequence, args: Sequence = ()) -> list[tuple]:
        """The rows of ``sql``, whose ``{marks}`` (any number of times) stand for one chunk of ``values`` after
        ``args``; 500 values a query (SQLite bounds the values of one statement)."""
        out: list[tuple] = []
        values = list(values)
        for start in range(0, len(values), 500):
            chunk = values[start:start + 500]
            sql_chunk = sql.format(marks=", ".join("?" * len(chunk)))
            out += self._query(sql_chunk, [*args, *chunk * sql.count("{marks}")])
        return out

    def rows(self, modality: str, rows: Sequence[int]) -> list[dict]:
        """The fields of each of ``rows``, in their order: one query for all of them (a result list)."""
        wanted = [int(r) for r in rows]
        bad = next((r for r in wanted if not 0 <= r < self.counts[modality]), None)
        found = {} if bad is not None else {
            r[0]: r for r in self._select_in(f'SELECT * FROM "{modality}" WHERE "row" IN ({{marks}})',
                                             sorted(set(wanted)))}
        out = []
        for row in wanted:
            if row not in found:
                raise DUCHError(f"{self.path}: {modality} row {row} is missing; rebuild the index with --overwrite")
            out.append(self._decoded(modality, row, found[row]))
        return out

    def _decoded(self, modality: str, row: int, values: tuple) -> dict:
        out = dict(zip(FIELDS[modality], values))
        for f in JSON_FIELDS & set(out):
            try:
                out[f] = json.loads(out[f])
            except (TypeError, ValueError):
                raise DUCHError(f"{self.path}: {modality} row {row} is damaged ({f}); rebuild the index with "
                                f"--overwrite") from None
        if "split_caption" in out and out["split_caption"] is not None:
            out["split_caption"] = bool(out["split_caption"])
        return out

    def matching_rows(self, modality: str, classes: Sequence[str] | None, splits: Sequence[str] | None) -> np.ndarray:
        """Rows (ascending) whose class is one of ``classes`` and split one of ``splits`` (None: any)."""
        where, args = ['"row" < ?'], [self.counts[modality]]
        for f, wanted in (("class", classes), ("split", splits)):
            if wanted is not None:
                where.append(f'"{f}" IN ({", ".join("?" * len(wanted))})')
                args += list(wanted)
        found = self._query(f'SELECT "row" FROM "{modality}" WHERE {" AND ".join(where)} ORDER BY "row"', args)
        return np.fromiter((r[0] for r in found), np.int64, len(found))

    def rows_of_files(self, names: Sequence[str]) -> np.ndarray:
        """Image rows whose file name (as the index records it) or absolute path is one of ``names``."""
        found = self._select_in('SELECT "row" FROM images WHERE "row" < ? AND ("filename" IN ({marks}) OR "path" '
                                'IN ({marks}))', names, [self.counts["images"]])
        return np.unique(np.asarray([r[0] for r in found], np.int64))

    def caption_rows_of_images(self, image_rows: np.ndarray) -> np.ndarray:
        found = self._select_in('SELECT "row" FROM captions WHERE "row" < ? AND "image_row" IN ({marks})',
                                [int(r) for r in image_rows], [self.counts["captions"]])
        return np.unique(np.asarray([r[0] for r in found], np.int64))

    def known_paths(self, paths: Sequence[str]) -> set[str]:
        """Those of ``paths`` that an image row of the index has (one indexed lookup per 500)."""
        return {r[0] for r in self._select_in('SELECT "path" FROM images WHERE "row" < ? AND "path" IN ({marks})',
                                              paths, [self.counts["images"]])}


class RowView:
    """``index.metadata[modality]``: rows read on demand (``view[row]`` -> dict), checked by ``check``."""

    def __init__(self, store: MetadataStore, modality: str, check=None):
        self.store, self.modality, self.check = store, modality, check

    def __len__(self) -> int:
        return self.store.counts[self.modality]

    def __getitem__(self, row: int) -> dict:
        return self.many([row])[0]

    def many(self, rows: Sequence[int]) -> list[dict]:
        """Several rows in one lookup, in their order."""
        out = self.store.rows(self.modality, rows) if rows else []
        if self.check is not None:
            for meta in out:
                self.check(self.modality, meta)
        return out


LABELS_FILE = "labels_{}.npy"
CODES_SPLIT = "db"


def codes_row(modality: str, row: int, class_name: str | None, class_code: int | None, n_images: int) -> dict:
    """The metadata of row ``row`` of an index of a codes file: no file, split ``db``, caption row i belonging to
    image row i (while there is one)."""
    base = {"row": row, "filename": None, "class": class_name, "class_code": class_code, "split": CODES_SPLIT,
            "path": None}
    if modality == "images":
        return {**base, "captions": []}
    return {**base, "image_row": row if row < n_images else None, "sentence": 0, "caption": None,
            "split_caption": False}


class ColumnStore:
    """The metadata of an index of a codes file (``search.py index --codes``): every row is of split ``db``, its
    class the code in ``labels_<modality>.npy`` (-1: none), memory-mapped; caption row i belongs to image row i.
    No row is written one by one, so an index of 100 million codes is written and opened at once."""

    def __init__(self, folder: Path, files: dict, counts: dict[str, int]):
        from utils.io import read_npy

        self.path, self.counts = folder, counts
        self.labels = {}
        for modality, name in files.items():
            if name is None:
                self.labels[modality] = None
                continue
            labels = read_npy(folder / name, "class codes", mmap=True)
            if labels.shape != (counts[modality],) or labels.dtype.kind not in "iu":
                raise DUCHError(f"{folder / name} holds {labels.dtype} {labels.shape}, not the class codes of "
                                f"{counts[modality]} rows; rebuild the index with --overwrite")
            self.labels[modality] = labels

    def close(self) -> None:
        pass

    def row(self, modality: str, row: int) -> dict:
        if not 0 <= row < self.counts[modality]:
            raise DUCHError(f"{self.path}: {modality} row {row} is missing; rebuild the index with --overwrite")
        labels = self.labels.get(modality)
        code = int(labels[row]) if labels is not None and labels[row] >= 0 else None
        return codes_row(modality, int(row), None if code is None else str(code), code, self.counts["images"])

    def rows(self, modality: str, rows: Sequence[int]) -> list[dict]:
        return [self.row(modality, int(r)) for r in rows]

    def matching_rows(self, modality: str, classes: Sequence[str] | None, splits: Sequence[str] | None) -> np.ndarray:
        n = self.counts[modality]
        if splits is not None and CODES_SPLIT not in splits:
            return np.zeros(0, np.int64)
        if classes is None:
            return np.arange(n, dtype=np.int64)
        labels = self.labels.get(modality)
        wanted = [int(c) for c in classes if c.lstrip("-").isdigit()]
        if labels is None or not wanted:
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.isin(labels, wanted)).astype(np.int64)

    def rows_of_files(self, names: Sequence[str]) -> np.ndarray:
        return np.zeros(0, np.int64)  # rows of a codes file have no file names

    def caption_rows_of_images(self, image_rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(image_rows, np.int64)
        return rows[rows < self.counts["captions"]]

    def known_paths(self, paths: Sequence[str]) -> set[str]:
        return set()  # rows of a codes file have no image files


def column_names(labels: np.ndarray | None, n: int) -> dict[str, dict[str, int]]:
    """``name_counts`` of ``n`` rows whose class codes are ``labels`` (-1: none; None: no classes), all ``db``."""
    split = {CODES_SPLIT: int(n)} if n else {}
    if labels is None:
        return {"class": {}, "split": split}
    values, counts = np.unique(labels[labels >= 0], return_counts=True)
    return {"class": dict(sorted((str(v), int(c)) for v, c in zip(values.tolist(), counts.tolist()))),
            "split": split}
