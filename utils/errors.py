"""One exception type for problems the user can fix; scripts print it without a traceback."""
from __future__ import annotations

import functools
import sys


class DUCHError(Exception):
    """A user-facing error: bad input, missing file or model, wrong configuration."""


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
            fail(f"error: the device ran out of memory ({str(err).splitlines()[0]}); use a smaller --batch-size or --device cpu")

    return wrapper


def did_you_mean(name, choices) -> str:
    """' (did you mean X?)' for the closest valid name, or '' when none is close: for unknown-name errors."""
    import difflib

    close = difflib.get_close_matches(str(name).lower(), [str(c).lower() for c in choices], n=1, cutoff=0.6)
    if not close:
        return ""
    original = {str(c).lower(): str(c) for c in choices}[close[0]]
    return f" (did you mean {original!r}?)"
