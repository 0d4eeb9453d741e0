"""File I/O with atomic writes: a crash during a save leaves the previous file, never half a file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from utils.errors import DUCHError


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: 0666 minus the process umask (0644 by default)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    mkstemp makes the temporary file 0600; it gets the usual umask-based mode before the rename so
    that results can be shared on lab servers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sha256_of(path: str | Path) -> str:
    """The file's sha256, read in 1 MiB chunks: binds indexes and features to the exact weights they came from."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def read_json(path: str | Path, what: str = "JSON file", hint: str = ""):
    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"{what} not found: {path}" + (f"; {hint}" if hint else ""))
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DUCHError(f"{what} {path} is not valid JSON: {err}") from None


def _set_attrs(dset, attrs: dict | None) -> None:
    for name, value in (attrs or {}).items():
        dset.attrs[name] = value if isinstance(value, (int, float, str)) else json.dumps(value)


def write_h5(path: str | Path, key: str, array: np.ndarray, attrs: dict | None = None) -> None:
    """Write one float32 dataset to an HDF5 file atomically, with optional provenance attributes."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            dset = f.create_dataset(key, data=np.asarray(array, dtype=np.float32))
            _set_attrs(dset, attrs)


def write_h5_rows(path: str | Path, key: str, shape: tuple[int, int], pieces, attrs: dict | None = None) -> None:
    """Write a float32 dataset of ``shape`` from ``pieces``, (rows, array) pairs that together fill every row
    once, atomically: one piece in memory at a time (the merge of torchrun ranks' shards)."""
    import h5py

    filled = np.zeros(shape[0], dtype=bool)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            dset = f.create_dataset(key, shape=shape, dtype=np.float32)
            for rows, array in pieces:
                rows = np.asarray(rows, dtype=np.int64)
                if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
                    dset[rows[0]: rows[0] + len(rows)] = np.asarray(array, dtype=np.float32)
                elif len(rows):
                    sort = np.argsort(rows)
                    dset[rows[sort]] = np.asarray(array, dtype=np.float32)[sort]
                filled[rows] = True
            if not filled.all():
                raise RuntimeError(f"{int((~filled).sum())} rows of {path} were not written")
            _set_attrs(dset, attrs)


def read_h5(path: str | Path, key: str, hint: str = "") -> np.ndarray:
    """Read one dataset of an HDF5 feature file; a missing file or key is a clear error."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"feature file not found: {path}" + (f"; make it with: {hint}" if hint else ""))
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise DUCHError(f"{path} has no dataset {key!r} (it has: {', '.join(f.keys()) or 'none'})")
            return np.asarray(f[key][()], dtype=np.float32)
    except OSError as err:
        raise DUCHError(f"cannot read HDF5 file {path}: {err}") from None


def read_h5_attrs(path: str | Path, key: str, unreadable_ok: bool = False) -> dict:
    """The provenance attributes of one HDF5 dataset as plain Python values (JSON strings decoded); {} when
    the dataset has none. An unreadable file is a DUCHError, or {} with ``unreadable_ok``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = dict(f[key].attrs) if key in f else {}
    except OSError as err:
        if unreadable_ok:
            return {}
        raise DUCHError(f"cannot read HDF5 file {path}: {err}") from None
    out = {}
    for name, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[name] = value
    return out


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove it is writable, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as err:
        raise DUCHError(f"{what} {path} is not writable: {err.strerror or err}") from None
    return path


def refuse_overwrite(path: str | Path, overwrite: bool) -> None:
    """Nothing the user made is overwritten unasked."""
    if Path(path).exists() and not overwrite:
        raise DUCHError(f"{path} already exists; pass --overwrite to replace it")
