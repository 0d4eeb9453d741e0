"""Resumable preprocessing: long work saved piece by piece, each piece with the fingerprint of the settings
that made it, so that a rerun of the same command redoes only the missing pieces.

Three kinds of pieces share this one mechanism:

- the partial file of one process (``.NAME.partial.npz`` beside the output): the rows encoded so far, saved
  every minute and when the run is interrupted (image features);
- the part file of one torchrun rank (``.NAME.part-R-of-W.npz``): that rank's finished share of the rows,
  merged by rank 0 into the output (image and caption features);
- a folder of shards (``shard_000000.npy``, ...) under a plan (``plan.json``, the folder's fingerprint):
  the features of the new images of a search index (``search.py index --image-dir``).

File formats are described in docs/formats.md.
"""
from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from utils.errors import DUCHError
from utils.io import atomic_path, read_json, write_h5_rows, write_json, write_npy

PLAN_NAME = "plan.json"


# ---- npz pieces with a fingerprint: partial files and part files ------------------------------------------

def partial_path(out_path: str | Path) -> Path:
    """Where an interrupted run keeps the rows it has made (beside the output, hidden)."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.name}.partial.npz")


def part_path(out_path: str | Path, rank: int, world_size: int) -> Path:
    """Where rank ``rank`` keeps its share of ``out_path`` (hidden, beside it) until rank 0 has merged them."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.name}.part-{rank}-of-{world_size}.npz")


def save_piece(path: str | Path, fingerprint: str, **arrays) -> None:
    """Arrays written atomically with the fingerprint of the settings that made them."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, fingerprint=np.array(fingerprint), **arrays)


def load_piece(path: str | Path, fingerprint: str, rows: tuple[str, int] | None = None,
               notes: bool = False) -> dict | None:
    """The arrays of a piece made with the same settings, or None (absent, unreadable or other settings).

    ``rows=(name, n)``: the array ``name`` must also have ``n`` rows. ``notes``: say on stderr why an existing
    file is not used."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["fingerprint"]) != fingerprint or (rows is not None and saved[rows[0]].shape[0] != rows[1]):
                if notes:
                    why = _what_changed(str(saved["fingerprint"]), fingerprint) or "other settings"
                    print(f"note: {path} was made with {why}; starting afresh", file=sys.stderr)
                return None
            return {k: saved[k].copy() for k in saved.files if k != "fingerprint"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        if notes:
            print(f"note: {path} is unreadable; starting afresh", file=sys.stderr)
        return None


def _what_changed(before: str, now: str) -> str:
    """Which settings or input files differ between two JSON fingerprints ('' when they cannot be compared)."""
    import json

    from utils.fingerprints import changed_files

    try:
        a, b = json.loads(before), json.loads(now)
        a, b = (json.loads(a["settings"]), json.loads(b["settings"])) if "settings" in a and "settings" in b else (a, b)
    except (ValueError, TypeError, KeyError):
        return ""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return ""
    parts = []
    if isinstance(a.get("inputs"), dict) and isinstance(b.get("inputs"), dict) and a["inputs"] != b["inputs"]:
        parts.append(f"images that changed since ({changed_files(a['inputs'], b['inputs'])})")
    keys = sorted(k for k in set(a) | set(b) if k != "inputs" and a.get(k) != b.get(k))
    if keys:
        parts.append(f"other settings ({', '.join(keys)})")
    return " and ".join(parts)


def merge_parts(out_path: Path, key: str, shape: tuple[int, int], world_size: int, attrs: dict,
                load: Callable[[int, Path], tuple[Iterable[int], np.ndarray] | None], missing: str) -> None:
    """Rank 0 writes the ranks' part files into ``out_path`` (dataset ``key``, ``attrs``), one part in memory at
    a time, then deletes them. ``load(rank, part file)`` gives (rows, features), or None when the part is
    missing or incomplete: then the error says ``rank R's part file F {missing}; rerun the same command``."""
    parts = [part_path(out_path, rank, world_size) for rank in range(world_size)]

    def pieces():
        for rank, part in enumerate(parts):
            saved = load(rank, part)
            if saved is None:
                raise DUCHError(f"rank {rank}'s part file {part} {missing}; rerun the same command")
            yield saved

    write_h5_rows(out_path, key, shape, pieces(), attrs=attrs)
    for part in parts:
        part.unlink(missing_ok=True)


# ---- a folder of shards under a plan: the new images of a search index ------------------------------------

class ShardFolder:
    """Shards ``shard_000000.npy``, ... of ``n`` rows split into runs of ``shard_size``, in ``folder``, whose
    ``plan.json`` says what they are features of; a shard file exists only when it is complete."""

    def __init__(self, folder: Path, n: int, shard_size: int, width: int):
        self.folder, self.n, self.shard_size, self.width = Path(folder), n, shard_size, width
        self.starts = list(range(0, n, shard_size))
        self.paths = [self.folder / f"shard_{s // shard_size:06d}.npy" for s in self.starts]

    def rows(self, i: int) -> range:
        return range(self.starts[i], min(self.starts[i] + self.shard_size, self.n))

    def plan_differs(self, plan: dict) -> bool:
        """Whether the folder holds shards of another plan (then they cannot be reused)."""
        path = self.folder / PLAN_NAME
        return path.is_file() and read_json(path, "shard plan") != plan

    def start(self, plan: dict, discard: bool) -> None:
        """Write ``plan`` (rank 0 only); ``discard``: remove the shards of another plan first."""
        if discard:
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / PLAN_NAME, plan, indent=None)

    def complete(self, i: int) -> bool:
        if not self.paths[i].is_file():
            return False
        try:
            return np.load(self.paths[i], mmap_mode="r").shape == (len(self.rows(i)), self.width)
        except (OSError, ValueError):
            return False

    def todo(self) -> list[int]:
        return [i for i in range(len(self.starts)) if not self.complete(i)]

    def save(self, i: int, features: np.ndarray) -> None:
        write_npy(self.paths[i], features)

    def load_all(self) -> np.ndarray:
        return np.concatenate([np.load(p) for p in self.paths])
