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
