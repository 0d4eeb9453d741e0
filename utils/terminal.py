"""Text from data reaches the terminal as printable characters only.

A caption, file name or class name read from a dataset may hold terminal escape sequences (ESC [ ...,
OSC 8 links, a bell, a carriage return that overwrites the line). ``printable`` turns every control or
format character into a visible ``\\xNN`` / ``\\uNNNN`` escape, so what the console shows is the text
itself and nothing in it can move the cursor, change colours or rewrite the title.
"""
from __future__ import annotations


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def printable(text, keep: str = "") -> str:
    """``text`` with every control (Cc), format (Cf), surrogate (Cs), private-use (Co) or unassigned (Cn)
    character and every line/paragraph separator shown as an escape; ordinary spaces stay, and so do the
    characters in ``keep`` (``"\\n"`` for a multi-line table or message the program itself built)."""
    text = "" if text is None else str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else _escape(ch) for ch in text)
