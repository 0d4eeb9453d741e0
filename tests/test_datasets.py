"""Datasets by name or file: both JSON layouts, ragged captions, label rules, split protocols, bad input."""
import json

import pytest

from configs import files
from configs.datasets import get_dataset
from utils.data.dataset_json import (
    caption_offsets,
    caption_owner,
    captions,
    detect_layout,
    load_dataset_json,
)
from utils.data.labels import resolve_labels
from utils.data.splits import choose_captions, make_split, resolve_split
from utils.errors import DUCHError


def karpathy(names, counts=None, classes=None, splits=None):
    counts = counts or [5] * len(names)
    images = []
    for j, name in enumerate(names):
        image = {"filename": name, "sentences": [{"raw": f"caption {i} of {name}"} for i in range(counts[j])]}
        if classes is not None:
            image["classname"] = classes[j]
        if splits is not None:
            image["split"] = splits[j]
        images.append(image)
    return {"images": images}


def nwpu(per_class=3, counts=None):
    out, n = {}, 0
    for c in ("airplane", "bare_land"):
        out[c] = []
        for i in range(per_class):
            k = counts[n] if counts else 5
            split = ("train", "val", "test")[i % 3]
            entry = {"filename": f"{c}_{i + 1:03d}.jpg", "split": split, "raw": f"{c} {i} zero"}
            entry.update({f"raw_{m}": f"{c} {i} caption {m}" for m in range(1, k)})
            out[c].append(entry)
            n += 1
    return out


