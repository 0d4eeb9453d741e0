"""The dataset description JSON: loading, validation, labels and captions in file order.

Every problem is reported with the image's index and file name (and the sentence's index), so a user
can find it in a 10 000-image file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.datasets import CAPTIONS_PER_IMAGE, DatasetInfo
from utils.errors import DUCHError
from utils.io import read_json

RAW_KEY = "raw"


def _where(j: int, image) -> str:
    name = image.get("filename") if isinstance(image, dict) else None
    return f"image {j} ({name})" if isinstance(name, str) and name else f"image {j}"


def load_dataset_json(path: str | Path, hint: str = "") -> dict:
    """Load and validate a dataset JSON.

    An ``images`` list of objects, each with a non-empty string ``filename`` and exactly 5 sentence
    objects whose ``raw`` caption is a non-empty string.
    """
    data = read_json(path, "dataset JSON", hint)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise DUCHError(f"{path}: expected a JSON object with a non-empty 'images' list")
    for j, image in enumerate(images):
        if not isinstance(image, dict):
            raise DUCHError(f"{path}: image {j} is a JSON {type(image).__name__}, not an object with 'filename' and "
                            "'sentences'")
        filename = image.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            found = "no 'filename'" if filename is None else f"'filename' {filename!r}, not a file name"
            raise DUCHError(f"{path}: image {j} has {found}; every image needs the name of its image file")
        check_relative_name(filename, f"{path}: image {j} has 'filename'")
        if "classname" in image:
            check_relative_name(str(image["classname"]), f"{path}: {_where(j, image)} has 'classname'")
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or len(sentences) != CAPTIONS_PER_IMAGE:
            n = len(sentences) if isinstance(sentences, list) else 0
            raise DUCHError(
                f"{path}: {_where(j, image)} has {n} captions; every image must have exactly {CAPTIONS_PER_IMAGE}"
            )
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, dict):
                raise DUCHError(f"{path}: sentence {i} of {_where(j, image)} is a JSON {type(sentence).__name__}, not "
                                "an object")
    captions(data, RAW_KEY, source=path)
    return data


def check_relative_name(name: str, what: str) -> None:
    """A file or folder name from the JSON is relative and never climbs: no absolute path, no ``..``, no NUL.
    (Symlinks are caught where the file is opened: ``utils.paths.contained``.)"""
    import os
    from pathlib import PurePosixPath, PureWindowsPath

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
    """All captions for a sentence key, row ``5*j + i`` = sentence i of image j; each a non-empty string."""
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
