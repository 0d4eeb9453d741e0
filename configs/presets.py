"""Training data presets (``--preset``): which augmented image and caption features pair with the base ones."""
from __future__ import annotations

from dataclasses import dataclass

from configs.errors import DUCHError, did_you_mean

BASE_IMAGE_SET = "center_crop_only"
BASE_CAPTION_KEY = "raw"


@dataclass(frozen=True)
class Preset:
    aug_image_set: str  # image transform set of the augmented image view
    aug_caption_key: str  # JSON sentence key of the augmented caption view


_RB = Preset("aug_center", "aug_rb")
PRESETS: dict[str, Preset] = {
    "default": _RB,
    "baseline": _RB,
    "img_aug_center": _RB,
    "img_aug_center_txt_rb": _RB,
    "txt_aug_rb": _RB,
    "no_aug": Preset("center_crop_only", "raw"),
    "each_img_random": Preset("each_img_random", "aug_rb"),
    "img_aug_center_txt_bt_chain": Preset("aug_center", "aug_bt_chain"),
    "txt_aug_bt_chain": Preset("aug_center", "aug_bt_chain"),
    "txt_aug_bt_prob": Preset("aug_center", "aug_bt_prob"),
    "img_aug_random": Preset("aug_random", "aug_rb"),
    "img_aug_random_only": Preset("random_crop_only", "aug_rb"),
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name, in any case; an unknown name suggests the closest one."""
    preset = PRESETS.get(str(name).lower())
    if preset is None:
        raise DUCHError(f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; choose one of: {', '.join(PRESETS)}")
    return preset
