"""Dataset JSON validation: every bad entry is one clear line naming the image (index and file) and sentence."""
import copy
import json

import numpy as np
import pytest

from configs.datasets import get_dataset
from utils.data.dataset_json import captions, load_dataset_json
from utils.data.labels import image_labels, resolve_labels
from utils.errors import DUCHError


def small_json(n=3, with_codes=True):
    images = []
    for j in range(n):
        sentences = [{"raw": f"caption {i} of image {j} .",
                      "aug_rb": f"sentence {i} of picture {j} ."} for i in range(5)]
        image = {"filename": f"{j + 1}.tif", "sentences": sentences}
        if with_codes:
            image["classcode"] = j % 2
        images.append(image)
    return {"num_classes": 2, "images": images}


def load(tmp_path, data):
    path = tmp_path / "UCM.json"
    path.write_text(json.dumps(data))
    return load_dataset_json(path)


@pytest.mark.parametrize("value", [None, 3, ["a"]])
def test_raw_caption_must_be_a_string(tmp_path, value):
    data = small_json()
    data["images"][1]["sentences"][2]["raw"] = value
    with pytest.raises(DUCHError) as err:
        load(tmp_path, data)
    message = str(err.value)
    assert "sentence 2 of image 1 (2.tif)" in message and "must be a string" in message and "\n" not in message


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_blank_captions_are_left_out_and_counted(tmp_path, value):
    data = small_json()
    data["images"][1]["sentences"][2]["raw"] = value
    for sentence in data["images"][2]["sentences"]:
        sentence["raw"] = value  # image 2 is left without a caption: it is left out too
    loaded = load(tmp_path, data)
    assert [im["filename"] for im in loaded["images"]] == ["1.tif", "2.tif"]
    assert len(loaded["images"][1]["sentences"]) == 4
    assert loaded["dropped"] == {"blank_captions": 6, "images_without_captions": 1, "examples": ["2.tif", "3.tif"],
                                 "images": ["3.tif"]}
    from utils.data.dataset_json import dropped_warning

    assert dropped_warning(loaded).startswith("6 blank captions and 1 image left without a caption were left out")
    # a dataset whose release fixes 5 captions per image says what the drop left
    path = tmp_path / "UCM.json"
    with pytest.raises(DUCHError, match=r"image 1 \(2.tif\) has 4 captions; every UCM image has exactly 5"):
        load_dataset_json(path, ds=get_dataset("ucm"))


def test_augmented_key_is_checked_when_read(tmp_path):
    data = small_json()
    data["images"][2]["sentences"][4]["aug_rb"] = None
    loaded = load(tmp_path, data)  # the raw captions are fine
    with pytest.raises(DUCHError, match=r"sentence 4 of image 2 \(3.tif\) has 'aug_rb' = None"):
        captions(loaded, "aug_rb")
    del data["images"][0]["sentences"][0]["aug_rb"]
    with pytest.raises(DUCHError, match=r"sentence 0 of image 0 \(1.tif\) has no 'aug_rb' caption"):
        captions(data, "aug_rb")


def test_image_entry_that_is_not_an_object(tmp_path):
    data = small_json()
    data["images"][1] = "2.tif"
    with pytest.raises(DUCHError, match="image 1 is a JSON str, not an object"):
        load(tmp_path, data)


@pytest.mark.parametrize("filename", [None, "", 7])
def test_image_without_filename(tmp_path, filename):
    data = small_json()
    if filename is None:
        del data["images"][0]["filename"]
    else:
        data["images"][0]["filename"] = filename
    with pytest.raises(DUCHError, match="image 0 has .*filename"):
        load(tmp_path, data)


def test_sentence_that_is_not_an_object(tmp_path):
    data = small_json()
    data["images"][2]["sentences"][3] = "a caption"
    with pytest.raises(DUCHError, match=r"sentence 3 of image 2 \(3.tif\) is a JSON str"):
        load(tmp_path, data)


def test_missing_classcode_names_the_image_and_never_falls_back_to_file_names():
    data = small_json()
    del data["images"][1]["classcode"]
    for ds in (get_dataset("ucm"), None):
        with pytest.raises(DUCHError, match=r"image 1 \(2.tif\) has no 'classcode' \(1 of 3 images lack one\)"):
            image_labels(data, ds)
    # UCM never takes classes from file names (1.tif, 2.tif ... would make every image its own class)
    with pytest.raises(DUCHError, match="UCM labels come from each image's 'classcode'"):
        image_labels(small_json(with_codes=False), get_dataset("ucm"))


def test_rsicd_takes_classes_from_file_names_only_when_no_image_has_a_code():
    names = ("viaduct_3.jpg", "airport_12.jpg", "bare_land_1.jpg", "airport_2.jpg")
    rsicd = {"images": [{"filename": f} for f in names]}
    assert get_dataset("rsicd").label_rule == "filename" and get_dataset("ucm").label_rule == "classcode"
    assert np.array_equal(resolve_labels(rsicd, get_dataset("rsicd")).values, [2, 0, 1, 0])
    mixed = copy.deepcopy(rsicd)
    mixed["images"][0]["classcode"] = 5
    with pytest.raises(DUCHError, match=r"image 1 \(airport_12.jpg\) has no 'classcode'"):
        resolve_labels(mixed, get_dataset("rsicd"))


@pytest.mark.parametrize("code", ["three", 2.5, True, None, [1], -1])
def test_non_integer_classcode_is_one_clear_line(code):
    data = small_json()
    data["images"][2]["classcode"] = code
    with pytest.raises(DUCHError, match=r"image 2 \(3.tif\) has classcode .*a class code is a non-negative integer"):
        image_labels(data, get_dataset("ucm"))


def test_classcode_beyond_num_classes_says_so():
    data = small_json()
    data["images"][0]["classcode"] = 1.0  # an integral float is accepted as an integer
    data["images"][2]["classcode"] = 7
    with pytest.raises(DUCHError, match=r"image 2 \(3.tif\) has classcode 7, but the JSON's num_classes is 2"):
        image_labels(data, get_dataset("ucm"))
