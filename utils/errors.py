"""One exception type for problems the user can fix; scripts print it without a traceback."""
from __future__ import annotations

import functools
import sys


class DUCHError(Exception):
    """A user-facing error: bad input, missing file or model, wrong configuration."""


def exit_on_user_error(main):
    """Wrap a script's main(args): a DUCHError becomes one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except DUCHError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def did_you_mean(name, choices) -> str:
    """' (did you mean X?)' for the closest valid name, or '' when none is close: for unknown-name errors."""
    import difflib

    close = difflib.get_close_matches(str(name).lower(), [str(c).lower() for c in choices], n=1, cutoff=0.6)
    if not close:
        return ""
    original = {str(c).lower(): str(c) for c in choices}[close[0]]
    return f" (did you mean {original!r}?)"
