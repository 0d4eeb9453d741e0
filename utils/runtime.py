"""Device choice, seeding and environment facts shared by every script."""
from __future__ import annotations

import platform
import random

import numpy as np

from utils.errors import DUCHError


def resolve_device(name: str = "auto"):
    """``auto`` picks CUDA when available, else CPU; an explicit device that is absent is an error."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as err:
        raise DUCHError(f"invalid --device {name!r}: {str(err).splitlines()[0]}") from None
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: torch knows them, this project does not run on them
        raise DUCHError(f"--device {name}: this project runs on auto, cpu, cuda or cuda:N, not on {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DUCHError(f"--device {name} asked for CUDA but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise DUCHError(f"--device {name}: there are {n} CUDA GPUs (cuda:0..cuda:{n - 1})")
    return device


def seed_everything(seed: int) -> None:
    """One seed drives Python, NumPy and torch."""
    import torch

    from configs.checks import check_seed

    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict:
    """Library versions recorded in every run's configuration."""
    import torch

    out = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}
    try:
        import h5py

        out["h5py"] = h5py.__version__
    except ImportError:
        pass
    out["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return out


def git_commit(repo_dir: str | None = None) -> str | None:
    """The project's git commit (with ``-dirty`` when tracked files have changes), or None outside a checkout."""
    import subprocess
    from pathlib import Path

    repo = Path(repo_dir) if repo_dir else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
