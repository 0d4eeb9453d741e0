"""Splits of a dataset into train / validation / query / database images, and the caption each uses.

Three protocols (docs/datasets.md):

- ``duch``: the original release's random split, exactly: Python's ``random`` module re-seeded at fixed
  points; the same calls in the same order give the same indices for the same seed. Validation and
  test both use the query images (as the original).
- ``json``: the JSON's own ``split`` field: train on "train", select the model on "val", test on "test";
  class-level queries are the test images, the database every image outside test.
- ``file``: a split.json written by an earlier run (any protocol), read back by file names; or a folder of
  published file lists ``<part>_filename.txt`` (train, val, test), one name per image or per caption.

Caption choices draw from each image's own caption count: with 5 captions per image the rows are the
original's ``5 j + i``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.data.dataset_json import name_key
from utils.errors import DUCHError
from utils.io import read_json, read_text_lines

SPLIT_FORMAT = "duch-split/1"
PARTS = ("train", "val", "query", "db")


@dataclass
class Split:
    train: list[int]
    query: list[int]
    db: list[int]
    train_captions: list[int]  # caption row used for each train image (5*j + i with 5 captions per image)
    query_captions: list[int]
    db_captions: list[int]
    val: list[int] = field(default_factory=list)  # model-selection queries (json): empty = validate on query/db
    val_captions: list[int] = field(default_factory=list)
    protocol: str = "duch"

    @property
    def test(self) -> list[int]:
        """The test images: instance-level recall runs within them and all their captions."""
        return self.query

    @property
    def valid_query(self) -> list[int]:
        return self.val or self.query

    @property
    def valid_db(self) -> list[int]:
        """Validation database: the train images when a validation part exists (never the test images)."""
        return self.train if self.val else self.db

    def to_json(self, filenames: list[str] | None = None, offsets: np.ndarray | None = None) -> dict:
        """Indices as before (``train``, ``query_captions``, ...) and, given the file names, the portable
        form that ``--split file`` reads: file names per part and each image's caption index."""
        out = {k: list(map(int, getattr(self, k))) for k in
               ("train", "query", "db", "train_captions", "query_captions", "db_captions", "val", "val_captions")}
        out["protocol"] = self.protocol
        if filenames is not None and offsets is not None:
            out["format"] = SPLIT_FORMAT
            out["files"] = {part: [filenames[j] for j in getattr(self, part)] for part in PARTS}
            out["caption_index"] = {
                part: [int(r - offsets[j]) for j, r in zip(getattr(self, part), getattr(self, f"{part}_captions"))]
                for part in PARTS
            }
        return out


def split_indices(n_images: int, seed: int = 42, train_share: float = 0.5, query_share: float = 0.2):
    """train = sorted(sample(range(N), int(0.5 N))); query = sorted(sample(rest, int(0.2 |rest|)))."""
    random.seed(seed)
    train = sorted(random.sample(range(n_images), int(train_share * n_images)))
    train_set = set(train)
    rest = [i for i in range(n_images) if i not in train_set]
    query = sorted(random.sample(rest, int(query_share * len(rest))))
    query_set = set(query)
    db = [i for i in rest if i not in query_set]
    return train, query, db


def choose_captions(images: list[int], seed: int = 42, offsets=None) -> list[int]:
    """Re-seed, then pick one caption row of each image, in order: ``offsets[j] + sample(range(count_j), 1)``
    (``5 j + sample(range(5), 1)`` without offsets: the original's call)."""
    random.seed(seed)
    if offsets is None:
        return [5 * j + random.sample(range(5), 1)[0] for j in images]
    offsets = np.asarray(offsets)
    return [int(offsets[j]) + random.sample(range(int(offsets[j + 1] - offsets[j])), 1)[0] for j in images]


def make_split(n_images: int, seed: int = 42, offsets=None) -> Split:
    """The ``duch`` protocol."""
    train, query, db = split_indices(n_images, seed)
    return Split(train, query, db, choose_captions(train, seed, offsets), choose_captions(query, seed, offsets),
                 choose_captions(db, seed, offsets))


