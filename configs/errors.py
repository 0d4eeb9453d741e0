"""The user-error class and the did-you-mean hint, here because configs (the bottom layer) raise them.

``utils.errors`` re-exports both and turns a ``DUCHError`` into one line on stderr and exit status 2.
"""
from __future__ import annotations


class DUCHError(Exception):
    """A user-facing error: bad input, missing file or model, wrong configuration."""


def did_you_mean(name, choices) -> str:
    """' (did you mean X?)' for the closest valid name, or '' when none is close: for unknown-name errors."""
    import difflib  # only on an error path

    close = difflib.get_close_matches(str(name).lower(), [str(c).lower() for c in choices], n=1, cutoff=0.6)
    if not close:
        return ""
    original = {str(c).lower(): str(c) for c in choices}[close[0]]
    return f" (did you mean {original!r}?)"
