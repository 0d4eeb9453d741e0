"""Loading Hugging Face models: a local folder, else the local cache, else (unless offline) the Hub.

One place for the lookup order shared by the caption encoder, BERTScore and MarianMT.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from utils.errors import DUCHError, did_you_mean

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline() -> bool:
    """True when Hugging Face Hub downloads are switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def from_pretrained_local_first(cls, ref: str):
    """``cls.from_pretrained`` from a local folder, else the local cache, else (unless offline) a download.

    Errors propagate: callers turn them into one message naming the model and how to provide it.
    """
    if Path(ref).is_dir():
        return cls.from_pretrained(ref)
    try:
        return cls.from_pretrained(ref, local_files_only=True)
    except Exception:
        if hub_offline():
            raise
        print(f"{ref!r} is not in the local Hugging Face cache; downloading it from the Hub", file=sys.stderr)
        return cls.from_pretrained(ref)


def cached_model_names() -> list[str]:
    """Hub model ids present in the local Hugging Face cache (for suggestions; empty when unreadable)."""
    try:
        from huggingface_hub import scan_cache_dir

        return sorted(r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model")
    except Exception:  # no cache folder, unreadable cache: nothing to suggest
        return []


def suggest_model(name: str) -> str:
    """' (did you mean X?)' for the closest known encoder name (bert_score's list and the local cache), or ''."""
    from bert_score.utils import model2layers


    known = [*model2layers, *cached_model_names()]
    return "" if name in known else did_you_mean(name, known)


def one_line(err: Exception) -> str:
    """An exception's message on one line (its type when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def missing_model_error(what: str, name: str, reason: str, download: str, flag: str, folder: str,
                        hint: str = "") -> DUCHError:
    """One error for a model that cannot be loaded: what and why, and the two ways to provide it (the Hugging
    Face cache, filled by the ``download`` code, or a folder given by ``flag``)."""
    return DUCHError(
        f"cannot load {what} {name!r} ({reason}){hint}. Provide it one of two ways: download it once with network "
        f"(python -c \"{download}\") so it is in the Hugging Face cache, or pass {flag} {folder}"
    )
