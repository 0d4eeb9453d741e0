"""The field's folder and list layouts, read as published and turned into the Karpathy form.

Two layouts beside the Karpathy and NWPU-Captions JSON objects (docs/datasets.md):

- caption lists (the "precomp" folders of the RSITMD/RSICD retrieval papers): ``<part>_caps.txt``, one
  caption per line, and ``<part>_filename.txt``, one file name per image (each image then owns the same
  number of consecutive caption lines, five in the published files) or one per caption line (an image's
  captions are consecutive lines that name it);
- records files (the CLIP-era papers): a JSON list ``[{"image": "test/x.tif", "caption": [...]}, ...]`` per
  part, ``caption`` a list or one string (then an image's records are merged in file order).

The part (train / val / test) comes from the file names and becomes every image's ``split``, so
``--split json`` uses the split the files carry. An image in two parts is an error naming both.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from configs.files import CAPTION_LIST, FILE_LIST, SPLIT_PARTS, folder_layout_files, record_file_part
from utils.errors import DUCHError
from utils.io import read_json, read_text_lines

PRECOMP = "caption lists"
PUBLISHED_PER_IMAGE = 5  # captions per image in the published caption lists (RSITMD, RSICD, UCM, Sydney)
RECORDS = "records"
FOLDER_LAYOUTS = (
    f"a folder of caption lists ({CAPTION_LIST.format(part='<part>')} with {FILE_LIST.format(part='<part>')}, "
    f"part = {', '.join(SPLIT_PARTS)}) or of records files (<name>_<part>.json, each a JSON list of "
    "{\"image\", \"caption\"})"
)


def _strip_trailing_blanks(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    return lines[:end]


def _image_name(raw: str, where: str) -> tuple[str, str | None]:
    """(file name, folder or None) of a relative image path: ``test/x.tif`` -> (``x.tif``, ``test``)."""
    name = raw.strip().replace("\\", "/")
    if not name:
        raise DUCHError(f"{where}: an empty image name")
    parts = PurePosixPath(name)
    folder = str(parts.parent) if str(parts.parent) not in ("", ".") else None
    return parts.name, folder


def read_caption_lists(folder: Path, part: str) -> list[dict]:
    """One part of a caption-list folder as image entries ``{filename, sentences, split}``.

    The file list holds one name per image (every image then owns ``captions / names`` consecutive lines)
    or one name per caption line; blank caption lines are kept as blank captions (dropped later, with a
    count) and blank lines at the end of either file are ignored.
    """
    caps_path, names_path = folder / CAPTION_LIST.format(part=part), folder / FILE_LIST.format(part=part)
    if not names_path.is_file():
        raise DUCHError(f"{caps_path} has no file list beside it: {names_path.name} names the image of each caption")
    caps = read_text_lines(caps_path, "captions")
    names = _strip_trailing_blanks(read_text_lines(names_path, "file names"))
    blank = next((i for i, n in enumerate(names) if not n.strip()), None)
    if blank is not None:
        raise DUCHError(f"{names_path}: line {blank + 1} is blank; every line names an image file")
    if not names:
        raise DUCHError(f"{names_path}: empty; a part needs captions and file names")
    # blank lines at the end may be captions (a last caption left blank) or not: the count that fits, one line
    # per name first, then the published five per name, then all lines, then as few as fit
    counts = range(len(_strip_trailing_blanks(caps)), len(caps) + 1)
    fitting = [k for k in counts if k and k % len(names) == 0]
    preferred = [k for k in (len(names), PUBLISHED_PER_IMAGE * len(names), len(caps)) if k in fitting]
    caps = caps[:(preferred or fitting or [len(caps)])[0]]
    if not caps:
        raise DUCHError(f"{caps_path}: empty; a part needs captions and file names")
    images: list[dict] = []
    if len(caps) == len(names):  # one name per caption line: an image's captions are consecutive lines
        seen: dict[str, int] = {}
        for line, (name, cap) in enumerate(zip(names, caps), 1):
            if images and images[-1]["_line_name"] == name:
                images[-1]["sentences"].append({"raw": cap})
                continue
            if name in seen:
                raise DUCHError(f"{names_path}: line {line} names {name!r} again after other files (first at line "
                                f"{seen[name]}); an image's caption lines must be consecutive")
            seen[name] = line
            images.append({"_line_name": name, "sentences": [{"raw": cap}]})
    elif len(caps) % len(names) == 0:  # one name per image, the same number of caption lines each
        per = len(caps) // len(names)
        images = [{"_line_name": n, "sentences": [{"raw": c} for c in caps[i * per:(i + 1) * per]]}
                  for i, n in enumerate(names)]
    else:
        raise DUCHError(f"{folder}: {caps_path.name} has {len(caps)} caption lines and {names_path.name} {len(names)} "
                        f"names: neither one name per caption line nor the same number of lines per image")
    for image in images:
        image["filename"], folder_part = _image_name(image.pop("_line_name"), str(names_path))
        if folder_part:
            image["filepath"] = folder_part
        image["split"] = part
    return images


def _record_captions(record, where: str) -> list:
    caption = record.get("caption", record.get("captions"))
    if isinstance(caption, str):
        return [caption]
    if isinstance(caption, list) and caption:
        return caption
    raise DUCHError(f"{where} has caption {caption!r}; a record's 'caption' is a sentence or a list of sentences")


def read_records(path: Path, part: str | None, data=None) -> list[dict]:
    """One records file as image entries; records naming the same image are merged, captions in file order.
    ``data``: the file's content when already read."""
    data = read_json(path, "records file") if data is None else data
    if not isinstance(data, list) or not data:
        raise DUCHError(f"{path}: a records file is a non-empty JSON list of {{\"image\", \"caption\"}} objects")
    images: dict[str, dict] = {}
    for i, record in enumerate(data):
        where = f"{path}: record {i}"
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise DUCHError(f"{where} is not an object with an 'image' path and a 'caption'")
        filename, folder = _image_name(record["image"], where)
        captions = _record_captions(record, where)
        image = images.get(filename)
        if image is None:
            image = images[filename] = {"filename": filename, "sentences": []}
            if folder:
                image["filepath"] = folder
            if part:
                image["split"] = part
        image["sentences"].extend({"raw": c} for c in captions)
    return list(images.values())


