"""User errors: scripts print a ``DUCHError`` as one line, without a traceback, and exit with status 2.

The class and ``did_you_mean`` live in ``configs.errors`` (configs, the bottom layer, raise them too); they
are re-exported here, the place every other module imports them from.
"""
from __future__ import annotations

import functools
import sys

from configs.errors import DUCHError, did_you_mean

__all__ = ["DUCHError", "did_you_mean", "exit_on_user_error"]


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
