"""The dataset description JSON: loading, validation, labels and captions in file order.

Every problem is reported with the image's index and file name (and the sentence's index), so a user
can find it in a 10 000-image file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs.datasets import DatasetInfo
from utils.errors import DUCHError
from utils.io import read_json

RAW_KEY = "raw"


def _where(j: int, image) -> str:
    name = image.get("filename") if isinstance(image, dict) else None
    return f"image {j} ({name})" if isinstance(name, str) and name else f"image {j}"


KARPATHY = "karpathy"
NWPU = "nwpu"
LAYOUTS_EXPECTED = (
    "a Karpathy-layout object {\"images\": [{\"filename\", \"sentences\": [{\"raw\"}, ...], \"split\"}, ...]} "
    "or an NWPU-Captions-layout object {\"<class>\": [{\"filename\", \"raw\", \"raw_1\", ..., \"split\"}, ...], ...}"
)
_NWPU_CAPTION = re.compile(r"raw(?:_(\d+))?")


def detect_layout(data, path: str | Path = "dataset JSON") -> str:
    """``karpathy`` (an ``images`` list) or ``nwpu`` (an object of class name -> list of entries with ``raw``)."""
    if isinstance(data, dict) and "images" in data:
        return KARPATHY
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        entries = [e for v in data.values() for e in v]
        if entries and all(isinstance(e, dict) and "raw" in e for e in entries):
            return NWPU
        bad = next((e for e in entries if not (isinstance(e, dict) and "raw" in e)), None)
        if bad is not None and isinstance(bad, dict) and "sentences" in bad:
            raise DUCHError(f"{path}: mixed layouts: class lists (NWPU layout) hold entries with 'sentences' "
                            f"(Karpathy layout); expected {LAYOUTS_EXPECTED}")
    raise DUCHError(f"{path}: not a captions JSON this project reads; expected {LAYOUTS_EXPECTED}")


def _nwpu_to_karpathy(data: dict, path) -> dict:
    """The NWPU-Captions object as Karpathy-layout images: class lists in file order, captions ``raw``,
    ``raw_1``, ``raw_2`` ... in that order, ``classname`` = the class key (images sit in its folder)."""
    images = []
    for classname, entries in data.items():
        for entry in entries:
            keys = sorted((int(m.group(1) or 0), k) for k in entry if (m := _NWPU_CAPTION.fullmatch(str(k))))
            image = {k: v for k, v in entry.items() if not _NWPU_CAPTION.fullmatch(str(k))}
            image["sentences"] = [{"raw": entry[k]} for _, k in keys]
            image["classname"] = classname
            images.append(image)
    return {"dataset": "NWPU", "layout": NWPU, "images": images}


def load_dataset_json(path: str | Path, hint: str = "", ds: DatasetInfo | None = None) -> dict:
    """Load, normalise and validate a captions JSON (docs/datasets.md).

    Either layout comes back as a Karpathy-layout dict: an ``images`` list of objects, each with a
    non-empty string ``filename`` (unique) and at least one sentence object whose ``raw`` caption is a
    non-empty string; the number of captions may differ between images (``caption_offsets``), except for
    a dataset whose facts fix it (``ds.captions_per_image``: UCM, RSICD and the demo have 5).
    """
    data = read_json(path, "dataset JSON", hint)
    layout = detect_layout(data, path)
    if layout == NWPU:
        data = _nwpu_to_karpathy(data, path)
    images = data.get("images")
    if not isinstance(images, list) or not images:
        raise DUCHError(f"{path}: expected a JSON object with a non-empty 'images' list")
    seen: dict[str, int] = {}
    for j, image in enumerate(images):
        if not isinstance(image, dict):
            raise DUCHError(f"{path}: image {j} is a JSON {type(image).__name__}, not an object with 'filename' and "
                            "'sentences'")
        filename = image.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            found = "no 'filename'" if filename is None else f"'filename' {filename!r}, not a file name"
            raise DUCHError(f"{path}: image {j} has {found}; every image needs the name of its image file")
        if filename in seen:  # split files and labels CSVs name images by file name
            raise DUCHError(f"{path}: duplicate file name {filename!r} (images {seen[filename]} and {j}); "
                            f"every image needs its own file")
        seen[filename] = j
        check_relative_name(filename, f"{path}: image {j} has 'filename'")
        if "classname" in image:
            check_relative_name(str(image["classname"]), f"{path}: {_where(j, image)} has 'classname'")
        sentences = image.get("sentences")
        if sentences is None and layout == KARPATHY and "raw" in image:
            raise DUCHError(f"{path}: mixed layouts: {_where(j, image)} has NWPU-style 'raw' fields in a "
                            f"Karpathy-layout file; expected {LAYOUTS_EXPECTED}")
        if not isinstance(sentences, list) or not sentences:
            raise DUCHError(f"{path}: {_where(j, image)} has no captions; every image needs at least one")
        if ds is not None and ds.captions_per_image is not None and len(sentences) != ds.captions_per_image:
            raise DUCHError(f"{path}: {_where(j, image)} has {len(sentences)} captions; every {ds.name} image has "
                            f"exactly {ds.captions_per_image} (for another count, give the JSON itself: "
                            f"--dataset PATH)")
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, dict):
                raise DUCHError(f"{path}: sentence {i} of {_where(j, image)} is a JSON {type(sentence).__name__}, not "
                                "an object")
    captions(data, RAW_KEY, source=path)
    data["layout"] = layout
    return data


def caption_counts(data: dict) -> np.ndarray:
    """Number of captions of each image, in JSON order."""
    return np.asarray([len(image["sentences"]) for image in data["images"]], dtype=np.int64)


def caption_offsets(data_or_counts) -> np.ndarray:
    """(N + 1,) first caption row of each image, then the total: image j owns rows offsets[j]:offsets[j + 1]
    (``5 j + i`` when every image has 5)."""
    if isinstance(data_or_counts, dict):
        counts = caption_counts(data_or_counts)
    else:
        counts = np.asarray(data_or_counts, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def caption_owner(offsets: np.ndarray) -> np.ndarray:
    """Image index of every caption row."""
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def uniform_captions(data: dict) -> int | None:
    """The shared caption count when every image has the same number, else None (ragged)."""
    counts = caption_counts(data)
    return int(counts[0]) if np.all(counts == counts[0]) else None
def check_relative_name(name: str, what: str) -> None:
    """A file or folder name from the JSON is relative and never climbs: no absolute path, no ``..``, no NUL.
    (Symlinks are caught where the file is opened: ``utils.paths.contained``.)"""
    import os
    from pathlib import PurePosixPath, PureWindowsPath

    if ".." not in name and ":" not in name and "\x00" not in name and not name.startswith(("/", "\\")):
        return  # none of the forms below can occur (a drive needs ':', a climb '..'): 21,842 names in 0.03 s
    parts = PurePosixPath(name.replace("\\", "/")).parts
    absolute = os.path.isabs(name) or PureWindowsPath(name).drive or name.startswith(("/", "\\"))
    if "\x00" in name or absolute or ".." in parts:
        raise DUCHError(f"{what} {name!r}: a path that leads outside the image folder; "
                        f"names must be relative, without '..'")


def class_names_from_filenames(filenames: list[str]) -> list[str]:
    """RSICD JSON files carry no classcode: the class is the file name before its last '_'."""
    return [Path(name).stem.rsplit("_", 1)[0] for name in filenames]


def _classcode(j: int, image: dict, source) -> int:
    code = image["classcode"]
    if isinstance(code, bool) or not isinstance(code,
                                                (int, float)) or (isinstance(code, float) and not code.is_integer()):
        raise DUCHError(f"{source}: {_where(j, image)} has classcode {code!r}; a class code is a non-negative integer")
    if code < 0:
        raise DUCHError(f"{source}: {_where(j, image)} has classcode {code!r}; a class code is a non-negative integer")
    return int(code)


def image_labels(data: dict, ds: DatasetInfo | None = None, source: str | Path = "dataset JSON") -> np.ndarray:
    """Integer class code of each image, in JSON order.

    Labels are ``classcode``. Only a dataset whose documented rule says so (``ds.labels_from_filenames``:
    RSICD, whose public JSON carries none) takes them from file names, and only when no image has a
    ``classcode``; classes are then numbered in sorted class-name order. Anything else missing a
    label names the image.
    """
    images = data["images"]
    missing = [j for j, image in enumerate(images) if "classcode" not in image]
    if not missing:
        labels = np.asarray([_classcode(j, image, source) for j, image in enumerate(images)], dtype=np.int64)
        n_classes = data.get("num_classes")
        if isinstance(n_classes, int) and not isinstance(n_classes, bool) and labels.max() >= n_classes:
            j = int(np.argmax(labels >= n_classes))
            raise DUCHError(
                f"{source}: {_where(j, images[j])} has classcode {labels[j]}, but the JSON's num_classes is "
                f"{n_classes} (codes 0..{n_classes - 1})"
            )
        return labels
    if ds is not None and ds.labels_from_filenames and len(missing) == len(images):
        names = class_names_from_filenames([image["filename"] for image in images])
        codes = {name: code for code, name in enumerate(sorted(set(names)))}
        return np.asarray([codes[name] for name in names], dtype=np.int64)
    j = missing[0]
    rule = (
        f"{ds.name} labels come from 'classcode' on every image, or from the file names when no image has one"
        if ds is not None and ds.labels_from_filenames
        else f"{ds.name + ' ' if ds is not None else ''}labels come from each image's 'classcode'"
    )
    raise DUCHError(
        f"{source}: {_where(j, images[j])} has no 'classcode' ({len(missing)} of {len(images)} images lack one); {rule}"
    )


def captions(data: dict, key: str = RAW_KEY, source: str | Path = "dataset JSON") -> list[str]:
    """All captions for a sentence key, row ``offsets[j] + i`` = sentence i of image j (``5 j + i`` with 5
    captions per image); each a non-empty string."""
    out = []
    for j, image in enumerate(data["images"]):
        for i, sentence in enumerate(image["sentences"]):
            if key not in sentence:
                raise DUCHError(f"{source}: sentence {i} of {_where(j, image)} has no {key!r} caption")
            text = sentence[key]
            if not isinstance(text, str) or not text.strip():
                raise DUCHError(
                    f"{source}: sentence {i} of {_where(j, image)} has {key!r} = {text!r}; every caption must be a "
                    "non-empty string"
                )
            out.append(text)
    return out


def sentence_keys_present(data: dict, keys) -> list[str]:
    """The keys among ``keys`` that every sentence of the dataset has."""
    sentences = [s for image in data["images"] for s in image["sentences"]]
    return [k for k in keys if all(k in s for s in sentences)]


@dataclass
class ImageLabels:
    """The labels of a dataset's images: ``values`` are class codes (N,) or multi-hot rows (N, L), or None."""

    values: np.ndarray | None
    n_classes: int
    rule: str  # where they came from: classcode, classname, file names, labels CSV, none
    names: list[str]

    @property
    def present(self) -> bool:
        return self.values is not None


