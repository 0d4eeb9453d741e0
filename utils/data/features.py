"""Loading the feature files a run trains on, with every check done at the door."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from configs import files
from configs.datasets import DatasetInfo
from configs.presets import BASE_CAPTION_KEY, BASE_IMAGE_SET, get_preset
from utils.data.dataset_json import DROPPED_KEY, caption_offsets, dropped_warning, left_out_images, load_dataset_json
from utils.data.labels import resolve_labels
from utils.errors import DUCHError
from utils.io import read_h5, read_h5_attrs, read_json

MIN_IMAGES = 10  # fewer leave an empty query set (20 % of the half not trained on) and NaN metrics


def check_enough_images(n: int, source) -> None:
    """A dataset too small to split into train, queries and database is refused, by a run and by --describe."""
    if n < MIN_IMAGES:
        raise DUCHError(
            f"{source}: {n} images; training and testing need at least {MIN_IMAGES} "
            f"(half train, then 20 % of the rest as queries and the others as the database)"
        )


@dataclass
class FeatureFiles:
    dataset_json: Path
    image: Path
    image_aug: Path
    caption: Path
    caption_aug: Path

    def to_json(self) -> dict:
        """Absolute paths: a run's record says which files it read, whatever the working folder."""
        return {k: str(Path(v).resolve()) for k, v in self.__dict__.items()}


@dataclass
class Features:
    image: np.ndarray  # (N, d_img), standardised
    image_aug: np.ndarray
    caption: np.ndarray  # (total captions, d_txt), standardised; image j owns rows offsets[j]:offsets[j + 1]
    caption_aug: np.ndarray
    labels: np.ndarray | None  # (N,) class codes or (N, L) multi-hot rows; None: the dataset has no labels
    n_classes: int
    warnings: list[str] = field(default_factory=list)  # e.g. features made with random encoder weights
    offsets: np.ndarray | None = None  # (N + 1,) caption rows per image; None: 5 per image
    images: list[dict] = field(default_factory=list)  # the JSON's image entries (file names, split fields)
    label_rule: str = "classcode"
    dropped: dict = field(default_factory=dict)  # blank captions and images without captions left out of the source
    left_out: set = field(default_factory=set)  # file names of the images left out (a published split may list them)

    @property
    def n_images(self) -> int:
        return int(self.image.shape[0])

    @property
    def caption_offsets(self) -> np.ndarray:
        return self.offsets if self.offsets is not None else np.arange(self.n_images + 1, dtype=np.int64) * 5

    @property
    def widths(self) -> dict[str, int]:
        return {"image": int(self.image.shape[1]), "caption": int(self.caption.shape[1])}


def resolve_files(ds: DatasetInfo, data_dir: str | Path, preset_name: str, img_aug_emb: str | None = None,
                  encoder: str | None = None, text_encoder: str | None = None) -> FeatureFiles:
    """The files of a preset (docs/formats.md) made by ``encoder`` / ``text_encoder`` (default: the paper's);
    ``--img-aug-emb`` overrides the augmented image file."""
    data_dir = Path(data_dir)
    preset = get_preset(preset_name)
    json_path = files.current_dataset_json(ds, data_dir)  # labels are the same in both JSON files
    if not json_path.exists():
        json_path = data_dir / files.augmented_json_name(ds)  # the one the presets expect, for the error
    image_aug = data_dir / files.image_emb_name(ds, preset.aug_image_set, encoder=encoder)
    if img_aug_emb:
        image_aug = Path(img_aug_emb)
        if not image_aug.is_absolute() and not image_aug.exists():
            image_aug = data_dir / img_aug_emb
    return FeatureFiles(
        dataset_json=json_path,
        image=data_dir / files.image_emb_name(ds, BASE_IMAGE_SET, encoder=encoder),
        image_aug=image_aug,
        caption=data_dir / files.caption_emb_name(ds, BASE_CAPTION_KEY, text_encoder),
        caption_aug=data_dir / files.caption_emb_name(ds, preset.aug_caption_key, text_encoder),
    )


def check_standardisable(mean: float, std: float) -> None:
    """The scalar mean and std of a feature file are finite and the std is not 0: values near 1e19 overflow the
    float32 sum of squares to inf, which would silently turn every feature into 0."""
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise DUCHError(f"a feature file's values are too large to standardise (mean {mean:.3g}, standard deviation "
                        f"{std:.3g} in float32); these are not an encoder's features: remake the file")
    if std == 0.0:
        raise DUCHError("a feature file is constant (standard deviation 0); it cannot be standardised")


def standardise(x: np.ndarray) -> np.ndarray:
    """One scalar mean and one scalar population std over the whole array, as the original's
    ``(x - x.mean()) / x.std()``: the same operations in the same dtype (numpy's std is the square root of
    the mean of (x - mean)^2), with x - mean computed once for both."""
    mean = x.mean()
    centred = x - mean
    std = np.sqrt(np.add.reduce(centred * centred, axis=None) / centred.size)
    check_standardisable(float(mean), float(std))
    centred /= float(std)
    return centred.astype(np.float32, copy=False)


