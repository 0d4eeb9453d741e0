"""Checkpoints: plain tensors and containers only, written atomically, read with weights_only=True."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from utils.errors import DUCHError
from utils.io import atomic_path

BEST_NAME = "checkpoint_best.pt"
LAST_NAME = "checkpoint_last.pt"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """A kill during the save leaves the previous checkpoint in place."""
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as err:  # torch's writer reports a full disk as a RuntimeError, without the file
            raise DUCHError(f"cannot write checkpoint {path} ({str(err).splitlines()[0]}); the disk may be full: free "
                            f"some space, then continue with --resume (the previous checkpoint is kept)") from None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    return load_checkpoint_digest(path, map_location)[0]


def load_checkpoint_digest(path: str | Path, map_location="cpu") -> tuple[dict, str]:
    """(payload, sha256 of the very bytes it was loaded from): a record of which model made something cannot
    name another file that took its place in between (a --resume finishing, a copy)."""
    import hashlib
    import io

    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"checkpoint not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DUCHError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # an unpickling error or a corrupt file: never fall back to full pickle
        raise DUCHError(f"cannot load checkpoint {path} safely (weights_only=True): {err}") from None
    return payload, hashlib.sha256(data).hexdigest()


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain containers (weights_only-loadable)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_epoch(payload: dict, key: str = "epoch") -> int:
    """The 1-based epoch a checkpoint holds under ``key``; checkpoints without ``epoch_numbering`` stored it 0-based."""
    return int(payload.get(key, -1)) + (0 if payload.get("epoch_numbering") == 1 else 1)
