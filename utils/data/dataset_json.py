"""The dataset description JSON: loading, validation, labels and captions in file order.

Every problem is reported with the image's index and file name (and the sentence's index), so a user
can find it in a 10 000-image file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from configs.datasets import DatasetInfo
from utils.data.layouts import FOLDER_LAYOUTS, read_folder, records_file, source_digest
from utils.errors import DUCHError
from utils.io import read_json

RAW_KEY = "raw"


def where_image(j: int, image) -> str:
    """``image 3 (x.tif)``: how every message names an image of the dataset."""
    name = image.get("filename") if isinstance(image, dict) else None
    return f"image {j} ({name})" if isinstance(name, str) and name else f"image {j}"


KARPATHY = "karpathy"
NWPU = "nwpu"
LAYOUTS_EXPECTED = (
    "a Karpathy-layout object {\"images\": [{\"filename\", \"sentences\": [{\"raw\"}, ...], \"split\"}, ...]}, "
    "an NWPU-Captions-layout object {\"<class>\": [{\"filename\", \"raw\", \"raw_1\", ..., \"split\"}, ...], ...}, "
    "a records list [{\"image\", \"caption\"}, ...], or " + FOLDER_LAYOUTS
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


SOURCE_KEY = "source"  # in a file written by captions_augment.py: the source it was made from, and its digest
DROPPED_KEY = "dropped"  # blank captions and images without captions left out when the source was read


def read_source(path: str | Path, hint: str = "") -> tuple[dict, str]:
    """Any layout as a Karpathy-layout dict, and the layout's name."""
    path = Path(path)
    if path.is_dir():
        data = read_folder(path)
        return data, data["layout"]
    data = read_json(path, "dataset JSON", hint)
    if isinstance(data, list) and data and isinstance(data[0], dict) and "image" in data[0]:
        data = records_file(path, data)
        return data, data["layout"]
    layout = detect_layout(data, path)
    return (_nwpu_to_karpathy(data, path) if layout == NWPU else data), layout


def name_key(name: str) -> str:
    """One spelling of a file name: ``./1.png`` is ``1.png``, and NFC and NFD forms of a name are one name."""
    import posixpath
    import unicodedata

    return unicodedata.normalize("NFC", posixpath.normpath(name.replace("\\", "/")))


def _drop_blank(data: dict, path) -> None:
    """Leave out blank captions, then images left without any, recording both counts (``DROPPED_KEY``)."""
    blank, emptied, examples, gone = 0, 0, [], []
    kept = []
    for image in data["images"]:
        sentences = image["sentences"]  # objects whose raw caption, if any, is a string (load_dataset_json)
        left = [s for s in sentences if not (isinstance(s.get(RAW_KEY), str) and not s[RAW_KEY].strip())]
        if len(left) != len(sentences) or not left:
            examples.append(image["filename"])
        blank += len(sentences) - len(left)
        image["sentences"] = left
        if left:
            kept.append(image)
        else:
            emptied += 1
            gone.append(image["filename"])
    before = data.get(DROPPED_KEY) if isinstance(data.get(DROPPED_KEY), dict) else {}
    counts = {k: int(before.get(k, 0)) if isinstance(before.get(k, 0), int) else 0
              for k in ("blank_captions", "images_without_captions")}
    counts["blank_captions"] += blank
    counts["images_without_captions"] += emptied
    seen = before.get("examples") if isinstance(before.get("examples"), list) else []
    gone_before = before.get("images") if isinstance(before.get("images"), list) else []
    data[DROPPED_KEY] = {**counts, "examples": [str(x) for x in seen + examples][:5],
                         "images": [str(x) for x in gone_before + gone]}
    if not kept:
        raise DUCHError(f"{path}: no image has a caption that is not blank")
    data["images"] = kept


def left_out_images(data: dict) -> set[str]:
    """The file names of the images left out for having no caption (a published split may still list them)."""
    return set((data.get(DROPPED_KEY) or {}).get("images", []))


def dropped_warning(data: dict) -> str | None:
    """One line saying what reading the source left out, or None."""
    dropped = data.get(DROPPED_KEY) or {}
    blank, emptied = dropped.get("blank_captions", 0), dropped.get("images_without_captions", 0)
    if not blank and not emptied:
        return None
    return (f"{blank} blank caption{'s' if blank != 1 else ''} and {emptied} image{'s' if emptied != 1 else ''} "
            f"left without a caption were left out (e.g. {', '.join(dropped.get('examples', [])[:3])})")


def warn_dropped(data: dict) -> None:
    """Print the ``dropped_warning`` on standard error (terminal-safe), if there is one."""
    warning = dropped_warning(data)
    if warning:
        import sys

        from utils.terminal import printable

        print(f"warning: {printable(warning)}", file=sys.stderr)


