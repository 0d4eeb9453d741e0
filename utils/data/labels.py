"""Image labels of a dataset: which rule gives them, in which order, and when to refuse.

Labels are right or refused (docs/datasets.md): an explicit ``--labels CSV`` always wins (``--labels none``:
no labels, recall only); then the JSON's ``classcode``, then its ``classname``; then a release's fixed id
blocks (UCM: 100 ids per class); then the file name before its last ``_`` when every file has such a prefix.
A prefix on only some files (RSICD's numeric names) is refused, never turned into a class per file. A named
dataset knows its published class count, and a rule that finds another count is a warning naming both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from configs.datasets import DatasetInfo
from utils.data.dataset_json import where_image
from utils.errors import DUCHError

NO_LABELS = "none"  # --labels none: the class-level metrics are skipped, recall is reported


@dataclass
class ImageLabels:
    """The labels of a dataset's images: ``values`` are class codes (N,) or multi-hot rows (N, L), or None."""

    values: np.ndarray | None
    n_classes: int
    rule: str  # where they came from: classcode, classname, id blocks, file names, labels CSV, none
    names: list[str]
    warnings: list[str] = field(default_factory=list)  # e.g. a class count other than the release's

    @property
    def present(self) -> bool:
        return self.values is not None


def class_names_from_filenames(filenames: list[str]) -> list[str]:
    """The class of ``<class>_<n>.<ext>`` file names (RSICD, RSITMD, NWPU): the stem before its last '_'."""
    return [Path(name).stem.rsplit("_", 1)[0] for name in filenames]


def _has_prefix(name: str) -> bool:
    stem = Path(name).stem
    return "_" in stem and bool(stem.rsplit("_", 1)[0])


def _classcode(j: int, image: dict, source) -> int:
    code = image["classcode"]
    integral = isinstance(code, int) or (isinstance(code, float) and code.is_integer())
    if isinstance(code, bool) or not integral or code < 0 or code >= 2 ** 31:
        raise DUCHError(f"{source}: {where_image(j, image)} has classcode {code!r}; a class code is a non-negative "
                        f"integer below 2^31")
    return int(code)


def image_labels(data: dict, ds: DatasetInfo | None = None, source: str | Path = "dataset JSON") -> np.ndarray:
    """The ``classcode`` of every image, in JSON order (checked against the JSON's ``num_classes``); a
    missing one names the image."""
    images = data["images"]
    missing = [j for j, image in enumerate(images) if "classcode" not in image]
    if missing:
        j = missing[0]
        rule = f"{ds.name} labels" if ds is not None else "labels"
        raise DUCHError(f"{source}: {where_image(j, images[j])} has no 'classcode' ({len(missing)} of {len(images)} "
                        f"images lack one); {rule} come from each image's 'classcode'")
    labels = np.asarray([_classcode(j, image, source) for j, image in enumerate(images)], dtype=np.int64)
    n_classes = data.get("num_classes")
    if isinstance(n_classes, int) and not isinstance(n_classes, bool) and labels.max() >= n_classes:
        j = int(np.argmax(labels >= n_classes))
        raise DUCHError(f"{source}: {where_image(j, images[j])} has classcode {labels[j]}, but the JSON's "
                        f"num_classes is {n_classes} (codes 0..{n_classes - 1})")
    return labels


