"""Writing an index folder: segments, metadata and the manifest that makes them one index.

Every writer (a build, ``--codes``, ``--add``, ``--remove``) writes its new files under names no
manifest uses yet, then replaces ``manifest.json`` in one rename: a reader that opens the folder sees
the old index or the new one, never a mix. The manifest vouches for every file it names (size, time
and sha256) and for the metadata file by its build id. Files no manifest names any longer (an earlier
build's extra segments, removal lists two generations old) are deleted after the rename.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np

from utils.fingerprints import fingerprint
from utils.io import atomic_path, write_json, write_npy
from utils.search.archive import FORMAT, FORMAT_VERSION, MANIFEST_NAME, MODALITIES
from utils.search.metadata import METADATA_NAME, counted, write_rows
from utils.search.segments import DEFAULT_NPROBE, write_segment

# the files an index folder's writers make (what pruning may delete; nothing else in the folder is touched)
OWN_FILES = re.compile(r"^(codes|outputs|mih_ids|mih_offsets)_(images|captions)(\.s\d+)?\.npy$"
                       r"|^index_(images|captions)(\.s\d+)?\.faiss$|^removed_(images|captions)\.g\d+\.npy$"
                       r"|^labels_(images|captions)\.npy$")


def file_digests(folder: Path, names) -> dict:
    """{name: {"size", "mtime_ns", "sha256"}} of files in ``folder``: what a manifest written last vouches for
    (opening the index re-reads a file's content only when its size or mtime moved)."""
    return {name: {k: v for k, v in fingerprint(folder / name, digest=True).items() if k != "path"} for name in names}


def refuse_existing(out: Path, overwrite: bool) -> None:
    """A new build does not replace an index unasked."""
    from utils.errors import DUCHError

    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise DUCHError(f"{out} already holds an index; pass --overwrite to rebuild it, or choose another --out")


def new_build_id() -> str:
    return uuid.uuid4().hex


def write_first_segments(out: Path, codes: dict, outputs: dict, index_type: str, nlist: int | None = None,
                         nprobe: int = DEFAULT_NPROBE) -> dict:
    """Segment 0 of each modality: {modality: [record]}."""
    return {m: [write_segment(out, m, 0, 0, codes[m], outputs[m], index_type, nlist, nprobe)] for m in MODALITIES}


def write_fresh_metadata(out: Path, rows: dict) -> dict:
    """A new metadata file (renamed into place) of ``rows`` ({modality: row dicts, a list or any iterable, read
    once}); its manifest record."""
    build_id = new_build_id()
    names: dict = {m: {} for m in MODALITIES}
    with atomic_path(out / METADATA_NAME) as tmp:
        write_rows(Path(tmp), build_id, {m: counted(rows[m], names[m]) for m in MODALITIES})
    return {"kind": "sqlite", "file": METADATA_NAME, "build_id": build_id, "names": names}


def referenced_files(manifest: dict) -> list[str]:
    names = [name for m in MODALITIES for record in manifest["segments"][m] for name in record["files"].values()]
    names += [r["file"] for r in (manifest.get("removed") or {}).values() if r and r.get("file")]
    if manifest["metadata"].get("kind") == "columns":
        names += [name for name in manifest["metadata"]["files"].values() if name]
    return names


def summary(segments: dict) -> dict:
    """The manifest's ``index`` entry: the first segment's structure per modality (what a build chose)."""
    first = {m: segments[m][0]["params"] for m in MODALITIES}
    return {"type": first["images"]["type"], **first}


def commit(out: Path, manifest: dict, previous: dict | None = None) -> dict:
    """Vouch for the manifest's files, write it (the one rename that publishes the index), then delete the files
    neither it nor ``previous`` names."""
    manifest["format"], manifest["format_version"] = FORMAT, FORMAT_VERSION
    manifest.setdefault("removed", {m: {"file": None, "rows": 0} for m in MODALITIES})  # a new build: none yet
    manifest.setdefault("generation", 0)
    manifest.setdefault("added", [])
    manifest["counts"] = {**manifest.get("counts", {}),
                          **{m: int(sum(r["rows"] for r in manifest["segments"][m])) for m in MODALITIES}}
    manifest["index"] = summary(manifest["segments"])
    manifest["digests"] = file_digests(out, referenced_files(manifest))
    write_json(out / MANIFEST_NAME, manifest)
    keep = set(referenced_files(manifest)) | set(referenced_files(previous) if previous else ())
    for path in out.iterdir():
        if OWN_FILES.match(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)
    return manifest


def write_removed(out: Path, modality: str, rows: np.ndarray, generation: int) -> dict:
    """A removal list of one modality for a new manifest generation; its record."""
    if not len(rows):
        return {"file": None, "rows": 0}
    name = f"removed_{modality}.g{generation}.npy"
    rows = np.unique(np.asarray(rows, np.int64))
    write_npy(out / name, rows)
    return {"file": name, "rows": int(len(rows))}