def check_source_unchanged(data: dict, path, ds: DatasetInfo | None) -> None:
    """A file made from a source (``augmented_DS.json``) whose source has changed since is refused, with the
    command that rebuilds it: its captions and split would no longer be the source's."""
    from configs.files import PROVENANCE_KEY, TXT_AUG_BY_KEY, augment_command

    record = data.get(SOURCE_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        return
    source = Path(record["path"])
    if not source.exists() or source_digest(source) == record.get("sha256"):
        return
    made = data.get(PROVENANCE_KEY) if isinstance(data.get(PROVENANCE_KEY), dict) else {}
    txt_augs = [TXT_AUG_BY_KEY[k] for k in TXT_AUG_BY_KEY if k in made] or ["rule-based"]
    fix = "; then ".join(
        augment_command(ds, txt_aug, Path(path).parent, overwrite=True) if ds is not None
        else f"python captions_augment.py --dataset {record.get('dataset', source)} --txt-aug {txt_aug} --overwrite"
        for txt_aug in txt_augs)
    raise DUCHError(f"{path} was made from {source}, which has changed since (its captions or split would no longer "
                    f"be the source's); rebuild it with: {fix}")


def load_dataset_json(path: str | Path, hint: str = "", ds: DatasetInfo | None = None) -> dict:
    """Load, normalise and validate a dataset's captions in any layout (docs/datasets.md).

    Every layout comes back as a Karpathy-layout dict: an ``images`` list of objects, each with a
    non-empty string ``filename`` (unique under any spelling) and at least one sentence object whose
    ``raw`` caption is a non-blank string. Blank captions, then images left without one, are left out
    and counted (``dropped_warning``). The number of captions may differ between images
    (``caption_offsets``), except for a dataset whose facts fix it (``ds.captions_per_image``: UCM, RSICD
    and the demo have 5). A file made from a source that has changed since is refused.
    """
    data, layout = read_source(path, hint)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise DUCHError(f"{path}: expected a JSON object with a non-empty 'images' list")
    check_source_unchanged(data, path, ds)
    seen: dict[str, int] = {}
    for j, image in enumerate(images):
        if not isinstance(image, dict):
            raise DUCHError(f"{path}: image {j} is a JSON {type(image).__name__}, not an object with 'filename' and "
                            "'sentences'")
        filename = image.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            found = "no 'filename'" if filename is None else f"'filename' {filename!r}, not a file name"
            raise DUCHError(f"{path}: image {j} has {found}; every image needs the name of its image file")
        check_relative_name(filename, f"{path}: image {j} has 'filename'")
        key = name_key(filename)
        if key in seen:  # split files and labels CSVs name images by file name
            first = images[seen[key]]["filename"]
            other = f", the first spelled {first!r}" if first != filename else ""
            raise DUCHError(f"{path}: duplicate file name {filename!r} (images {seen[key]} and {j}{other}); every "
                            f"image needs its own file")
        seen[key] = j
        for field in ("classname", "filepath"):
            if field in image:
                check_relative_name(str(image[field]), f"{path}: {where_image(j, image)} has {field!r}")
        sentences = image.get("sentences")
        if sentences is None and layout == KARPATHY and "raw" in image:
            raise DUCHError(f"{path}: mixed layouts: {where_image(j, image)} has NWPU-style 'raw' fields in a "
                            f"Karpathy-layout file; expected {LAYOUTS_EXPECTED}")
        if not isinstance(sentences, list):
            raise DUCHError(f"{path}: {where_image(j, image)} has no 'sentences' list; every image needs its captions")
        for i, sentence in enumerate(sentences):
            if not isinstance(sentence, dict):
                raise DUCHError(f"{path}: sentence {i} of {where_image(j, image)} is a JSON "
                                f"{type(sentence).__name__}, not an object")
            text = sentence.get(RAW_KEY)
            if RAW_KEY in sentence and not isinstance(text, str):  # a blank one is left out below, a non-string refused
                raise DUCHError(f"{path}: sentence {i} of {where_image(j, image)} has {RAW_KEY!r} = {text!r}; every "
                                "caption must be a string")
    _drop_blank(data, path)
    if ds is not None and ds.captions_per_image is not None:
        for j, image in enumerate(data["images"]):
            if len(image["sentences"]) != ds.captions_per_image:
                count = len(image["sentences"])
                raise DUCHError(f"{path}: {where_image(j, image)} has {count} captions; every {ds.name} image has "
                                f"exactly {ds.captions_per_image} (for another count, give the JSON itself: "
                                f"--dataset PATH)")
    captions(data, RAW_KEY, source=path)
    data["layout"] = data.get("layout") if layout == KARPATHY and data.get("layout") else layout
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


def captions(data: dict, key: str = RAW_KEY, source: str | Path = "dataset JSON") -> list[str]:
    """All captions for a sentence key, row ``offsets[j] + i`` = sentence i of image j (``5 j + i`` with 5
    captions per image); each a non-empty string."""
    out = []
    for j, image in enumerate(data["images"]):
        for i, sentence in enumerate(image["sentences"]):
            if key not in sentence:
                raise DUCHError(f"{source}: sentence {i} of {where_image(j, image)} has no {key!r} caption")
            text = sentence[key]
            if not isinstance(text, str) or not text.strip():
                raise DUCHError(
                    f"{source}: sentence {i} of {where_image(j, image)} has {key!r} = {text!r}; every caption must be "
                    "a non-empty string"
                )
            out.append(text)
    return out


def sentence_keys_present(data: dict, keys) -> list[str]:
    """The keys among ``keys`` that every sentence of the dataset has."""
    sentences = [s for image in data["images"] for s in image["sentences"]]
    return [k for k in keys if all(k in s for s in sentences)]
