"""CLIP-family encoders (CLIP, SigLIP) from a Hugging Face checkpoint: both towers with their projections.

The vision tower with its projection turns an image into the shared embedding space, the text tower with its
projection turns a sentence into the same space. Everything a checkpoint fixes comes from it: the image
processor (resize, crop, rescale, mean and std), the tokenizer, the longest caption it takes, and for SigLIP
the padding to that length it was trained with. transformers is imported inside functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from configs.encoders import CLIP_FAMILY
from models.hub import from_pretrained_local_first, missing_model_error, one_line
from models.text_encoder import RANDOM_WEIGHTS_MARKER, TOKENIZER_FILES, _looks_like_path
from utils.errors import DUCHError

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


@dataclass
class ClipCheckpoint:
    """A loaded CLIP-family checkpoint: model (eval), image processor and/or tokenizer, and where it came from."""

    name: str  # what the user gave: a hub id or a folder
    source: str  # the resolved folder, or the hub id
    model: object
    model_type: str
    image_processor: object = None
    tokenizer: object = None

    @property
    def width(self) -> int:
        """The shared space's width: the projection's output."""
        config = self.model.config
        width = getattr(config, "projection_dim", None)
        if width:
            return int(width)
        return int(config.text_config.hidden_size)  # SigLIP: the heads keep the tower width

    @property
    def random_weights(self) -> bool:
        return bool(getattr(self.model.config, RANDOM_WEIGHTS_MARKER, False))

    @property
    def max_tokens(self) -> int:
        """The longest tokenised caption: the text tower's position table (and the tokenizer's own limit)."""
        positions = int(self.model.config.text_config.max_position_embeddings)
        limit = getattr(self.tokenizer, "model_max_length", None)
        return min(positions, int(limit)) if isinstance(limit, int) and 0 < limit < 10 ** 6 else positions

    @property
    def pads_to_max_length(self) -> bool:
        """SigLIP pools the last position and was trained on captions padded to the full length."""
        return self.model_type.startswith("siglip")

    def describe(self, tower: str) -> str:
        return f"{self.model_type} checkpoint {self.name}: {tower} tower and its projection (shared space, " \
               f"{self.width}-d)"


def _missing(name: str, reason: str) -> DUCHError:
    return missing_model_error(
        "CLIP-family checkpoint", name, reason[:300], f"from transformers import AutoModel, AutoProcessor; "
        f"AutoModel.from_pretrained('{name}'); AutoProcessor.from_pretrained('{name}')", "--encoder",
        "/path/to/folder, a folder written by save_pretrained (config.json, weights, preprocessor_config.json, "
        "tokenizer files)")


def load_clip_checkpoint(name: str, device="cpu", *, images: bool = True, text: bool = True) -> ClipCheckpoint:
    """The model with the image processor (``images``) and the tokenizer (``text``) of a checkpoint; a missing or
    unusable one is one DUCHError naming it."""
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer  # lazy: start-up time

    name = str(name)
    path = Path(name).expanduser()
    if path.is_dir():
        source = str(path.resolve())
        if not (path / "config.json").is_file():
            raise DUCHError(f"encoder folder {path} has no config.json: not a saved checkpoint (--encoder takes a "
                            "folder written by save_pretrained, or a Hugging Face hub id)")
        if images and not any((path / f).is_file() for f in PROCESSOR_FILES):
            raise DUCHError(f"encoder folder {path} has no preprocessor_config.json: the image preprocessing of the "
                            "checkpoint is unknown (save its image processor into the folder with save_pretrained)")
        if text and not any((path / f).is_file() for f in TOKENIZER_FILES):
            raise DUCHError(f"encoder folder {path} holds no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); "
                            "save the tokenizer into the folder with save_pretrained")
    elif _looks_like_path(name):  # the text model's rule: one name, one reading
        raise DUCHError(f"encoder folder {path} does not exist (--encoder); pass a folder written by save_pretrained, "
                        "or a Hugging Face hub id such as openai/clip-vit-base-patch32")
    else:
        source = name
    try:
        config = from_pretrained_local_first(AutoConfig, source)
    except (OSError, ValueError) as err:
        raise _missing(name, one_line(err)) from None
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in CLIP_FAMILY:
        raise DUCHError(f"--encoder {name}: a {model_type or 'model'} checkpoint, not a CLIP-family one "
                        f"(model_type {', '.join(CLIP_FAMILY)}): its towers do not share an embedding space")
    loaded = {}
    for key, cls, wanted in (("model", AutoModel, True), ("image_processor", AutoImageProcessor, images),
                             ("tokenizer", AutoTokenizer, text)):
        if not wanted:
            continue
        try:
            loaded[key] = from_pretrained_local_first(cls, source)
        except (OSError, ValueError, TypeError) as err:
            raise _missing(name, f"its {key.replace('_', ' ')}: {one_line(err)}") from None
    model = loaded.pop("model").eval().to(torch.device(device))
    return ClipCheckpoint(name=name, source=source, model=model, model_type=model_type, **loaded)


def _pooled(output):
    """get_*_features returns the embedding tensor (transformers 4) or an output whose pooler_output it is (5)."""
    import torch

    return output if torch.is_tensor(output) else output.pooler_output


def image_tower(checkpoint: ClipCheckpoint):
    """``pixel_values -> projected image embedding``: a torch module over the checkpoint's vision side, with its
    width as ``feature_width``."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self, model, width: int):
            super().__init__()
            self.model, self.feature_width = model, width

        def forward(self, pixel_values):
            return _pooled(self.model.get_image_features(pixel_values=pixel_values))

    return ImageTower(checkpoint.model, checkpoint.width)