def read_labels_csv(path: str | Path, filenames: list[str]) -> tuple[np.ndarray, list[str]]:
    """``filename,label[;label...]`` rows (a header ``filename,label`` is skipped) -> class codes, or
    multi-hot rows when any file has several labels; class names sorted. Every image needs a row and
    every row a known image."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"labels file {path} not found (--labels takes a CSV of filename,label[;label...], or none)")
    index = {name: j for j, name in enumerate(filenames)}
    by_image: dict[int, list[str]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is not part of the header
            for line_no, row in enumerate(csv.reader(f), 1):
                if not row or not "".join(row).strip():
                    continue
                if line_no == 1 and [c.strip().lower() for c in row[:2]] == ["filename", "label"]:
                    continue
                if len(row) != 2 or not row[1].strip():
                    raise DUCHError(f"{path}: line {line_no} is not 'filename,label[;label...]': {','.join(row)!r}")
                name = row[0].strip()
                if name not in index:
                    raise DUCHError(f"{path}: line {line_no} names {name!r}, which is not an image of the dataset")
                if index[name] in by_image:
                    raise DUCHError(f"{path}: line {line_no}: {name!r} has a second row")
                by_image[index[name]] = [x.strip() for x in row[1].split(";") if x.strip()]
    except UnicodeDecodeError as err:
        raise DUCHError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); a labels CSV is UTF-8") from None
    except csv.Error as err:
        raise DUCHError(f"{path}: not a readable CSV ({err})") from None
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


def block_labels(data: dict, ds: DatasetInfo, source) -> ImageLabels:
    """A release whose classes are fixed by image id (UCM): ``<id>.<ext>``, ids 1.. in blocks of ``block_size``."""
    images = data["images"]
    top = ds.block_size * len(ds.class_names)
    codes = []
    for j, image in enumerate(images):
        match = re.fullmatch(r"0*([1-9]\d{0,8})", Path(image["filename"]).stem)
        if match is None or int(match.group(1)) > top:
            raise DUCHError(
                f"{source}: {where_image(j, image)} has no 'classcode' and is not one of {ds.name}'s image ids "
                f"1..{top} (whose classes are fixed: {ds.block_size} ids per class); give every image a classcode, or "
                f"labels with --labels CSV (--labels none for recall only)")
        codes.append((int(match.group(1)) - 1) // ds.block_size)
    return ImageLabels(np.asarray(codes, dtype=np.int64), len(ds.class_names), "id blocks", list(ds.class_names))


def _prefix_labels(filenames: list[str], ds: DatasetInfo | None, source) -> ImageLabels | None:
    """The file-name prefix rule: every file ``<class>_<n>``, else refused when only some are, else None."""
    having = [_has_prefix(name) for name in filenames]
    if all(having):
        values, classes = _names_to_codes(class_names_from_filenames(filenames))
        if len(classes) < len(filenames):  # a prefix per image is no class
            return ImageLabels(values, len(classes), "file names", classes)
        return None
    required = ds is not None and ds.label_rule == "filename"
    if any(having) or required:
        bare = [name for name, has in zip(filenames, having) if not has]
        who = f"{ds.name} labels" if ds is not None else "labels"
        raise DUCHError(
            f"{source}: {len(bare):,} of {len(filenames):,} file names have no '<class>_' prefix (e.g. "
            f"{', '.join(repr(n) for n in bare[:3])}), so the {who} cannot come from the file names (each of "
            f"those would be a class of its own); give them with --labels CSV (filename,label rows), or pass "
            f"--labels none to score instance-level recall only")
    return None


def _inferred_rule(data: dict, ds: DatasetInfo | None) -> str:
    """The rule the labels would come from without --labels (for the note that the CSV replaced it)."""
    images = data["images"]
    for key in ("classcode", "classname"):
        if any(key in image for image in images):
            return key
    if ds is not None and ds.block_size:
        return "id blocks"
    if any(_has_prefix(image["filename"]) for image in images):
        return "file names"
    return "none"


def _count_warning(labels: ImageLabels, ds: DatasetInfo | None) -> ImageLabels:
    if labels.values is None or ds is None or ds.num_classes is None or labels.values.ndim != 1:
        return labels
    found = int(np.unique(labels.values).size)
    if found != ds.num_classes:
        labels.warnings.append(f"the labels ({labels.rule}) give {found} classes; the {ds.name} release has "
                               f"{ds.num_classes}: check them, or give the published classes with --labels CSV")
    return labels


def resolve_labels(data: dict, ds: DatasetInfo | None = None, source: str | Path = "dataset JSON",
                   labels_csv: str | Path | None = None) -> ImageLabels:
    """The image labels by the rules of this module's docstring, with the warnings they raise."""
    images = data["images"]
    if labels_csv is not None:
        replaced = _inferred_rule(data, ds)
        if str(labels_csv).lower() == NO_LABELS:
            out = ImageLabels(None, 0, "none (--labels none)", [])
        else:
            values, classes = read_labels_csv(labels_csv, [image["filename"] for image in images])
            out = ImageLabels(values, len(classes), "labels CSV", classes)
        if replaced != "none":
            out.warnings.append(f"labels from --labels {labels_csv}, replacing the {replaced} rule")
        return _count_warning(out, ds)
    for key in ("classcode", "classname"):
        having = sum(key in image for image in images)
        if having == len(images):
            if key == "classcode":
                values = image_labels(data, ds, source)
                n = data.get("num_classes")
                n = n if isinstance(n, int) and not isinstance(n, bool) else int(values.max()) + 1
                return _count_warning(ImageLabels(values, n, key, []), ds)
            values, classes = _names_to_codes([str(image["classname"]) for image in images])
            return _count_warning(ImageLabels(values, len(classes), key, classes), ds)
        if having:
            j = next(j for j, image in enumerate(images) if key not in image)
            raise DUCHError(f"{source}: {where_image(j, images[j])} has no {key!r} ({len(images) - having} of "
                            f"{len(images)} images lack one); give every image one, or none")
    if ds is not None and ds.block_size:
        return _count_warning(block_labels(data, ds, source), ds)
    if ds is not None and ds.label_rule == "classcode":
        image_labels(data, ds, source)  # raises, naming the first image without a classcode
    by_prefix = _prefix_labels([image["filename"] for image in images], ds, source)
    if by_prefix is not None:
        return _count_warning(by_prefix, ds)
    return ImageLabels(None, 0, "none", [])
