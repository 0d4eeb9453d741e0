"""User errors: scripts print a ``DUCHError`` as one line, without a traceback, and exit with status 2.

The class and ``did_you_mean`` live in ``configs.errors`` (configs, the bottom layer, raise them too); they
are re-exported here, the place every other module imports them from.
"""
from __future__ import annotations

import functools
import sys

from configs.errors import DUCHError, did_you_mean

__all__ = ["DUCHError", "did_you_mean", "exit_on_user_error"]


def describe_os_error(err: OSError) -> str:
    """One line for an OSError: what failed, on which file (a full disk, a read-only folder, ...)."""
    import errno

    what = err.strerror or str(err) or type(err).__name__
    where = f": {err.filename}" if getattr(err, "filename", None) else ""
    hint = {errno.ENOSPC: "free some space and run the same command again",
            errno.EDQUOT: "free some space and run the same command again",
            errno.EROFS: "write somewhere else",
            errno.EACCES: "check the permissions, or write somewhere else"}.get(err.errno, "")
    return f"{what}{where}" + (f"; {hint}" if hint else "")


def exit_on_user_error(main):
    """Wrap a script's main(args): a problem the user can act on becomes one line on stderr, never a traceback.

    DUCHError (bad input), OSError (a full disk, a read-only folder, a vanished file) and MemoryError exit
    with status 2; Ctrl-C prints ``interrupted`` and exits 130. Text in the line is printable only
    (``utils.terminal``): a file name from a dataset cannot rewrite the terminal.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from utils.terminal import printable

        def fail(message: str, code: int = 2):
            print(printable(message, keep="\n"), file=sys.stderr)
            raise SystemExit(code) from None

        try:
            return main(*args, **kwargs)
        except DUCHError as err:
            fail(f"error: {err}")
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except MemoryError:
            fail("error: out of memory; use a smaller --batch-size or fewer items, or a machine with more memory")
        except OSError as err:
            fail(f"error: {describe_os_error(err)}")
        except RuntimeError as err:
            if type(err).__name__ != "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
                raise
            fail(f"error: the device ran out of memory ({str(err).splitlines()[0]}); "
                 f"use a smaller --batch-size or --device cpu")

    return wrapper
