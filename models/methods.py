"""The networks of each training method (main.py --method), built from a checkpoint's record."""

from __future__ import annotations

METHODS = ("duch", "djsrh", "jdsh")


def build_model(method: str, image_dim: int, caption_dim: int, bit: int, hidden: int | None = None):
    """The untrained networks of ``method``; ``hidden`` is the baselines' hidden width (default theirs)."""
    if method == "duch":
        from models.duch import DUCH

        return DUCH(image_dim, caption_dim, bit)
    if method in ("djsrh", "jdsh"):
        from models.djsrh import DJSRH, HIDDEN_UNITS
        from models.jdsh import JDSH

        cls = DJSRH if method == "djsrh" else JDSH
        return cls(image_dim, caption_dim, bit, hidden or HIDDEN_UNITS)
    raise ValueError(f"unknown method {method!r}")


def model_from_payload(payload: dict):
    """The networks a checkpoint holds (DUCH when it names no method: checkpoints made before methods)."""
    method = str(payload.get("method", "duch"))
    return build_model(
        method, int(payload["image_dim"]), int(payload["caption_dim"]), int(payload["bit"]), payload.get("hidden")
    )