def json_split(images: list[dict], offsets, seed: int = 42, source="dataset JSON") -> Split:
    """The ``json`` protocol: the JSON's ``split`` of every image (train / val / test; RSICD's and UCM's
    "val" included); queries = test, database = train + val, validation = val against train."""
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for j, image in enumerate(images):
        value = image.get("split")
        if value not in parts:
            name = image.get("filename")
            found = "no 'split' field" if value is None else f"split {value!r}"
            raise DUCHError(f"{source}: image {j} ({name}) has {found}; --split json needs train, val or test on "
                            f"every image (or use --split duch, or --split file PATH)")
    for j, image in enumerate(images):
        parts[image["split"]].append(j)
    for part in ("train", "test"):
        if not parts[part]:
            raise DUCHError(f"{source}: no image has split {part!r}; --split json needs train and test images")
    train, val, test = parts["train"], parts["val"], parts["test"]
    db = sorted(train + val)
    return Split(train, test, db, choose_captions(train, seed, offsets), choose_captions(test, seed, offsets),
                 choose_captions(db, seed, offsets), val=val, val_captions=choose_captions(val, seed, offsets),
                 protocol="json")


SPLIT_FORMS = ("a split.json written by main.py (its 'files' per part)",
               "a folder of file lists train_filename.txt, val_filename.txt, test_filename.txt (one name per "
               "image or per caption)")


def _name_index(filenames: list[str]) -> dict[str, int]:
    """Every image by its normalised name, and by its bare name where that is unique."""
    index = {name_key(name): j for j, name in enumerate(filenames)}
    bare: dict[str, list[int]] = {}
    for j, name in enumerate(filenames):
        bare.setdefault(name_key(Path(name).name), []).append(j)
    for name, js in bare.items():
        if len(js) == 1:
            index.setdefault(name, js[0])
    return index


def _lookup(index: dict[str, int], names: list[str], where: str, left_out: frozenset | set = frozenset()) -> list[int]:
    """The rows of the named images; a name of an image left out for having no caption is skipped."""
    found, unknown = [], []
    for name in names:
        if name in left_out:
            continue
        j = index.get(name_key(name), index.get(name_key(Path(name).name)))
        (unknown.append(name) if j is None else found.append(j))
    if unknown:
        raise DUCHError(f"{where} names {len(unknown)} files the dataset does not have (e.g. {unknown[0]!r})")
    return found


def _check_parts(parts: dict[str, list[int]], filenames: list[str], source) -> None:
    """No image twice in a part, in two of train / val / test, or both a query and a database item."""
    for part, js in parts.items():
        if len(set(js)) != len(js):
            twice = next(j for j in js if js.count(j) > 1)
            raise DUCHError(f"{source}: {filenames[twice]!r} occurs twice in {part}")
    pairs = [("train", "val"), ("train", "query"), ("val", "query"), ("query", "db")]
    for a, b in pairs:
        shared = set(parts.get(a, [])) & set(parts.get(b, []))
        if shared:
            j = min(shared)
            a_name, b_name = ("test" if x == "query" else x for x in (a, b))
            raise DUCHError(f"{source}: {len(shared)} images are in both {a_name} and {b_name} (e.g. "
                            f"{filenames[j]!r}); an image belongs to one part")


