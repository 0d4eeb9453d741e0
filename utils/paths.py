"""Path containment: a path taken from a data file or a name must stay inside its folder.

A dataset JSON ``filename``, a run ``--tag`` or a path recorded in an index's metadata is data, not a
command: ``../../etc/x.png``, an absolute path or a symlink pointing out of the folder is refused by
name instead of being read, written or embedded in a page. Everything is checked on the resolved path
(``..`` collapsed, symlinks followed), so a link inside the folder that points outside is caught too.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from utils.errors import DUCHError

# characters a name that becomes one folder or file name may hold: letters, digits and ``._+-=,@``
_SAFE_CHARS = "A-Za-z0-9_.+=,@-"
_SAFE_NAME = re.compile(rf"^[{_SAFE_CHARS}]+$")
MAX_NAME_LENGTH = 128


def below(path: str, base: str) -> bool:
    """Whether the normalised path ``path`` is the normalised folder ``base`` or lies below it, as written."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def is_inside(path: str | Path, folder: str | Path, folder_real: str | None = None) -> bool:
    """Whether ``path``, resolved (symlinks followed), is ``folder`` itself or lies below it
    (``folder_real``: ``os.path.realpath(folder)`` when the caller has it)."""
    return below(os.path.realpath(path), folder_real or os.path.realpath(folder))


def _plainly_below(base_real: str, relative: str) -> bool:
    """True when ``base_real / relative`` is inside ``base_real`` without resolving anything: no ``..`` part
    and no symlink among the parts that exist (a part that does not exist ends the walk: nothing below it
    exists either). False means "not shown": the caller resolves the whole path. One lstat per part that
    exists, where a full resolve lstats every part of the folder too."""
    import stat

    current = base_real
    for part in relative.split("/"):
        if part in ("", "."):
            continue
        if part == ".." or os.sep in part:
            return False
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return True


def contained(folder: str | Path, relative: str, what: str = "path", folder_real: str | None = None) -> Path:
    """``folder / relative`` when it stays inside ``folder`` once resolved; otherwise a DUCHError naming it.

    ``relative`` is a name read from data: an absolute path, a ``..`` that climbs out, a NUL byte or a
    symlink leading out of ``folder`` is refused. ``folder_real``: ``os.path.realpath(folder)`` when the
    caller checks many names in one folder.
    """
    text = str(relative)
    if not text or "\x00" in text:
        raise DUCHError(f"{what} {text!r} is not a file name")
    if os.path.isabs(text) or (os.name == "nt" and re.match(r"^[A-Za-z]:", text)):
        raise DUCHError(f"{what} {text!r} is an absolute path; it must be a name inside {folder}")
    path = Path(folder) / text
    base = folder_real or os.path.realpath(folder)
    if not _plainly_below(base, text) and not is_inside(path, folder, base):
        raise DUCHError(f"{what} {text!r} leads outside {folder} (resolved: {os.path.realpath(path)}); refused")
    return path


def check_inside(path: str | Path, folders, what: str = "path") -> Path:
    """``path`` itself when it resolves inside one of ``folders``; otherwise a DUCHError naming it."""
    folders = [f for f in folders if f]
    if any(is_inside(path, f) for f in folders):
        return Path(path)
    raise DUCHError(f"{what} {path} lies outside {' and '.join(map(str, folders)) or 'its folder'}; refused")


def sanitised_name(name: str, max_length: int = MAX_NAME_LENGTH, empty: str = "_") -> str:
    """``name`` made into one safe file-name part: characters ``safe_name`` refuses become ``_``, leading dots
    go, at most ``max_length`` characters (``empty`` when nothing is left). For names taken from data."""
    cleaned = re.sub(rf"[^{_SAFE_CHARS}]", "_", str(name)).lstrip(".")[:max_length]
    return cleaned or empty


def safe_name(name: str, what: str = "name") -> str:
    """A name that becomes one folder or file name (a run --tag): letters, digits and ``._+-=,@``, not
    starting with a dot, no path separator, at most 128 characters. Refused by name otherwise."""
    text = str(name)
    if not text or len(text) > MAX_NAME_LENGTH or text.startswith(".") or not _SAFE_NAME.match(text):
        raise DUCHError(
            f"{what} {text!r} cannot name a folder: use 1 to {MAX_NAME_LENGTH} letters, digits and . _ + - = , @ "
            f"(no path separators, no leading dot, no spaces)"
        )
    return text