def _merge_parts(parts: list[tuple[Path, list[dict]]]) -> list[dict]:
    """The images of every part in part order; an image in two parts (a leak between splits) is an error."""
    where: dict[str, Path] = {}
    out = []
    for path, images in parts:
        for image in images:
            name = image["filename"]
            if name in where:
                raise DUCHError(f"{name!r} occurs in {where[name]} and in {path}: an image belongs to one part")
            where[name] = path
            out.append(image)
    return out


def read_folder(folder: Path) -> dict:
    """A caption-list or records folder as a Karpathy-form dataset (``layout`` says which)."""
    found = folder_layout_files(folder)
    if "precomp" in found:
        parts = [(folder / CAPTION_LIST.format(part=p), read_caption_lists(folder, p)) for p in SPLIT_PARTS
                 if folder / CAPTION_LIST.format(part=p) in found["precomp"]]
        return {"images": _merge_parts(parts), "layout": PRECOMP}
    if "records" in found:
        by_part = sorted(found["records"], key=lambda p: SPLIT_PARTS.index(record_file_part(p.name)))
        return {"images": _merge_parts([(p, read_records(p, record_file_part(p.name))) for p in by_part]),
                "layout": RECORDS}
    raise DUCHError(f"{folder}: a folder holds no dataset this project reads; expected {FOLDER_LAYOUTS}")


def records_file(path: Path, data: list) -> dict:
    """One records file given by itself (its content ``data``): its part from its name (``*_test.json``),
    else no split."""
    return {"images": read_records(path, record_file_part(path.name), data), "layout": RECORDS}


def source_files(path: str | Path) -> list[Path]:
    """The files a dataset source is read from: the JSON itself, or a folder's lists or records files."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    found = folder_layout_files(path)
    if "precomp" in found:
        return [f for p in SPLIT_PARTS for f in (path / CAPTION_LIST.format(part=p), path / FILE_LIST.format(part=p))
                if f.is_file()]
    return found.get("records", [])


def source_digest(path: str | Path) -> str:
    """sha256 of a dataset source: of the file, or of the names and digests of a folder's files."""
    import hashlib

    from utils.io import sha256_of

    files = source_files(path)
    if len(files) == 1 and not Path(path).is_dir():
        return sha256_of(files[0])
    listing = [[f.name, sha256_of(f)] for f in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