def read_labels_csv(path: str | Path, filenames: list[str]) -> tuple[np.ndarray, list[str]]:
    """``filename,label[;label...]`` rows (a header ``filename,label`` is skipped) -> class codes, or
    multi-hot rows when any file has several labels; class names sorted. Every image needs a row and
    every row a known image."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"labels file {path} not found (--labels takes a CSV of filename,label[;label...])")
    index = {name: j for j, name in enumerate(filenames)}
    by_image: dict[int, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if line_no == 1 and [c.strip().lower() for c in row[:2]] == ["filename", "label"]:
                continue
            if len(row) != 2 or not row[1].strip():
                raise DUCHError(f"{path}: line {line_no} is not 'filename,label[;label...]': {','.join(row)!r}")
            name = row[0].strip()
            if name not in index:
                raise DUCHError(f"{path}: line {line_no} names {name!r}, which is not an image of the dataset JSON")
            if index[name] in by_image:
                raise DUCHError(f"{path}: line {line_no}: {name!r} has a second row")
            by_image[index[name]] = [x.strip() for x in row[1].split(";") if x.strip()]
    missing = [filenames[j] for j in range(len(filenames)) if j not in by_image]
    if missing:
        raise DUCHError(f"{path}: {len(missing)} of {len(filenames)} images have no row (e.g. {missing[0]!r}); "
                        f"every image needs a label")
    names = sorted({label for labels in by_image.values() for label in labels})
    code = {name: c for c, name in enumerate(names)}
    if all(len(v) == 1 for v in by_image.values()):
        return np.asarray([code[by_image[j][0]] for j in range(len(filenames))], dtype=np.int64), names
    hot = np.zeros((len(filenames), len(names)), dtype=np.uint8)
    for j, labels in by_image.items():
        hot[j, [code[x] for x in labels]] = 1
    return hot, names


def _names_to_codes(names: list[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(names))
    code = {name: c for c, name in enumerate(classes)}
    return np.asarray([code[n] for n in names], dtype=np.int64), classes


def resolve_labels(data: dict, ds: DatasetInfo | None = None, source: str | Path = "dataset JSON",
                   labels_csv: str | Path | None = None) -> ImageLabels:
    """The image labels, in this order (docs/datasets.md): the JSON's ``classcode`` on every image, else its
    ``classname`` on every image; else the file name before its last ``_`` when every file name has that
    form; else the ``labels_csv`` file; else none. A dataset whose rule requires class codes (UCM, demo)
    keeps the strict ``image_labels`` rule; a class field on only some images is an error."""
    images = data["images"]
    if ds is not None and ds.label_rule != "auto":
        values = image_labels(data, ds, source)
        n = data.get("num_classes")
        n = n if isinstance(n, int) and not isinstance(n, bool) else int(values.max()) + 1
        return ImageLabels(values, n, "classcode" if "classcode" in images[0] else "file names", [])
    for field in ("classcode", "classname"):
        having = sum(field in image for image in images)
        if having == len(images):
            if field == "classcode":
                values = image_labels(data, None, source)
                n = data.get("num_classes")
                n = n if isinstance(n, int) and not isinstance(n, bool) else int(values.max()) + 1
                return ImageLabels(values, n, field, [])
            names = [str(image["classname"]) for image in images]
            values, classes = _names_to_codes(names)
            return ImageLabels(values, len(classes), field, classes)
        if having:
            j = next(j for j, image in enumerate(images) if field not in image)
            raise DUCHError(f"{source}: {_where(j, images[j])} has no {field!r} "
                            f"({len(images) - having} of {len(images)} images lack one); give every image one, or none")
    filenames = [image["filename"] for image in images]
    stems = [Path(name).stem for name in filenames]
    if all("_" in stem and stem.rsplit("_", 1)[0] for stem in stems):
        values, classes = _names_to_codes(class_names_from_filenames(filenames))
        if len(classes) < len(images):  # a prefix per image is no class
            return ImageLabels(values, len(classes), "file names", classes)
    if labels_csv is not None:
        values, classes = read_labels_csv(labels_csv, filenames)
        return ImageLabels(values, len(classes), "labels CSV", classes)
    return ImageLabels(None, 0, "none", [])
