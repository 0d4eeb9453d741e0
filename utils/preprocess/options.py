"""The settings of a preprocessing script as a dataclass, filled from its parsed command line."""
from __future__ import annotations

import argparse
from dataclasses import fields


class ScriptOptions:
    """Base of a dataclass whose fields are a script's flags (same names and defaults)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The options of a parsed command line: every field a flag of that name sets; a ``progress`` field is
        the opposite of --no-progress."""
        given = vars(args)
        names = {f.name for f in fields(cls)}
        values = {k: given[k] for k in names - {"progress"} if k in given}
        if "progress" in names:
            values["progress"] = not getattr(args, "no_progress", False)
        return cls(**values)
