"""Query-side encoders: raw images and sentences turned into the features a run was trained on, then hashed.

A search must encode new inputs exactly as the feature files were made. The recipe is read from the
feature files' HDF5 attributes (written by ``images_augment.py`` and ``captions_embed.py``) into an
``ImageEncoderSpec`` / ``TextEncoderSpec``; when a file carries no record, the user names the encoder
with flags and the spec says so. The run's standardisation (one scalar mean and std per file,
``utils.data.features.standardise``) travels as ``FeatureStats``.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from configs.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, text_encoder_kind
from models.image_encoder import FEATURE_DIM, build_image_backbone, encode_image_files
from models.text_encoder import embed_captions, load_text_model
from utils.data.images import check_images_readable
from utils.data.transforms import AugParams, SeededTransform, check_image_aug_set
from utils.errors import DUCHError
from utils.io import sha256_of
from utils.retrieval.codes import pack_codes

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_FILE_WEIGHTS = re.compile(r"^file (?P<path>.+) \(sha256 (?P<sha>[0-9a-f]{64})\)$")
_BIT_DEPTH = re.compile(r"hold (?P<bits>\d+)-bit values")  # utils.data.images.high_bit_depth_rule, as recorded


@dataclass(frozen=True)
class FeatureStats:
    """The scalar standardisation of one feature file: ``(x - mean) / std`` as ``utils.data.features.standardise``.

    ``mean`` is the float32 mean numpy computes, kept exactly (a float32 value is exact as a float), so
    a query is standardised bit for bit as the rows the run trained on.
    """

    mean: float
    std: float

    @classmethod
    def of(cls, raw: np.ndarray) -> "FeatureStats":
        from utils.data.features import check_standardisable

        std = float(raw.std())
        check_standardisable(float(raw.mean()), std)
        return cls(float(raw.mean()), std)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        return ((raw - np.float32(self.mean)) / self.std).astype(np.float32)

    def to_json(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# images


@dataclass(frozen=True)
class ImageEncoderSpec:
    """How image features were made: encoder, weights, transform set and its parameters, normalisation."""

    weights: str  # 'imagenet', 'none' (random init from torch seed ``seed``) or a state-dict file
    img_aug: str = "center_crop_only"
    crop_size: tuple = (200, 200)
    rot_deg: tuple = (-10.0, -5.0)
    blur_val: tuple = (3, 3, 1.1, 1.3)
    jit_str: float = 0.5
    normalize: bool = True
    seed: int = 42
    weights_sha256: str | None = None
    features_train_mode: bool = False  # the features were made with batch statistics (--original-quirks)
    bit_depth: int = 16  # significant bits of 16-bit images (images_augment.py --bit-depth)
    source: str = "feature file attributes"
    encoder: str = DEFAULT_IMAGE_ENCODER  # images_augment.py --encoder (configs/encoders.py)
    width: int = FEATURE_DIM  # of the features it makes
    encoder_source: str | None = None  # a checkpoint's resolved folder, used while it exists

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, record: dict) -> "ImageEncoderSpec":
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in cls.__dataclass_fields__}
        return cls(**fields)

    @classmethod
    def from_attrs(cls, attrs: dict) -> "ImageEncoderSpec | None":
        """The spec recorded by ``images_augment.py``, or None when the file does not say its weights."""
        description = str(attrs.get("weights", ""))
        sha = None
        if attrs.get("encoder_name"):  # another encoder than ResNet18: named as given, weights flag as given
            weights = str(attrs.get("weights_flag", "imagenet"))
            if (match := _FILE_WEIGHTS.match(description)):
                sha = match["sha"]
        elif description.startswith("torchvision ResNet18_Weights"):
            weights = "imagenet"
        elif description.startswith("none"):
            weights = "none"
        elif (match := _FILE_WEIGHTS.match(description)):
            weights, sha = match["path"], match["sha"]
        else:
            return None
        defaults = cls(weights)
        conversion = str(attrs.get("high_bit_depth_conversion", ""))
        return cls(
            weights=weights,
            img_aug=str(attrs.get("img_aug", defaults.img_aug)),
            crop_size=tuple(int(v) for v in attrs.get("crop_size", defaults.crop_size)),
            rot_deg=tuple(float(v) for v in attrs.get("rot_deg", defaults.rot_deg)),
            blur_val=tuple(attrs.get("blur_val", defaults.blur_val)),
            jit_str=float(attrs.get("jit_str", defaults.jit_str)),
            normalize=str(attrs.get("normalization", "imagenet mean/std")) != "none",
            seed=int(attrs.get("seed", defaults.seed)),
            weights_sha256=sha,
            features_train_mode=bool(attrs.get("original_quirks", False)),
            bit_depth=int(match["bits"]) if (match := _BIT_DEPTH.search(conversion)) else 16,
            encoder=str(attrs.get("encoder_name") or DEFAULT_IMAGE_ENCODER),
            width=int(attrs.get("width", FEATURE_DIM)),
            encoder_source=str(attrs["encoder_source"]) if attrs.get("encoder_source") else None,
        )

    @classmethod
    def from_flags(cls, weights: str, img_aug: str, crop_size: Sequence[int], seed: int, normalize: bool,
                   bit_depth: int = 16) -> "ImageEncoderSpec":
        params = AugParams.checked(crop_size=crop_size)
        sha = sha256_of(weights) if weights not in ("imagenet", "none") and Path(weights).is_file() else None
        return cls(weights=weights, img_aug=check_image_aug_set(img_aug), crop_size=params.crop_size, seed=seed,
                   normalize=normalize, weights_sha256=sha, bit_depth=bit_depth, source="flags (--weights, --img-aug)")

    def build(self, device):
        """(the encoder in eval mode on ``device``, transform (PIL image, index) -> tensor)."""
        if self.weights_sha256 and self.weights not in ("imagenet", "none"):
            path = Path(self.weights)
            if path.is_file() and sha256_of(path) != self.weights_sha256:
                raise DUCHError(f"image encoder weights {path} changed since the features were made (sha256 differs)")
        if self.features_train_mode:
            warnings.warn(
                "the image features were made with --original-quirks (batch-norm batch statistics); a new image "
                "is encoded in eval mode, so its features follow a slightly different recipe", UserWarning,
                stacklevel=2)
        import torch  # lazy: a heavy import, paid only where it is used (start-up time)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # images_augment.py seeds before building: same random weights
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the random-weights warning was given when the features were made
                source = self.encoder_source if self.encoder_source and Path(self.encoder_source).is_dir() else None
                backbone = build_image_backbone(source or self.encoder, self.weights)
        if backbone.width != self.width:
            raise DUCHError(f"image encoder {self.encoder} now makes {backbone.width}-d features, the index's are "
                            f"{self.width}-d: it is not the encoder the features were made with")
        params = AugParams(tuple(self.crop_size), tuple(self.rot_deg), tuple(self.blur_val), self.jit_str)
        transform = SeededTransform(self.img_aug, params, normalize=self.normalize, seed=self.seed,
                                    preprocess=backbone.preprocess)
        return backbone.model.to(device).eval(), transform

    def encode(self, encoder, paths: Sequence[Path], device, batch_size: int = 64, num_workers: int = 0) -> np.ndarray:
        """Raw features of image files, rows in order, as images_augment.py computes them; ``encoder`` from
        ``build``."""
        model, transform = encoder
        return encode_image_files(model, transform, list(paths), device, batch_size, num_workers,
                                  bit_depth=self.bit_depth)

    def check_readable(self, paths: Sequence[Path]) -> None:
        check_images_readable(list(paths), bit_depth=self.bit_depth)


def find_image_files(folder: str | Path) -> list[Path]:
    """Every tif/tiff/png/jpg/jpeg below ``folder`` (recursively), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DUCHError(f"image folder not found: {folder}")
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


