"""Every preset resolves to the files docs/formats.md gives (names written out literally from its table)."""
import pytest

from configs.datasets import get_dataset
from configs.presets import PRESETS, get_preset
from utils.data.features import resolve_files
from utils.errors import DUCHError

# docs/formats.md: preset -> (augmented image set, augmented caption set)
PRESET_TABLE = {
    "default": ("image_emb_{DS}_aug_aug_center.h5", "caption_emb_{DS}_aug_rb.h5"),
    "baseline": ("image_emb_{DS}_aug_aug_center.h5", "caption_emb_{DS}_aug_rb.h5"),
    "img_aug_center": ("image_emb_{DS}_aug_aug_center.h5", "caption_emb_{DS}_aug_rb.h5"),
    "img_aug_center_txt_rb": ("image_emb_{DS}_aug_aug_center.h5", "caption_emb_{DS}_aug_rb.h5"),
    "txt_aug_rb": ("image_emb_{DS}_aug_aug_center.h5", "caption_emb_{DS}_aug_rb.h5"),
    "no_aug": ("image_emb_{DS}_aug_center_crop_only.h5", "caption_emb_{DS}_aug.h5"),
    "each_img_random": ("image_emb_{DS}_aug_each_img_random.h5", "caption_emb_{DS}_aug_rb.h5"),
    "img_aug_center_txt_bt_chain": ("image_emb_{DS}_aug_aug_center.h5", "caption_emb_{DS}_aug_bt_chain.h5"),
    "txt_aug_bt_chain": ("image_emb_{DS}_aug_aug_center.h5", "caption_emb_{DS}_aug_bt_chain.h5"),
    "txt_aug_bt_prob": ("image_emb_{DS}_aug_aug_center.h5", "caption_emb_{DS}_aug_bt_prob.h5"),
    "img_aug_random": ("image_emb_{DS}_aug_aug_random.h5", "caption_emb_{DS}_aug_rb.h5"),
    "img_aug_random_only": ("image_emb_{DS}_aug_random_crop_only.h5", "caption_emb_{DS}_aug_rb.h5"),
}


def test_the_presets_are_the_twelve_of_the_spec():
    assert sorted(PRESETS) == sorted(PRESET_TABLE)


@pytest.mark.parametrize("dataset,DS", [("ucm", "UCM"), ("rsicd", "RSICD")])
@pytest.mark.parametrize("preset", list(PRESET_TABLE))
def test_preset_resolves_to_the_spec_files(tmp_path, dataset, DS, preset):
    paths = resolve_files(get_dataset(dataset), tmp_path, preset)
    image_aug, caption_aug = (name.format(DS=DS) for name in PRESET_TABLE[preset])
    assert paths.image == tmp_path / f"image_emb_{DS}_aug_center_crop_only.h5"
    assert paths.caption == tmp_path / f"caption_emb_{DS}_aug.h5"
    assert paths.image_aug == tmp_path / image_aug
    assert paths.caption_aug == tmp_path / caption_aug
    assert paths.dataset_json == tmp_path / f"augmented_{DS}.json"


def test_unknown_preset_is_an_error():
    with pytest.raises(DUCHError, match="unknown preset 'nope'"):
        get_preset("nope")
    with pytest.raises(DUCHError, match="unknown preset"):
        resolve_files(get_dataset("ucm"), "data", "txt_aug_bt")
    assert get_preset("Default") == get_preset("default")  # names in any case


def test_img_aug_emb_overrides_only_the_augmented_image_file(tmp_path):
    (tmp_path / "mine.h5").write_bytes(b"")
    paths = resolve_files(get_dataset("ucm"), tmp_path, "txt_aug_bt_prob", "mine.h5")
    assert paths.image_aug == tmp_path / "mine.h5"
    assert paths.caption_aug == tmp_path / "caption_emb_UCM_aug_bt_prob.h5"
    assert paths.image == tmp_path / "image_emb_UCM_aug_center_crop_only.h5"