def write(tmp_path, data, name="captions.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_named_datasets_and_files(tmp_path):
    assert get_dataset("NWPU").num_images == 31500 and get_dataset("rsitmd").default_split == "json"
    assert get_dataset("ucm").default_split == "duch" and get_dataset("rsicd").default_split == "duch"
    path = write(tmp_path, karpathy(["a_1.jpg", "a_2.jpg"]), "my_set.json")
    ds = get_dataset(str(path))
    assert ds.from_file and ds.name == "my_set" and ds.default_data_dir == str(tmp_path) and ds.default_split == "json"
    assert get_dataset(str(path), name="Mine").name == "Mine"
    assert files.current_dataset_json(ds, tmp_path) == path
    assert files.image_emb_name(ds) == "image_emb_my_set_aug_no_aug.h5"
    with pytest.raises(DUCHError, match="dataset file .*missing.json not found"):
        get_dataset(str(tmp_path / "missing.json"))
    with pytest.raises(DUCHError, match="unknown dataset 'nwpuu'.*did you mean"):
        get_dataset("nwpuu")


def test_release_json_names_are_found(tmp_path):
    write(tmp_path, karpathy(["a_1.tif"]), "dataset_RSITMD.json")
    assert files.current_dataset_json(get_dataset("rsitmd"), tmp_path) == tmp_path / "dataset_RSITMD.json"


def test_nwpu_layout_becomes_karpathy_with_ragged_captions_and_class_folders(tmp_path):
    counts = [5, 1, 3, 2, 5, 4]
    data = load_dataset_json(write(tmp_path, nwpu(counts=counts)))
    assert data["layout"] == "nwpu" and len(data["images"]) == 6
    assert [len(im["sentences"]) for im in data["images"]] == counts
    assert data["images"][3]["classname"] == "bare_land"
    assert data["images"][0]["sentences"][1]["raw"] == "airplane 0 caption 1"
    offsets = caption_offsets(data)
    assert offsets.tolist() == [0, 5, 6, 9, 11, 16, 20]
    assert caption_owner(offsets).tolist() == [0] * 5 + [1] + [2] * 3 + [3] * 2 + [4] * 5 + [5] * 4
    assert len(captions(data)) == 20
    labels = resolve_labels(data)
    assert labels.rule == "classname" and labels.values.tolist() == [0, 0, 0, 1, 1, 1]


def test_choose_captions_draws_from_each_images_count_and_is_the_original_for_five():
    assert choose_captions(list(range(50)), 42, caption_offsets([5] * 50)) == choose_captions(list(range(50)), 42)
    offsets = caption_offsets([1, 2, 7, 3])
    rows = choose_captions([0, 1, 2, 3], 3, offsets)
    assert rows[0] == 0 and all(offsets[j] <= r < offsets[j + 1] for j, r in enumerate(rows))
    assert make_split(37, 42, caption_offsets([5] * 37)) == make_split(37, 42)


def test_label_rules_in_order(tmp_path):
    codes = karpathy(["1.tif", "2.tif", "3.tif"])
    for j, image in enumerate(codes["images"]):
        image["classcode"] = j % 2
    assert resolve_labels(codes).rule == "classcode"
    prefixed = karpathy(["beach_1.tif", "bare_land_2.tif", "beach_3.tif"])
    got = resolve_labels(prefixed)
    assert got.rule == "file names" and got.values.tolist() == [1, 0, 1] and got.names == ["bare_land", "beach"]
    plain = karpathy(["1.tif", "2.tif", "3.tif"])
    assert resolve_labels(plain).values is None and resolve_labels(plain).rule == "none"
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,label\n1.tif,sea\n2.tif,sea;port\n3.tif,farm\n")
    got = resolve_labels(plain, labels_csv=csv)
    assert got.rule == "labels CSV" and got.names == ["farm", "port", "sea"]
    assert got.values.tolist() == [[0, 0, 1], [0, 1, 1], [1, 0, 0]]  # multi-label: multi-hot rows
    csv.write_text("1.tif,sea\n2.tif,port\n3.tif,sea\n")
    assert resolve_labels(plain, labels_csv=csv).values.tolist() == [1, 0, 1]
    # a named dataset that documents class codes keeps requiring them (UCM: else its id blocks)
    with pytest.raises(DUCHError, match="DEMO labels come from each image's 'classcode'"):
        resolve_labels(plain, get_dataset("demo"))


@pytest.mark.parametrize("case,message", [
    ("unknown", r"line 2 names 'x.tif', which is not an image"),
    ("missing", r"1 of 3 images have no row \(e.g. '3.tif'\)"),
    ("twice", r"line 3: '1.tif' has a second row"),
])
def test_labels_csv_errors(tmp_path, case, message):
    rows = {"unknown": "1.tif,a\nx.tif,b\n", "missing": "1.tif,a\n2.tif,b\n",
            "twice": "1.tif,a\n2.tif,b\n1.tif,c\n"}[case]
    csv = tmp_path / "labels.csv"
    csv.write_text(rows)
    with pytest.raises(DUCHError, match=message):
        resolve_labels(karpathy(["1.tif", "2.tif", "3.tif"]), labels_csv=csv)


@pytest.mark.parametrize("data,message", [
    ({"images": [{"filename": "a.jpg", "raw": "x"}]}, "mixed layouts: image 0 .a.jpg. has NWPU-style 'raw' fields"),
    ({"c": [{"filename": "a.jpg", "sentences": []}]}, "mixed layouts: class lists"),
    ([1, 2], "expected a Karpathy-layout object"),
    ({"images": [{"filename": "a.jpg", "sentences": []}]}, r"no image has a caption that is not blank"),
    (karpathy(["a.jpg", "b.jpg", "a.jpg"]), "duplicate file name 'a.jpg' .images 0 and 2."),
])
def test_bad_layouts_are_one_line(tmp_path, data, message):
    with pytest.raises(DUCHError, match=message):
        load_dataset_json(write(tmp_path, data))


def test_layout_detection():
    assert detect_layout(karpathy(["a"])) == "karpathy" and detect_layout(nwpu()) == "nwpu"


def test_json_protocol_parts_and_missing_split(tmp_path):
    names = [f"c_{i}.jpg" for i in range(9)]
    data = karpathy(names, splits=["train", "train", "test", "val", "train", "test", "train", "val", "train"])
    offsets = caption_offsets(data)
    s = resolve_split("json", data["images"], offsets)
    assert s.train == [0, 1, 4, 6, 8] and s.val == [3, 7] and s.query == [2, 5] and s.db == [0, 1, 3, 4, 6, 7, 8]
    assert s.valid_query == [3, 7] and s.valid_db == s.train and s.protocol == "json"
    del data["images"][4]["split"]
    with pytest.raises(DUCHError, match=r"image 4 \(c_4.jpg\) has no 'split' field; --split json needs"):
        resolve_split("json", data["images"], offsets)


def test_split_file_round_trip_by_file_names(tmp_path):
    counts = [5, 3, 1, 4] * 5
    names = [f"img_{i}.tif" for i in range(20)]
    offsets = caption_offsets(counts)
    images = karpathy(names, counts)["images"]
    first = resolve_split("duch", images, offsets, seed=7)
    path = write(tmp_path, first.to_json(names, offsets), "split.json")
    # another person's JSON lists the images in another order: the split follows the file names
    order = list(reversed(range(20)))
    reordered = [images[j] for j in order]
    again = resolve_split("file", reordered, caption_offsets([counts[j] for j in order]), split_file=path)
    back = {new: old for new, old in enumerate(order)}
    assert sorted(back[j] for j in again.train) == first.train and sorted(back[j] for j in again.query) == first.query
    portable = json.loads(path.read_text())
    assert portable["files"]["query"] == [names[j] for j in first.query] and portable["format"] == "duch-split/1"
    bad = dict(portable, files=dict(portable["files"], train=["nope.tif"]))
    message = r"files.train names 1 files the dataset does not have \(e.g. 'nope.tif'\)"
    with pytest.raises(DUCHError, match=message):
        resolve_split("file", images, offsets, split_file=write(tmp_path, bad, "bad.json"))
    with pytest.raises(DUCHError, match="--split file needs the path"):
        resolve_split("file", images, offsets)


@pytest.mark.parametrize("n", [2100, 10921])  # UCM, RSICD: the default protocol is the original's split, unchanged
def test_default_split_of_ucm_and_rsicd_is_the_original(n):
    images = karpathy([f"{j}.tif" for j in range(n)])["images"]
    for key in ("ucm", "rsicd"):
        assert get_dataset(key).default_split == "duch"
    assert resolve_split("duch", images, caption_offsets([5] * n), 42) == make_split(n, 42)


def test_ucm_rsicd_and_demo_keep_five_captions_a_file_takes_any(tmp_path):
    path = write(tmp_path, karpathy(["1.tif", "2.tif"], counts=[5, 4]))
    for key in ("ucm", "rsicd", "demo"):
        with pytest.raises(DUCHError, match=r"image 1 \(2.tif\) has 4 captions; every .* image has exactly 5"):
            load_dataset_json(path, ds=get_dataset(key))
    for ds in (get_dataset("rsitmd"), get_dataset(str(path)), None):
        assert caption_offsets(load_dataset_json(path, ds=ds)).tolist() == [0, 5, 9]