# ----------------------------------------------------------------------------------------------
# text


@dataclass(frozen=True)
class TextEncoderSpec:
    """How caption features were made by ``captions_embed.py``: the paper's BERT pooling (model, hidden states,
    operator) or a CLIP-family checkpoint (``encoder``, which fixes the rest)."""

    model: str
    max_length: int = 64
    hidden_states: int = 4
    operator: str = "sum"
    original_quirks: bool = False
    model_source: str | None = None
    source: str = "feature file attributes"
    encoder: str = DEFAULT_TEXT_ENCODER  # captions_embed.py --encoder (configs/encoders.py)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> "TextEncoderSpec":
        return cls(**{k: v for k, v in record.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_attrs(cls, attrs: dict) -> "TextEncoderSpec | None":
        if not attrs.get("model"):
            return None
        return cls(
            model=str(attrs["model"]), max_length=int(attrs.get("max_length", 64)),
            hidden_states=int(attrs.get("hidden_states", 4)), operator=str(attrs.get("operator", "sum")),
            original_quirks=bool(attrs.get("original_quirks", False)),
            model_source=str(attrs["model_source"]) if attrs.get("model_source") else None,
            encoder=str(attrs.get("encoder_name") or DEFAULT_TEXT_ENCODER),
        )

    def load(self, device):
        # the resolved folder when it still exists (a hub name resolves through the cache again)
        name = self.model_source if self.model_source and Path(self.model_source).is_dir() else self.model
        if text_encoder_kind(self.encoder) == "checkpoint":
            from models.clip_encoder import load_clip_checkpoint

            return load_clip_checkpoint(name, device, images=False, text=True)
        return load_text_model(name, device)

    def embed(self, text_model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if text_encoder_kind(self.encoder) == "checkpoint":
            from models.clip_encoder import embed_texts

            return embed_texts(text_model, list(texts), batch_size=batch_size)
        return embed_captions(text_model, list(texts), max_length=self.max_length, hidden_states=self.hidden_states,
                              operator=self.operator, original_quirks=self.original_quirks, batch_size=batch_size,
                              progress=False)


# ----------------------------------------------------------------------------------------------
# hashing


def hash_outputs(net, features: np.ndarray, device, batch_size: int = 8192) -> np.ndarray:
    """Continuous (pre-sign, tanh) outputs of one DUCH hashing net in eval mode, float32 (n, bits)."""
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x = torch.as_tensor(np.ascontiguousarray(features[start:start + batch_size]), device=device)
            out.append(net(x).float().cpu().numpy())
    bits = net.net[-2].out_features
    return np.concatenate(out) if out else np.zeros((0, bits), np.float32)


def pack_outputs(outputs: np.ndarray) -> np.ndarray:
    """Packed codes of continuous outputs: sign as ``models.duch.to_binary`` (0 -> +1), packed by
    ``codes.pack_codes``."""
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    from models.duch import to_binary

    return pack_codes(to_binary(torch.from_numpy(np.ascontiguousarray(outputs, dtype=np.float32))))
