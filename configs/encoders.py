"""Encoder names: which network made a feature file, and the tag that keeps its files apart from another's.

An image encoder is the paper's ``resnet18`` (the default), another torchvision classification model by its
builder name (``resnet50``, ``vit_b_16``, ...), or a Hugging Face CLIP-family checkpoint (CLIP, SigLIP) by hub
id (``openai/clip-vit-base-patch32``) or local folder. A text encoder is the paper's ``bert`` route (the
hidden-state pooling of ``captions_embed.py --model``, default) or such a checkpoint. A name that holds a
``/`` or names an existing folder is a checkpoint; any other name is a torchvision builder (checked when the
network is built). Light: nothing heavy is imported here.
"""
from __future__ import annotations

import re
from pathlib import Path

from configs.errors import DUCHError

DEFAULT_IMAGE_ENCODER = "resnet18"  # the paper's: its feature files keep the authors' names
DEFAULT_TEXT_ENCODER = "bert"  # the paper's hidden-state pooling of a BERT-style --model
# model_type values of the checkpoints whose towers share one embedding space (config.json)
CLIP_FAMILY = ("clip", "siglip")


def is_checkpoint(name: str) -> bool:
    """A Hugging Face checkpoint (hub id ``namespace/name`` or a folder), not a torchvision builder name."""
    name = str(name)
    return "/" in name or "\\" in name or name.startswith((".", "~")) or Path(name).expanduser().is_dir()


def image_encoder_kind(name: str) -> str:
    """``paper`` (ResNet18), ``torchvision`` (another builder) or ``checkpoint`` (CLIP family)."""
    check_encoder_name(name, "--encoder")
    if name == DEFAULT_IMAGE_ENCODER:
        return "paper"
    return "checkpoint" if is_checkpoint(name) else "torchvision"


def text_encoder_kind(name: str) -> str:
    """``paper`` (BERT-style pooling of --model) or ``checkpoint`` (the text tower of a CLIP-family checkpoint)."""
    check_encoder_name(name, "--encoder")
    if name == DEFAULT_TEXT_ENCODER:
        return "paper"
    if is_checkpoint(name):
        return "checkpoint"
    raise DUCHError(f"text encoder {name!r}: captions are embedded by {DEFAULT_TEXT_ENCODER!r} (the paper's BERT "
                    "pooling, model chosen by --model) or by a CLIP-family checkpoint (a hub id such as "
                    "openai/clip-vit-base-patch32, or a local folder); torchvision networks have no text tower")


def check_encoder_name(name, flag: str) -> str:
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "\0\n\r\t"):
        raise DUCHError(f"{flag} takes an encoder name, got {name!r}")
    return name


def text_encoder_of(encoder: str | None, text_encoder: str | None) -> str:
    """The caption features' encoder: ``text_encoder`` when given, else ``encoder`` when it is a checkpoint
    (one CLIP-family checkpoint makes both modalities), else the paper's."""
    if text_encoder:
        return text_encoder
    return encoder if encoder and is_checkpoint(encoder) else DEFAULT_TEXT_ENCODER


def encoder_tag(name: str | None) -> str | None:
    """The part of a feature file's name that says its encoder; None for the paper's encoders (their files keep
    the authors' names). The last part of the name as written: a torchvision name itself, a hub id's model name
    (``openai/clip-vit-base-patch32`` -> ``clip-vit-base-patch32``), a folder's name. It depends on the name
    only, so a run finds its files from any working folder."""
    if name is None or name in (DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER):
        return None
    raw = re.split(r"[/\\]", str(name).rstrip("/\\"))[-1]
    if raw in ("", ".", "..", "~"):  # a folder named by a relative mark: its own name
        raw = Path(str(name)).expanduser().resolve().name
    tag = re.sub(r"[^A-Za-z0-9_.+=,-]", "_", raw).strip(".") or "encoder"
    return tag[:80]
