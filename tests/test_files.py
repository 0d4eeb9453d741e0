"""File naming, presets and dataset facts: the names the authors' published features carry."""
import numpy as np
import pytest

from configs import files
from configs.datasets import get_dataset
from configs.presets import PRESETS, get_preset
from utils.dataset_json import image_labels
from utils.errors import DUCHError
from utils.features import resolve_files


def test_image_and_caption_file_names():
    ucm, rsicd = get_dataset("ucm"), get_dataset("RSICD")
    assert files.image_emb_name(ucm) == "image_emb_UCM_aug_no_aug.h5"
    assert files.image_emb_name(ucm, "center_crop_only") == "image_emb_UCM_aug_center_crop_only.h5"
    assert files.image_emb_name(rsicd, "aug_center") == "image_emb_RSICD_aug_aug_center.h5"
    assert files.image_emb_name(ucm, "rotation_cc", rot_deg=(-10, -5)) == "image_emb_UCM_aug_rotation_cc_-10_-5.h5"
    assert files.image_emb_name(ucm, "blur_cc", blur_val=(3, 3, 1.1, 1.3)) == "image_emb_UCM_aug_blur_cc_3_3_1.1_1.3.h5"
    assert files.image_emb_name(ucm, "jitter_cc", jit_str=0.5) == "image_emb_UCM_aug_jitter_cc_0.5.h5"
    assert files.caption_emb_name(ucm) == "caption_emb_UCM_aug.h5"
    assert [files.caption_emb_name(rsicd, k) for k in files.CAPTION_AUG_KEYS.values()] == [
        "caption_emb_RSICD_aug_rb.h5", "caption_emb_RSICD_aug_bt_prob.h5", "caption_emb_RSICD_aug_bt_chain.h5"]


@pytest.mark.parametrize("preset,image_aug,caption_aug", [
    ("default", "image_emb_UCM_aug_aug_center.h5", "caption_emb_UCM_aug_rb.h5"),
    ("no_aug", "image_emb_UCM_aug_center_crop_only.h5", "caption_emb_UCM_aug.h5"),
    ("each_img_random", "image_emb_UCM_aug_each_img_random.h5", "caption_emb_UCM_aug_rb.h5"),
    ("txt_aug_bt_chain", "image_emb_UCM_aug_aug_center.h5", "caption_emb_UCM_aug_bt_chain.h5"),
    ("txt_aug_bt_prob", "image_emb_UCM_aug_aug_center.h5", "caption_emb_UCM_aug_bt_prob.h5"),
    ("img_aug_random", "image_emb_UCM_aug_aug_random.h5", "caption_emb_UCM_aug_rb.h5"),
    ("img_aug_random_only", "image_emb_UCM_aug_random_crop_only.h5", "caption_emb_UCM_aug_rb.h5"),
])
def test_presets_resolve_to_spec_files(tmp_path, preset, image_aug, caption_aug):
    paths = resolve_files(get_dataset("ucm"), tmp_path, preset)
    assert paths.image.name == "image_emb_UCM_aug_center_crop_only.h5" and paths.caption.name == "caption_emb_UCM_aug.h5"
    assert (paths.image_aug.name, paths.caption_aug.name) == (image_aug, caption_aug)
    assert paths.dataset_json.name == "augmented_UCM.json"


def test_all_twelve_presets_and_unknown_one():
    assert len(PRESETS) == 12
    with pytest.raises(DUCHError, match="unknown preset"):
        get_preset("nope")


def test_img_aug_emb_overrides_the_augmented_image_file(tmp_path):
    (tmp_path / "mine.h5").write_bytes(b"")
    assert resolve_files(get_dataset("ucm"), tmp_path, "default", "mine.h5").image_aug == tmp_path / "mine.h5"
    assert resolve_files(get_dataset("ucm"), tmp_path, "default", "/abs/other.h5").image_aug.as_posix() == "/abs/other.h5"


def test_labels_from_classcode_or_rsicd_file_names():
    with_codes = {"images": [{"filename": "1.tif", "classcode": 3}, {"filename": "2.tif", "classcode": 0}]}
    assert image_labels(with_codes).tolist() == [3, 0]
    rsicd = {"images": [{"filename": f} for f in ("viaduct_3.jpg", "airport_12.jpg", "bare_land_1.jpg", "airport_2.jpg")]}
    assert np.array_equal(image_labels(rsicd, get_dataset("rsicd")), [2, 0, 1, 0])  # sorted class names: airport, bare_land, viaduct