def read_split_lists(folder: Path, filenames: list[str], offsets, seed: int = 42,
                     left_out: frozenset | set = frozenset()) -> Split:
    """A folder of published ``<part>_filename.txt`` lists: train, val (optional) and test, as the ``json``
    protocol uses them (queries = test, database = train + val)."""
    from configs.files import FILE_LIST, SPLIT_PARTS

    index = _name_index(filenames)
    parts: dict[str, list[int]] = {}
    for part in SPLIT_PARTS:
        path = folder / FILE_LIST.format(part=part)
        if not path.is_file():
            continue
        lines = [line.strip() for line in read_text_lines(path, "file names") if line.strip()]
        names = [n for i, n in enumerate(lines) if i == 0 or n != lines[i - 1]]  # one name per caption: runs
        parts[part] = _lookup(index, names, str(path), left_out)
    if not parts.get("train") or not parts.get("test"):
        raise DUCHError(f"{folder}: a split folder needs {FILE_LIST.format(part='train')} and "
                        f"{FILE_LIST.format(part='test')}; --split file takes {' or '.join(SPLIT_FORMS)}")
    train, val, test = parts["train"], parts.get("val", []), parts["test"]
    db = sorted(train + val)
    _check_parts({"train": train, "val": val, "query": test, "db": db}, filenames, folder)
    return Split(train, test, db, choose_captions(train, seed, offsets), choose_captions(test, seed, offsets),
                 choose_captions(db, seed, offsets), val=val, val_captions=choose_captions(val, seed, offsets),
                 protocol="file")


def read_split_file(path: str | Path, filenames: list[str], offsets, seed: int = 42,
                    left_out: frozenset | set = frozenset()) -> Split:
    """A split.json's portable part (file names and caption indices), or a folder of file lists, as indices
    of this dataset. ``left_out``: names of images the dataset left out for having no caption, which a
    published list may still name (skipped)."""
    path = Path(path)
    if path.is_dir():
        return read_split_lists(path, filenames, offsets, seed, left_out)
    saved = read_json(path, "split file", f"--split file takes {' or '.join(SPLIT_FORMS)}")
    if not isinstance(saved, dict) or not isinstance(saved.get("files"), dict):
        raise DUCHError(f"{path}: not a split this project reads; --split file takes {' or '.join(SPLIT_FORMS)}")
    index = _name_index(filenames)
    offsets = np.asarray(offsets)
    chosen = saved.get("caption_index") if isinstance(saved.get("caption_index"), dict) else {}
    parts: dict[str, list[int]] = {}
    rows: dict[str, list[int]] = {}
    for part in PARTS:
        names = saved["files"].get(part, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DUCHError(f"{path}: files.{part} is not a list of file names")
        parts[part] = _lookup(index, names, f"{path}: files.{part}")
        picks = chosen.get(part)
        if picks is None:
            rows[part] = choose_captions(parts[part], 42, offsets)
            continue
        if not isinstance(picks, list) or len(picks) != len(names):
            raise DUCHError(f"{path}: caption_index.{part} must list one caption index per file of files.{part}")
        for j, i in zip(parts[part], picks):
            count = int(offsets[j + 1] - offsets[j])
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < count:
                raise DUCHError(f"{path}: caption_index.{part} gives {i!r} for {filenames[j]!r}, "
                                f"which has {count} captions")
        rows[part] = [int(offsets[j]) + int(i) for j, i in zip(parts[part], picks)]
    if not parts["train"] or not parts["query"] or not parts["db"]:
        raise DUCHError(f"{path}: a split needs train, query and db files")
    _check_parts(parts, filenames, path)
    return Split(parts["train"], parts["query"], parts["db"], rows["train"], rows["query"], rows["db"],
                 val=parts["val"], val_captions=rows["val"], protocol="file")


def resolve_split(protocol: str, images: list[dict], offsets, seed: int = 42, split_file: str | Path | None = None,
                  source="dataset JSON", left_out: frozenset | set = frozenset()) -> Split:
    """The split of a run for ``--split duch|json|file``."""
    if protocol == "duch":
        uniform5 = np.all(np.diff(offsets) == 5)
        split = make_split(len(images), seed, None if uniform5 else offsets)
        return split
    if protocol == "json":
        return json_split(images, offsets, seed, source)
    if protocol == "file":
        if not split_file:
            raise DUCHError("--split file needs the path of a split.json or of a folder of file lists: "
                            "--split file PATH")
        return read_split_file(split_file, [image["filename"] for image in images], offsets, seed, left_out)
    raise DUCHError(f"unknown split protocol {protocol!r}; choose one of: duch, json, file PATH")
