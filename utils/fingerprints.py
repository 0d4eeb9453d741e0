"""Fingerprints of input files: a result is bound to the exact inputs it was made from.

``fingerprint(path)`` records size, modification time and, where it is cheap (files up to
``DIGEST_LIMIT``), a sha256 of the content. ``changed_inputs(recorded)`` compares a record with the
files as they are now and names every one that differs; ``check_unchanged`` turns that into one
DUCHError. A file whose mtime moved but whose digest is the same (copied back, touched) still matches;
without a digest (a large file) size and mtime decide.
"""
from __future__ import annotations

import os
from pathlib import Path

from utils.errors import DUCHError
from utils.io import sha256_of

DIGEST_LIMIT = 1 << 30  # files up to 1 GiB get a content digest (about a second each)


def fingerprint(path: str | Path, digest: bool | None = None) -> dict:
    """{"path", "size", "mtime_ns"[, "sha256"]} of one file; ``digest`` None: only when at most DIGEST_LIMIT."""
    path = Path(path)
    stat = path.stat()
    out = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if digest or (digest is None and stat.st_size <= DIGEST_LIMIT):
        out["sha256"] = sha256_of(path)
    return out


def fingerprints(paths: dict, digest: bool | None = None) -> dict:
    """Fingerprints of named files {name: path}; absent files are left out."""
    return {name: fingerprint(p, digest) for name, p in paths.items() if p is not None and Path(p).is_file()}


def difference(record: dict, path: str | Path | None = None) -> str | None:
    """How the file now differs from its record ("size 10 -> 12", "content", "missing"), None when it matches."""
    path = Path(path or record["path"])
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    if stat.st_size != record.get("size"):
        return f"size {record.get('size')} -> {stat.st_size} bytes"
    if stat.st_mtime_ns == record.get("mtime_ns"):
        return None
    if "sha256" in record:
        return None if sha256_of(path) == record["sha256"] else "content (sha256) changed"
    return "modified since (size equal, mtime changed, no digest recorded)"


def changed_inputs(recorded: dict, paths: dict | None = None) -> list[str]:
    """'<name> <path>: <difference>' for every recorded input that no longer matches. ``paths``: {name: the
    file read now} where it is not the recorded path (data moved to another folder)."""
    out = []
    for name, record in (recorded or {}).items():
        if not isinstance(record, dict) or "path" not in record:
            continue
        path = (paths or {}).get(name, record["path"])
        why = difference(record, path)
        if why:
            out.append(f"{name} {path}: {why}")
    return out


def check_unchanged(recorded: dict, what: str, fix: str) -> None:
    """A DUCHError naming every input of ``what`` that changed since it was recorded."""
    changed = changed_inputs(recorded)
    if changed:
        raise DUCHError(f"{what}: input files changed since it was made ({'; '.join(changed)}); {fix}")


def same_stat(record: dict, path: str | Path) -> bool:
    """Size and mtime only (for many small files, e.g. the images of an --image-dir)."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return stat.st_size == record.get("size") and stat.st_mtime_ns == record.get("mtime_ns")


def file_stats(paths) -> dict:
    """{path: [size, mtime_ns]} of many files (the images of a folder): cheap enough for thousands of files."""
    out = {}
    for path in paths:
        stat = os.stat(path)
        out[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return out


def changed_files(before: dict, now: dict, limit: int = 3) -> str:
    """The files whose [size, mtime_ns] differ between two ``file_stats`` records, named (at most ``limit``)."""
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if not changed:
        return ""
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more
