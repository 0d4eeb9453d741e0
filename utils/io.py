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
    remove_stale_tmp(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, file_mode())
            os.replace(tmp_path, path)
        except OSError as err:  # a write that fails (a full disk) names the output, not a temporary name or none
            if err.filename is None or str(err.filename) == str(tmp_path):
                raise OSError(err.errno, err.strerror or str(err), str(path)) from None
            raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_tmp(path: str | Path) -> list[Path]:
    """Remove the hidden ``.<name>.<pid>.*.tmp`` files of ``path`` whose writer (that pid) no longer runs: an
    interrupted or killed write leaves nothing behind for long. Returns what was removed."""
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


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


def read_text_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark dropped; the last newline ends the last line, it does
    not start an empty one); an unreadable or non-UTF-8 file is a DUCHError naming it and ``what`` it holds."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DUCHError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); {what} are UTF-8 lines") from None
    except OSError as err:
        raise DUCHError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    return text.splitlines()


def read_json(path: str | Path, what: str = "JSON file", hint: str = ""):
    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"{what} not found: {path}" + (f"; {hint}" if hint else ""))
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DUCHError(f"{what} {path} is not valid JSON: {err}" + (f"; {hint}" if hint else "")) from None
    except RecursionError:
        raise DUCHError(f"{what} {path} nests deeper than Python's JSON reader goes; not a file of this kind"
                        ) from None


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


def check_output_file(path: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """An output file that can be written, checked before the work that fills it: not a folder, its folder
    exists and is writable, and it is not replaced unasked."""
    path = Path(path)
    if path.is_dir():
        raise DUCHError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'metrics.json'}")
    parent = path.parent
    if not parent.is_dir():
        raise DUCHError(f"{flag} {path}: the folder {parent} does not exist; create it first or choose another place")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DUCHError(f"{flag} {path}: the folder {parent} is not writable")
    refuse_overwrite(path, overwrite)
    return path


def refuse_overwrite(path: str | Path, overwrite: bool) -> None:
    """Nothing the user made is overwritten unasked."""
    if Path(path).exists() and not overwrite:
        raise DUCHError(f"{path} already exists; pass --overwrite to replace it")


# ----------------------------------------------------------------------------------------------
# .npy / .npz: headers checked before any data is read

MAX_ARRAY_BYTES = 8 << 30  # one array larger than this (8 GiB) is refused before it is read


def first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _npy_header(f, what: str):
    """(shape, fortran_order, dtype) of the .npy stream at ``f``; a damaged or object header is a DUCHError."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(f)
        reader = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = reader(f, max_header_size=10000)
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise DUCHError(f"{what} is not a readable .npy array ({first_line(err)})") from None
    if dtype.hasobject:
        raise DUCHError(f"{what} holds Python objects (an object array), not numbers; refused (it would need pickle)")
    return shape, fortran, dtype


def _check_size(shape, dtype, what: str, max_bytes: int, stored: int | None = None) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    nbytes = n * dtype.itemsize
    if nbytes > max_bytes:
        raise DUCHError(f"{what} would take {nbytes / 2**30:.2f} GiB in memory (shape {tuple(shape)}, {dtype}); "
                        f"the limit is {max_bytes / 2**30:.2f} GiB: refused before reading")
    if stored is not None and stored < nbytes:
        raise DUCHError(f"{what} is truncated: its header says {nbytes} bytes of data, the file holds {stored}")
    return nbytes


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """One .npy array, written atomically (a reader sees the old file or the whole new one)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def read_npy(path: str | Path, what: str = "array file", max_bytes: int = MAX_ARRAY_BYTES,
             mmap: bool = False) -> np.ndarray:
    """One .npy array, its header (shape, dtype, no objects, size within ``max_bytes``, not truncated) checked
    before the data is read. Every problem is a DUCHError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"{what} not found: {path}")
    label = f"{what} {path}"
    with open(path, "rb") as f:
        shape, _, dtype = _npy_header(f, label)
        _check_size(shape, dtype, label, max_bytes, stored=path.stat().st_size - f.tell())
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as err:
        raise DUCHError(f"{label} is not a readable .npy array ({str(err).splitlines()[0]})") from None


def npz_keys(path: str | Path, what: str = "npz file") -> list[str]:
    """The array names of an .npz file, without reading any array."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"{what} not found: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        kind = "a single .npy array" if path.read_bytes()[:6] == b"\x93NUMPY" else "not an .npz file"
        raise DUCHError(f"{what} {path} is {kind} ({err}); an .npz archive of named arrays is expected") from None


def npz_headers(path: str | Path, keys, what: str = "npz file") -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of the ``keys`` an .npz file holds, from their headers only: a reader checks that the
    arrays fit together (row counts, widths, kinds) before any data is decompressed."""
    return _scan_npz(path, keys, what, None)


def read_npz(path: str | Path, keys, what: str = "npz file", max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """Only ``keys`` of an .npz file, each header checked before its data is read: a small archive holding
    gigabytes of compressed zeros under a key nobody asked for costs nothing, and one under a needed key is
    refused by its declared size. Damaged, truncated or object arrays are a DUCHError naming the key."""
    return _scan_npz(path, keys, what, max_bytes)


def _scan_npz(path: str | Path, keys, what: str, max_bytes: int | None) -> dict:
    """The headers of ``keys`` (``max_bytes`` None), or their arrays, each header checked first."""
    import zipfile

    path = Path(path)
    present = set(npz_keys(path, what))
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for key in keys:
                if key not in present:
                    continue
                label = f"{what} {path}: array {key!r}"
                info = z.getinfo(key + ".npy")
                with z.open(info) as f:
                    shape, fortran, dtype = _npy_header(f, label)
                    if max_bytes is None:
                        out[key] = (tuple(int(d) for d in shape), dtype)
                        continue
                    _check_size(shape, dtype, label, max_bytes, stored=info.file_size - f.tell())
                    count = 1
                    for d in shape:
                        count *= int(d)
                    data = f.read(count * dtype.itemsize)
                if len(data) != count * dtype.itemsize:
                    raise DUCHError(f"{label} is truncated")
                array = np.frombuffer(data, dtype=dtype, count=count)
                out[key] = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as err:
        raise DUCHError(f"{what} {path} is damaged or truncated ({first_line(err)})") from None
    return out
