"""Loading the feature files a run trains on, with every check done at the door."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs import files
from configs.datasets import CAPTIONS_PER_IMAGE, DatasetInfo
from configs.presets import BASE_CAPTION_KEY, BASE_IMAGE_SET, get_preset
from utils.dataset_json import image_labels, load_dataset_json
from utils.errors import DUCHError
from utils.io import read_h5


@dataclass
class FeatureFiles:
    dataset_json: Path
    image: Path
    image_aug: Path
    caption: Path
    caption_aug: Path

    def to_json(self) -> dict:
        return {k: str(v) for k, v in self.__dict__.items()}


@dataclass
class Features:
    image: np.ndarray  # (N, d_img), standardised
    image_aug: np.ndarray
    caption: np.ndarray  # (5N, d_txt), standardised
    caption_aug: np.ndarray
    labels: np.ndarray  # (N,) class codes
    n_classes: int


def resolve_files(ds: DatasetInfo, data_dir: str | Path, preset_name: str, img_aug_emb: str | None = None) -> FeatureFiles:
    """The files of SPEC section 1 for a preset; ``--img-aug-emb`` overrides the augmented image file."""
    data_dir = Path(data_dir)
    preset = get_preset(preset_name)
    json_path = files.current_dataset_json(ds, data_dir)  # labels are the same in both JSON files
    if not json_path.is_file():
        json_path = data_dir / files.augmented_json_name(ds)  # the one the presets expect, for the error
    image_aug = data_dir / files.image_emb_name(ds, preset.aug_image_set)
    if img_aug_emb:
        image_aug = Path(img_aug_emb)
        if not image_aug.is_absolute() and not image_aug.exists():
            image_aug = data_dir / img_aug_emb
    return FeatureFiles(
        dataset_json=json_path,
        image=data_dir / files.image_emb_name(ds, BASE_IMAGE_SET),
        image_aug=image_aug,
        caption=data_dir / files.caption_emb_name(ds, BASE_CAPTION_KEY),
        caption_aug=data_dir / files.caption_emb_name(ds, preset.aug_caption_key),
    )


def standardise(x: np.ndarray) -> np.ndarray:
    """One scalar mean and one scalar population std over the whole array, as the original."""
    std = float(x.std())
    if std == 0.0:
        raise DUCHError("a feature file is constant (standard deviation 0); it cannot be standardised")
    return ((x - x.mean()) / std).astype(np.float32)


def _load_checked(path: Path, key: str, n_images: int, width: int | None, hint: str, what: str) -> np.ndarray:
    """Read one feature file and check rows (per image, JSON order), width and finiteness."""
    per_image = CAPTIONS_PER_IMAGE if key == files.CAPTION_EMB_KEY else 1
    rows = per_image * n_images
    array = read_h5(path, key, hint=hint)
    if array.ndim != 2:
        raise DUCHError(f"{path}: {what} must be a 2-D array, got shape {array.shape}")
    if array.shape[0] != rows:
        raise DUCHError(
            f"{path}: {array.shape[0]} rows, but the dataset JSON has {n_images} images so {rows} {what} rows are expected; the file was made for another dataset "
            f"or JSON; remake it with: {hint}"
        )
    if width is not None and array.shape[1] != width:
        raise DUCHError(f"{path}: {what} width {array.shape[1]}, expected {width}; remake it with: {hint}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise DUCHError(f"{path}: {bad} rows contain NaN or inf; remake it with: {hint}")
    return array


def load_features(ds: DatasetInfo, paths: FeatureFiles, preset_name: str, original_quirks: bool = False) -> Features:
    """Load, validate and standardise the four views and the labels."""
    preset = get_preset(preset_name)
    data = load_dataset_json(paths.dataset_json, hint=f"make it with: {files.augmented_json_command(ds)}")
    n = len(data["images"])
    labels = image_labels(data)
    n_classes = int(data.get("num_classes", labels.max() + 1))
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DUCHError(f"{paths.dataset_json}: class codes must lie in 0..{n_classes - 1}")
    img_hint = files.image_emb_command(ds, BASE_IMAGE_SET)
    image = _load_checked(paths.image, files.IMAGE_EMB_KEY, n, ds.image_dim, img_hint, "image feature")
    image_aug = _load_checked(
        paths.image_aug, files.IMAGE_EMB_KEY, n, image.shape[1], files.image_emb_command_for_file(ds, paths.image_aug), "image feature"
    )
    cap_hint = files.caption_emb_command(ds, BASE_CAPTION_KEY)
    caption = _load_checked(paths.caption, files.CAPTION_EMB_KEY, n, ds.caption_dim, cap_hint, "caption feature")
    if original_quirks:
        caption_aug = caption  # the original fed t1 where t2 belongs: the augmented file is never read
    else:
        caption_aug = _load_checked(
            paths.caption_aug, files.CAPTION_EMB_KEY, n, caption.shape[1],
            files.caption_emb_command(ds, preset.aug_caption_key), "caption feature",
        )
    return Features(
        image=standardise(image),
        image_aug=standardise(image_aug),
        caption=standardise(caption),
        caption_aug=standardise(caption_aug) if caption_aug is not caption else None,
        labels=labels,
        n_classes=n_classes,
    )