class ClipPreprocess:
    """The checkpoint's image processor applied to one PIL image (after the augmentation set): a (3, H, W)
    float tensor as the processor makes it."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image):
        return self.image_processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]


def embed_texts(checkpoint: ClipCheckpoint, texts: Sequence[str], batch_size: int = 64, progress: bool = False,
                desc: str = "embed captions", shard: tuple[int, int] | None = None):
    """Projected text embeddings (len(texts), width) float32, rows in the order of ``texts``; captions longer than
    the checkpoint takes are truncated. ``shard=(rank, world_size)``: that rank's contiguous run of the batches,
    returned as ``(rows, vectors)`` (see models.text_encoder.embed_captions)."""
    import torch
    from tqdm import tqdm

    if batch_size < 1:
        raise DUCHError(f"--batch-size must be at least 1 (got {batch_size})")
    tokenizer, model = checkpoint.tokenizer, checkpoint.model
    device = next(model.parameters()).device
    padding = "max_length" if checkpoint.pads_to_max_length else "longest"
    rows = np.arange(len(texts))
    batches = [rows[i: i + batch_size] for i in range(0, len(rows), batch_size)]
    if shard is not None:
        from utils.distributed import shard_bounds

        batches = batches[slice(*shard_bounds(len(batches), shard[1], shard[0]))]
    mine = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    out = np.empty((len(mine), checkpoint.width), dtype=np.float32)
    at = 0
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
            encoded = tokenizer([str(texts[i]) for i in batch], padding=padding, truncation=True,
                                max_length=checkpoint.max_tokens, return_tensors="pt")
            inputs = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
            if checkpoint.pads_to_max_length:
                inputs.pop("attention_mask", None)  # SigLIP attends to the padding, as it was trained
            out[at: at + len(batch)] = _pooled(model.get_text_features(**inputs)).float().cpu().numpy()
            at += len(batch)
    return out if shard is None else (mine.astype(np.int64), out)


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of the bytes that byte-level BPE vocabularies (GPT-2, CLIP) are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def build_random_clip(out_dir: str | Path, family: str = "clip", *, width: int = 16, hidden: int = 32,
                      image_size: int = 32, patch: int = 8, layers: int = 2, seed: int = 0) -> Path:
    """Save a small randomly initialised CLIP (or SigLIP) with its image processor and a byte-level BPE tokenizer
    without merges (every text tokenises, letter by letter) to ``out_dir``: a checkpoint in the Hugging Face
    format for tests and offline demos. Its config.json says its weights are random."""
    import json

    import torch
    from transformers import (  # lazy: start-up time
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPTokenizer,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (out_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(out_dir / "vocab.json"), str(out_dir / "merges.txt"))
    tokenizer.save_pretrained(str(out_dir))
    text = dict(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=2, max_position_embeddings=32 if family == "siglip" else 40)
    vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2,
                  image_size=image_size, patch_size=patch)
    ids = {"eos_token_id": vocab["<|endoftext|>"], "bos_token_id": vocab["<|startoftext|>"],
           "pad_token_id": vocab["<|endoftext|>"]}
    if family == "clip":
        config = CLIPConfig(text_config={**text, **ids}, vision_config=vision, projection_dim=width,
                            **{RANDOM_WEIGHTS_MARKER: True}, **ids)
        model_cls = CLIPModel
        processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                       crop_size={"height": image_size, "width": image_size})
    elif family == "siglip":
        config = SiglipConfig(text_config={**text, **ids}, vision_config=vision, **{RANDOM_WEIGHTS_MARKER: True},
                              **ids)
        model_cls = SiglipModel
        processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    else:
        raise ValueError(f"family must be clip or siglip, got {family!r}")
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model = model_cls(config)
    model.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    return out_dir
