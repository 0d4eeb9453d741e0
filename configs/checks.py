"""Values that cannot be right, refused at the door: each check names the flag and says what it takes.

Here in configs (the bottom layer) so that configs and every package can use them.
"""
from __future__ import annotations

import math

from configs.errors import DUCHError

SEED_MAX = 2 ** 32 - 1  # numpy's legacy seeding takes 0..2^32-1; torch and random take more, one seed drives all


def check_finite(name: str, value, low: float | None = None, low_inclusive: bool = True) -> float:
    """A real number (not nan, not inf; optionally at least / above ``low``) for flag ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DUCHError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise DUCHError(f"{name} must be a finite number, got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise DUCHError(f"{name} must be {'at least' if low_inclusive else 'above'} {low:g}, got {value:g}")
    return float(value)


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool, not a float) in ``low..high`` for flag ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DUCHError(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            span = f"in {low}..{high}"
        else:
            span = f"at least {low}" if low is not None else f"at most {high}"
        raise DUCHError(f"{name} must be {span}, got {value}")
    return value


def check_seed(value, name: str = "--seed") -> int:
    return check_int(name, value, 0, SEED_MAX)
