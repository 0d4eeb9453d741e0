"""Multi-file outputs published in one step: a new folder is built beside the old one, then renamed into place.

``publish_folder(staging, final, keep)`` swaps a finished ``staging`` folder in for ``final`` with two
renames (``final`` -> ``.<name>.old``, ``staging`` -> ``final``), then moves back from the old folder every
entry ``keep`` says the project did not write (a user's notes, an index folder), and only then deletes
the old folder. A reader sees the old folder or the new one, never a mix. A kill between any two steps is
repaired by ``recover_folder(final)``, which every writer calls (under its lock) before it starts:

- ``.old`` present, ``final`` absent (killed after the first rename): the old folder is put back;
- ``.old`` and ``final`` present (killed after the second): the kept entries are moved over, ``.old`` removed.

Nothing outside the hidden ``.old`` / staging folders this module names is ever deleted.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

STEP_HOOK_ENV = "DUCH_PUBLISH_EXIT_AFTER_STEP"  # tests: os._exit after this step, as a kill would


def old_path_of(final: str | Path) -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.old"


def staging_path_of(final: str | Path, purpose: str = "new") -> Path:
    final = Path(final)
    return final.parent / f".{final.name}.{purpose}"


def _step(n: int) -> None:
    if os.environ.get(STEP_HOOK_ENV) == str(n):
        os._exit(137)


def _carry(old: Path, final: Path, keep: Callable[[str], bool]) -> None:
    for entry in sorted(old.iterdir()):
        if keep(entry.name) and not (final / entry.name).exists():
            os.replace(entry, final / entry.name)


def publish_folder(staging: str | Path, final: str | Path, keep: Callable[[str], bool] = lambda name: False) -> None:
    """Put the finished ``staging`` folder in the place of ``final`` (which may not exist)."""
    staging, final = Path(staging), Path(final)
    old = old_path_of(final)
    recover_folder(final, keep)
    if final.exists():
        os.replace(final, old)
        _step(1)
    os.replace(staging, final)
    _step(2)
    if old.exists():
        _carry(old, final, keep)
        _step(3)
        shutil.rmtree(old)


def recover_folder(final: str | Path, keep: Callable[[str], bool] = lambda name: False) -> str | None:
    """Finish or undo a publish that was killed half-way; returns what was done (None: nothing to do)."""
    final = Path(final)
    old = old_path_of(final)
    if not old.exists():
        return None
    if not final.exists():
        os.replace(old, final)
        return "restored"
    _carry(old, final, keep)
    shutil.rmtree(old)
    return "completed"
