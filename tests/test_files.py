"""File naming and dataset facts: the names the authors' published features carry (presets: test_presets.py)."""
import numpy as np

from configs import files
from configs.datasets import get_dataset
from utils.data.labels import image_labels, resolve_labels


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


def test_parameters_in_names_and_the_older_names_still_read():
    ucm = get_dataset("ucm")
    # a rotation of 7.5 degrees must not share the file of 7 degrees
    assert files.image_emb_name(ucm, "rotation_cc", rot_deg=(-7.5, 5)) == "image_emb_UCM_aug_rotation_cc_-7.5_5.h5"
    # the written name first, then the names earlier versions wrote (integral floats without ".0")
    assert files.image_emb_names(ucm, "blur_cc", blur_val=(3, 3, 1, 2)) == [
        "image_emb_UCM_aug_blur_cc_3_3_1.0_2.0.h5", "image_emb_UCM_aug_blur_cc_3_3_1_2.h5"]
    assert files.image_emb_names(ucm, "jitter_cc", jit_str=1) == [
        "image_emb_UCM_aug_jitter_cc_1.0.h5", "image_emb_UCM_aug_jitter_cc_1.h5"]
    assert files.image_emb_names(ucm) == ["image_emb_UCM_aug_no_aug.h5", "image_emb_UCM_aug.h5"]
    # the original's defaults (docs/method.md)
    assert files.image_emb_names(ucm, "blur_cc") == ["image_emb_UCM_aug_blur_cc_3_3_1.1_1.3.h5"]
    assert files.image_emb_names(ucm, "jitter_cc") == ["image_emb_UCM_aug_jitter_cc_0.5.h5"]


def test_labels_from_classcode_or_rsicd_file_names():
    with_codes = {"images": [{"filename": "1.tif", "classcode": 3}, {"filename": "2.tif", "classcode": 0}]}
    assert image_labels(with_codes).tolist() == [3, 0]
    rsicd = {"images": [{"filename": f} for f in ("viaduct_3.jpg", "airport_12.jpg", "bare_land_1.jpg",
                                                  "airport_2.jpg")]}
    # sorted class names: airport, bare_land, viaduct
    assert np.array_equal(resolve_labels(rsicd, get_dataset("rsicd")).values, [2, 0, 1, 0])
