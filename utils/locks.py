"""One writer per output: a lock file beside the output, naming the process that holds it.

``OutputLock(path)`` creates ``.<name>.lock`` next to ``path`` with ``O_CREAT | O_EXCL`` (atomic on
local and NFSv3+ file systems) and writes who holds it: pid, host, start time and command line. A
second process asking for the same output is refused with that record, so two trainings with the same
tag, or two ``search.py index`` into one folder, can never mix their files. A lock left by a process
that no longer exists (same host, pid gone) is taken over; one from another host is never guessed
about: the message says which file to remove.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from utils.errors import DUCHError

UNREADABLE_GRACE_S = 10.0  # a lock file still empty after this long was left by a process killed while writing it


def lock_path_of(target: str | Path) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class OutputLock:
    """Exclusive right to write ``target`` (a file or folder); a context manager."""

    def __init__(self, target: str | Path, what: str = "output"):
        self.target, self.what = Path(target), what
        self.path = lock_path_of(target)
        self.held = False

    def owner(self) -> dict | None:
        """The holder's record, or None when the lock file is absent or not (yet) readable."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _stale(self, record: dict | None) -> bool:
        if record is None:
            try:
                return time.time() - self.path.stat().st_mtime > UNREADABLE_GRACE_S
            except FileNotFoundError:
                return True
        pid = record.get("pid")
        return record.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)

    def acquire(self) -> "OutputLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DUCHError(f"the folder of {self.what} {self.target} is not writable: {err.strerror or err}") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(sys.argv)}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except PermissionError as err:
                raise DUCHError(f"the folder of {self.what} {self.target} is not writable: {err.strerror}") from None
            except FileExistsError:
                holder = self.owner()
                if self._stale(holder):
                    try:
                        self.path.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                if holder is None:
                    who = "another process (its lock file is being written)"
                else:
                    who = (f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
                           f"({holder.get('command')})")
                raise DUCHError(f"{self.target} is being written by {who}; wait for it to finish, or, if that process "
                                f"is gone, remove {self.path}") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            self.held = True
            return self
        raise DUCHError(f"could not take the lock {self.path} for {self.target}")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self.owner()
        if holder is None or holder.get("pid") == os.getpid():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
