"""File naming: the one place that knows what every data file is called and what command makes it.

Names follow the authors' release so that their published feature files drop into ``data/``.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Sequence

from configs.datasets import DatasetInfo

IMAGE_EMB_KEY = "image_emb"
CAPTION_EMB_KEY = "caption_emb"
IMAGE_EMB_DIM = 512
CAPTION_EMB_DIM = 768

# sentence keys in the dataset JSON, and the caption-augmentation type that writes each
RAW_CAPTION_KEY = "raw"
CAPTION_AUG_KEYS = {
    "rule-based": "aug_rb",
    "backtranslation-prob": "aug_bt_prob",
    "backtranslation-chain": "aug_bt_chain",
}
TXT_AUG_BY_KEY = {key: txt_aug for txt_aug, key in CAPTION_AUG_KEYS.items()}

# image transform sets whose file name carries their parameters
PARAMETERISED_IMAGE_SETS = ("rotation_cc", "blur_cc", "jitter_cc")


def _num(value) -> str:
    """Numbers in file names: integers without a decimal point, other floats as Python prints them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def dataset_json_name(ds: DatasetInfo) -> str:
    return f"{ds.name}.json"


def augmented_json_name(ds: DatasetInfo) -> str:
    return f"augmented_{ds.name}.json"


def current_dataset_json(ds: DatasetInfo, data_dir: str | Path) -> Path:
    """``augmented_DS.json`` once caption augmentation has run, else ``DS.json`` (which may not exist)."""
    augmented = Path(data_dir) / augmented_json_name(ds)
    return augmented if augmented.is_file() else Path(data_dir) / dataset_json_name(ds)


def image_emb_name(
    ds: DatasetInfo,
    img_aug: str = "no_aug",
    rot_deg: Sequence[float] = (-10, -5),
    blur_val: Sequence[float] = (3, 3, 1.1, 1.3),
    jit_str: float = 0.5,
) -> str:
    """``image_emb_DS_aug[_<set>[_<params>]].h5`` as in SPEC section 1."""
    stem = f"image_emb_{ds.name}_aug"
    if img_aug == "no_aug":
        return stem + ".h5"
    params: Sequence = ()
    if img_aug == "rotation_cc":
        params = rot_deg
    elif img_aug == "blur_cc":
        params = blur_val
    elif img_aug == "jitter_cc":
        params = (jit_str,)
    return "_".join([stem, img_aug, *(_num(p) for p in params)]) + ".h5"


def caption_emb_name(ds: DatasetInfo, sentence_key: str = RAW_CAPTION_KEY) -> str:
    """``caption_emb_DS_aug.h5`` for raw captions, ``caption_emb_DS_aug_rb.h5`` for ``aug_rb``, ..."""
    if sentence_key == RAW_CAPTION_KEY:
        return f"caption_emb_{ds.name}_aug.h5"
    suffix = sentence_key[len("aug_"):] if sentence_key.startswith("aug_") else sentence_key
    return f"caption_emb_{ds.name}_aug_{suffix}.h5"


def _data_dir_flag(ds: DatasetInfo, data_dir: str | Path | None) -> str:
    """`` --data-dir X`` when the user's data folder is not the dataset's default, so a fix-it command acts on it."""
    if data_dir is None or Path(data_dir) == Path(ds.default_data_dir):
        return ""
    return f" --data-dir {shlex.quote(str(data_dir))}"


def image_emb_command(ds: DatasetInfo, img_aug: str, data_dir: str | Path | None = None) -> str:
    """The command that writes an image feature file (for error messages)."""
    extra = "" if img_aug == "no_aug" else f" --img-aug {img_aug}"
    return f"python images_augment.py --dataset {ds.key}{extra}{_data_dir_flag(ds, data_dir)}"


def caption_emb_command(ds: DatasetInfo, sentence_key: str = RAW_CAPTION_KEY, data_dir: str | Path | None = None) -> str:
    """The command(s) that write a caption feature file (for error messages)."""
    where = _data_dir_flag(ds, data_dir)
    embed = f"python captions_embed.py --dataset {ds.key}{where}"
    if sentence_key == RAW_CAPTION_KEY:
        return embed
    txt_aug = TXT_AUG_BY_KEY.get(sentence_key, "rule-based")
    return f"python captions_augment.py --dataset {ds.key} --txt-aug {txt_aug}{where}, then {embed}"


def augmented_json_command(ds: DatasetInfo, data_dir: str | Path | None = None) -> str:
    return f"python captions_augment.py --dataset {ds.key} --txt-aug rule-based{_data_dir_flag(ds, data_dir)}"


def data_path(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / name