def load_feature_file(path: Path, key: str, n_images: int, hint: str, what: str, width: int | None = None,
                      width_reason: str | None = None, n_captions: int | None = None) -> np.ndarray:
    """Read one feature file and check rows (per image or caption, JSON order), width and finiteness.

    ``width``: the width it must have; ``width_reason`` says why, after "but" in the error (default: it is the
    width of the base file of the same modality, and base and augmented views must agree).
    """
    rows = (n_captions if n_captions is not None else 5 * n_images) if key == files.CAPTION_EMB_KEY else n_images
    array = read_h5(path, key, hint=hint)
    if array.ndim != 2:
        raise DUCHError(f"{path}: {what} must be a 2-D array, got shape {array.shape}")
    if array.shape[0] != rows:
        raise DUCHError(
            f"{path}: {array.shape[0]} rows, but the dataset JSON has {n_images} images so {rows} {what} rows are "
            f"expected; the file was made for another dataset or JSON; remake it with: {hint}"
        )
    if width is not None and array.shape[1] != width:
        if width_reason is not None:
            raise DUCHError(f"{path}: {what} width {array.shape[1]}, but {width_reason}")
        raise DUCHError(
            f"{path}: {what} width {array.shape[1]}, but the base {what} file has width {width}: both views of a "
            f"modality must come from the same encoder; remake it with: {hint}"
        )
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise DUCHError(f"{path}: {bad} rows contain NaN or inf; remake it with: {hint}")
    return array


def random_encoder_warning(path: Path, key: str) -> str | None:
    """A warning when a feature file's provenance says its encoder had random weights, else None.

    Reads what the preprocessing writes: images_augment.py's ``weights`` attribute ("none (random
    initialisation)" for ``--weights none``), a ``random_weights`` attribute, and for caption files made
    by the offline demo, its ``demo_encoders.json`` record of a random text model.
    """
    attrs = read_h5_attrs(path, key, unreadable_ok=True)
    weights = str(attrs.get("weights", ""))
    random = weights.startswith("none") or bool(attrs.get("random_weights", False))
    encoders_path = path.parent / files.ENCODERS_FILE
    if not random and "model" in attrs and encoders_path.is_file():
        encoders = read_json(encoders_path, "demo encoder record")
        random = (
            isinstance(encoders, dict) and str(attrs["model"]) == str(encoders.get("text_model"))
            and str(encoders.get("text_source", "")).lower().startswith("random")
        )
    if not random:
        return None
    return (
        f"{path.name} was made by an encoder with RANDOM weights (its provenance says so): its features carry "
        f"no pretrained knowledge; fine for tests and the offline demo, not for results"
    )


def load_features(ds: DatasetInfo, paths: FeatureFiles, preset_name: str, original_quirks: bool = False,
                  labels_csv: str | None = None, encoder: str | None = None, text_encoder: str | None = None,
                  standardised: bool = True) -> Features:
    """Load, validate and standardise the four views and the labels (``standardised=False``: the encoders'
    own values, for their retrieval by cosine).

    Any feature width is accepted (another backbone or text model) as long as the two files of a
    modality agree; fix-it commands keep the user's ``--data-dir`` and name the encoders.
    """
    preset = get_preset(preset_name)
    data_dir = paths.image.parent
    data = load_dataset_json(paths.dataset_json, hint=f"make it with: {files.augmented_json_command(ds, data_dir)}",
                             ds=ds)
    n = len(data["images"])
    check_enough_images(n, paths.dataset_json)
    resolved = resolve_labels(data, ds, paths.dataset_json, labels_csv)
    offsets = caption_offsets(data)
    n_captions = int(offsets[-1])
    img_hint = files.image_emb_command(ds, BASE_IMAGE_SET, data_dir, encoder=encoder)
    image = load_feature_file(paths.image, files.IMAGE_EMB_KEY, n, img_hint, "image feature")
    image_aug = load_feature_file(paths.image_aug, files.IMAGE_EMB_KEY, n,
                                  files.image_emb_command_for_file(ds, paths.image_aug, data_dir=data_dir,
                                                                   encoder=encoder),
                                  "image feature", width=image.shape[1])
    cap_hint = files.caption_emb_command(ds, BASE_CAPTION_KEY, data_dir, text_encoder)
    caption = load_feature_file(paths.caption, files.CAPTION_EMB_KEY, n, cap_hint, "caption feature",
                                n_captions=n_captions)
    read = [(paths.image, files.IMAGE_EMB_KEY), (paths.image_aug, files.IMAGE_EMB_KEY),
            (paths.caption, files.CAPTION_EMB_KEY)]
    if original_quirks:
        caption_aug = caption  # the original fed t1 where t2 belongs: the augmented file is never read
    else:
        caption_aug = load_feature_file(
            paths.caption_aug, files.CAPTION_EMB_KEY, n,
            files.caption_emb_command(ds, preset.aug_caption_key, data_dir, text_encoder),
            "caption feature", width=caption.shape[1], n_captions=n_captions,
        )
        read.append((paths.caption_aug, files.CAPTION_EMB_KEY))
    warnings = [w for w in (random_encoder_warning(path, key) for path, key in dict.fromkeys(read)) if w]
    warnings += [w for w in [dropped_warning(data), *resolved.warnings] if w]
    scale = standardise if standardised else (lambda x: x)
    return Features(
        image=scale(image),
        image_aug=scale(image_aug),
        caption=scale(caption),
        caption_aug=scale(caption_aug) if caption_aug is not caption else None,
        labels=resolved.values,
        n_classes=resolved.n_classes,
        warnings=warnings,
        offsets=offsets,
        images=data["images"],
        label_rule=resolved.rule,
        dropped={k: data[DROPPED_KEY][k] for k in ("blank_captions", "images_without_captions")},
        left_out=left_out_images(data),
    )


def width_notes(ds: DatasetInfo, widths: dict[str, int]) -> list[str]:
    """Lines saying where feature widths differ from the paper's encoders (allowed: another encoder)."""
    expected = {"image": (ds.image_dim, "ResNet18"), "caption": (ds.caption_dim, "BERT-base")}
    return [
        f"{modality} features are {width} wide, not the {expected[modality][0]} of the paper's {expected[modality][1]} "
        f"features (another encoder: fine, the hashing networks take any width)"
        for modality, width in widths.items()
        if expected[modality][0] is not None and width != expected[modality][0]
    ]
