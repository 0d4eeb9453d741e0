"""The field's published files as they are: caption-list folders, records files, split lists, label rules and
their precedence, blank captions, --describe. Small files written here with the real formats' quirks."""
import json
import unicodedata

import numpy as np
import pytest

from configs import files
from configs.datasets import get_dataset
from tests.conftest import run_main
from utils.data.dataset_json import left_out_images, load_dataset_json
from utils.data.labels import resolve_labels
from utils.data.splits import resolve_split
from utils.errors import DUCHError


def caps(name, n=5):
    return [f"caption {i} of {name} ." for i in range(n)]


def write_lists(folder, parts, per_caption=(), trailing="\n"):
    """``<part>_caps.txt`` + ``<part>_filename.txt``; parts in ``per_caption`` list a name per caption line."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, names in parts.items():
        lines = [c for n in names for c in caps(n)]
        listed = [n for n in names for _ in range(5)] if part in per_caption else list(names)
        (folder / f"{part}_caps.txt").write_text("\n".join(lines) + trailing)
        (folder / f"{part}_filename.txt").write_text("\n".join(listed) + trailing)
    return folder


def karpathy(names, **fields):
    return {"images": [{"filename": n, "sentences": [{"raw": c} for c in caps(n)], **fields} for n in names]}


# ----------------------------------------------------------------------------- caption lists


@pytest.mark.parametrize("per_caption", [(), ("train",), ("train", "test")])
@pytest.mark.parametrize("trailing", ["\n", "\n\n\n", ""])
def test_caption_lists_one_name_per_image_or_per_caption(tmp_path, per_caption, trailing):
    folder = write_lists(tmp_path / "rsitmd_precomp", {"train": ["a_1.tif", "a_2.tif", "b_1.tif"],
                                                       "test": ["b_2.tif", "a_3.tif"]}, per_caption, trailing)
    data = load_dataset_json(folder)
    assert data["layout"] == "caption lists"
    assert [(im["filename"], im["split"]) for im in data["images"]] == [
        ("a_1.tif", "train"), ("a_2.tif", "train"), ("b_1.tif", "train"), ("b_2.tif", "test"), ("a_3.tif", "test")]
    assert all([s["raw"] for s in im["sentences"]] == caps(im["filename"]) for im in data["images"])
    split = resolve_split("json", data["images"], np.arange(6) * 5)
    assert (split.train, split.query, split.db) == ([0, 1, 2], [3, 4], [0, 1, 2])


def test_caption_lists_blank_lines_and_bad_counts(tmp_path):
    folder = write_lists(tmp_path / "p", {"train": ["a_1.tif", "a_2.tif"], "test": ["a_3.tif"]})
    lines = (folder / "train_caps.txt").read_text().split("\n")
    lines[1] = " "  # a blank caption: left out, counted
    lines[5:10] = [""] * 5  # every caption of a_2.tif blank: the image is left out
    (folder / "train_caps.txt").write_text("\n".join(lines))
    data = load_dataset_json(folder)
    assert [im["filename"] for im in data["images"]] == ["a_1.tif", "a_3.tif"]
    assert data["dropped"]["blank_captions"] == 6 and data["dropped"]["images_without_captions"] == 1
    (folder / "test_caps.txt").write_text("one\ntwo\nthree\n")  # 3 lines for 1 name: fine (3 per image)
    assert len(load_dataset_json(folder)["images"][-1]["sentences"]) == 3
    (folder / "test_filename.txt").write_text("a_3.tif\na_4.tif\n")
    with pytest.raises(DUCHError, match="3 caption lines and test_filename.txt 2 names"):
        load_dataset_json(folder)
    (folder / "test_filename.txt").write_text("a_3.tif\n\na_4.tif\n")
    with pytest.raises(DUCHError, match="line 2 is blank"):
        load_dataset_json(folder)
    (folder / "test_caps.txt").write_text("x\ny\nz\n")
    (folder / "test_filename.txt").write_text("a_3.tif\na_4.tif\na_3.tif\n")
    with pytest.raises(DUCHError, match="names 'a_3.tif' again after other files"):
        load_dataset_json(folder)
    (folder / "test_filename.txt").unlink()
    with pytest.raises(DUCHError, match="has no file list beside it: test_filename.txt"):
        load_dataset_json(folder)


def test_an_image_in_two_parts_is_refused(tmp_path):
    folder = write_lists(tmp_path / "p", {"train": ["a_1.tif", "a_2.tif"], "test": ["a_2.tif"]})
    with pytest.raises(DUCHError, match="'a_2.tif' occurs in .*train_caps.txt and in .*test_caps.txt"):
        load_dataset_json(folder)


# ----------------------------------------------------------------------------- records


def test_records_files_per_part(tmp_path):
    folder = tmp_path / "rs"
    folder.mkdir()
    train = [{"image": f"train/{n}", "caption": c, "image_id": k} for k, n in enumerate(["a_1.tif", "b_1.tif"])
             for c in caps(n)]
    (folder / "rsitmd_train.json").write_text(json.dumps(train))
    (folder / "rsitmd_test.json").write_text(json.dumps([{"image": "test/a_2.tif", "caption": caps("a_2.tif", 3)}]))
    (folder / "notes.json").write_text("{}")  # no part in its name: not a records file
    data = load_dataset_json(folder)
    assert data["layout"] == "records"
    assert [(im["filename"], im["filepath"], im["split"], len(im["sentences"])) for im in data["images"]] == [
        ("a_1.tif", "train", "train", 5), ("b_1.tif", "train", "train", 5), ("a_2.tif", "test", "test", 3)]
    assert [s["raw"] for s in data["images"][1]["sentences"]] == caps("b_1.tif")
    single = load_dataset_json(folder / "rsitmd_test.json")  # one file given by itself: its part from its name
    assert [im["split"] for im in single["images"]] == ["test"]
    (folder / "rsitmd_val.json").write_text(json.dumps([{"image": "val/a_1.tif", "caption": "x"}]))
    with pytest.raises(DUCHError, match="'a_1.tif' occurs in .*rsitmd_train.json and in .*rsitmd_val.json"):
        load_dataset_json(folder)
    (folder / "rsitmd_val.json").write_text(json.dumps([{"image": "val/c.tif", "caption": 5}]))
    with pytest.raises(DUCHError, match="record 0 has caption 5"):
        load_dataset_json(folder)
    (folder / "rsitmd_val.json").write_text(json.dumps([{"image": "../c.tif", "caption": "x"}]))
    with pytest.raises(DUCHError, match="leads outside the image folder"):
        load_dataset_json(folder)


def test_a_folder_names_a_dataset_and_a_named_dataset_finds_one(tmp_path):
    folder = write_lists(tmp_path / "rsitmd_precomp", {"train": ["a_1.tif"], "test": ["a_2.tif"]})
    ds = get_dataset(str(folder))
    assert (ds.name, ds.default_data_dir, ds.default_split) == ("rsitmd_precomp", str(folder), "json")
    assert files.source_dataset_json(get_dataset("rsitmd"), folder) == folder
    assert "--dataset " + str(folder) in files.image_emb_command(ds)  # fix-it commands name the folder
    with pytest.raises(DUCHError, match="holds no dataset this project reads; expected a folder of caption lists"):
        load_dataset_json(tmp_path)


def test_ucm_finds_the_release_dataset_json_and_its_id_blocks(tmp_path):
    data = karpathy(["1.tif", "100.tif", "101.tif", "2100.tif"], split="train")
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    ucm = get_dataset("ucm")
    assert files.source_dataset_json(ucm, tmp_path) == tmp_path / "dataset.json"
    labels = resolve_labels(load_dataset_json(tmp_path / "dataset.json", ds=ucm), ucm)
    assert labels.rule == "id blocks" and labels.values.tolist() == [0, 0, 1, 20] and labels.names[20] == "tenniscourt"
    with pytest.raises(DUCHError, match=r"is not one of UCM's image ids 1..2100"):
        resolve_labels(karpathy(["2101.tif"]), ucm)


# ----------------------------------------------------------------------------- labels


def test_labels_csv_wins_and_says_what_it_replaced(tmp_path):
    data = karpathy(["a_1.tif", "a_2.tif", "b_1.tif"], classcode=3)
    csv = tmp_path / "labels.csv"
    csv.write_bytes("\ufefffilename,label\na_1.tif,x\na_2.tif,y\nb_1.tif,x\n".encode())  # with a byte-order mark
    got = resolve_labels(data, None, "d.json", csv)
    assert got.rule == "labels CSV" and got.values.tolist() == [0, 1, 0]
    assert got.warnings == [f"labels from --labels {csv}, replacing the classcode rule"]
    none = resolve_labels(data, None, "d.json", "none")
    assert none.values is None and none.rule == "none (--labels none)"
    csv.write_bytes(b"a_1.tif,\xff\n")
    with pytest.raises(DUCHError, match="not UTF-8 text"):
        resolve_labels(data, None, "d.json", csv)


@pytest.mark.parametrize("dataset", ["rsicd", None])
def test_a_prefix_rule_that_misses_files_is_refused_with_the_fix(dataset):
    """RSICD's common JSON: most names airport_1.jpg, some bare numbers (00001.jpg): never a class per file."""
    data = karpathy(["airport_1.jpg", "00001.jpg", "beach_2.jpg", "00002.jpg"])
    ds = get_dataset(dataset) if dataset else None
    with pytest.raises(DUCHError) as err:
        resolve_labels(data, ds, "dataset_rsicd.json")
    message = str(err.value)
    assert "2 of 4 file names have no '<class>_' prefix (e.g. '00001.jpg', '00002.jpg')" in message
    assert "--labels CSV" in message and "--labels none" in message
    if dataset:  # RSICD's labels are required: all bare names are refused too
        with pytest.raises(DUCHError, match="4 of 4 file names have no"):
            resolve_labels(karpathy(["1.jpg", "2.jpg", "3.jpg", "4.jpg"]), ds)


def test_a_class_count_other_than_the_release_s_is_a_warning():
    got = resolve_labels(karpathy(["airport_1.tif", "airport_2.tif", "beach_1.tif"]), get_dataset("rsitmd"))
    assert got.rule == "file names" and got.warnings == [
        "the labels (file names) give 2 classes; the RSITMD release has 32: check them, or give the published "
        "classes with --labels CSV"]


@pytest.mark.parametrize("a,b", [("1.png", "./1.png"), (unicodedata.normalize("NFC", "é.png"),
                                                         unicodedata.normalize("NFD", "é.png"))])
def test_one_file_under_two_spellings_is_one_file(tmp_path, a, b):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(karpathy([a, "2.png", b])))
    with pytest.raises(DUCHError, match="duplicate file name .* \\(images 0 and 2"):
        load_dataset_json(path)


# ----------------------------------------------------------------------------- split lists


def test_split_file_reads_a_folder_of_file_lists(tmp_path):
    names = [f"c_{k}.tif" for k in range(12)]
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps(karpathy(names)))
    data = load_dataset_json(json_path)
    offsets = np.arange(13) * 5
    lists = write_lists(tmp_path / "lists", {"train": names[:8], "val": names[8:10], "test": names[10:]},
                        per_caption=("train",))
    split = resolve_split("file", data["images"], offsets, 42, lists)
    assert (split.train, split.val, split.query, split.db) == (list(range(8)), [8, 9], [10, 11], list(range(10)))
    # an image left out for having only blank captions may still be listed: it is skipped
    blank = karpathy(names)
    blank["images"][9]["sentences"] = [{"raw": " "}]
    json_path.write_text(json.dumps(blank))
    kept = load_dataset_json(json_path)
    again = resolve_split("file", kept["images"], np.arange(12) * 5, 42, lists, left_out=left_out_images(kept))
    assert (again.val, again.query) == ([8], [9, 10])
    (lists / "test_filename.txt").write_text("c_10.tif\nc_7.tif\n")
    with pytest.raises(DUCHError, match="1 images are in both train and test \\(e.g. 'c_7.tif'\\)"):
        resolve_split("file", data["images"], offsets, 42, lists)
    (lists / "test_filename.txt").write_text("c_10.tif\nnope.tif\n")
    with pytest.raises(DUCHError, match="names 1 files the dataset does not have \\(e.g. 'nope.tif'\\)"):
        resolve_split("file", data["images"], offsets, 42, lists)
    (lists / "test_filename.txt").unlink()
    with pytest.raises(DUCHError, match="needs train_filename.txt and test_filename.txt"):
        resolve_split("file", data["images"], offsets, 42, lists)
    (tmp_path / "split.txt").write_text("c_1.tif\n")
    with pytest.raises(DUCHError, match="not valid JSON.*--split file takes a split.json .* or a folder of file lists"):
        resolve_split("file", data["images"], offsets, 42, tmp_path / "split.txt")


def test_a_portable_split_with_a_query_in_the_database_is_refused(tmp_path):
    names = [f"{k}.tif" for k in range(6)]
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"files": {"train": names[:3], "query": names[3:4], "db": names[3:]}}))
    images = karpathy(names)["images"]
    with pytest.raises(DUCHError, match="in both test and db"):
        resolve_split("file", images, np.arange(7) * 5, 42, path)
    path.write_text(json.dumps({"files": {"train": [names[0], "./" + names[0]], "query": names[3:4],
                                          "db": names[4:]}}))
    with pytest.raises(DUCHError, match="'0.tif' occurs twice in train"):
        resolve_split("file", images, np.arange(7) * 5, 42, path)


# ----------------------------------------------------------------------------- --describe


def test_describe_reports_before_any_preprocessing(tmp_path, capsys):
    names = [f"{c}_{k}.tif" for c in ("airport", "beach") for k in range(8)]
    data = karpathy(names)
    for j, image in enumerate(data["images"]):
        image["split"] = "test" if j % 4 == 3 else "train"
    data["images"][0]["sentences"][1]["raw"] = "  "
    (tmp_path / "dataset_RSITMD.json").write_text(json.dumps(data))
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "report.json"
    report = run_main("--dataset", "rsitmd", "--data-dir", str(tmp_path), "--describe", str(out))
    assert json.loads(out.read_text()) == report
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["report.json"])  # nothing else written
    assert (report["images"], report["captions"], report["layout"]) == (16, 79, "karpathy")
    assert report["splits"] == {"protocol": "json", "train": 12, "val": 0, "test": 4, "query": 4, "database": 12}
    assert report["labels"] == {"rule": "file names", "classes": 2}
    assert report["dropped"] == {"blank_captions": 1, "images_without_captions": 0}
    assert any("the RSITMD release has 32" in w for w in report["warnings"])
    printed = capsys.readouterr().out
    assert "json: train 12, val 0, test 4; queries 4, database 12" in printed and "file names: 2 classes" in printed
    with pytest.raises(SystemExit) as exc:  # the report is not replaced unasked
        run_main("--dataset", "rsitmd", "--data-dir", str(tmp_path), "--describe", str(out))
    assert exc.value.code == 2
    report = run_main("--dataset", "rsitmd", "--data-dir", str(tmp_path), "--describe", str(out), "--overwrite",
                      "--labels", "none", "--split", "duch")
    assert report["labels"] == {"rule": "none (--labels none)", "classes": 0}
    assert report["splits"]["train"] == 8 and any("selected on mR" in w for w in report["warnings"])


def test_select_map_needs_labels():
    from configs.train import TrainConfig
    from utils.train.run_data import selection_metric

    assert selection_metric(TrainConfig(), True) == "map" and selection_metric(TrainConfig(), False) == "mr"
    assert selection_metric(TrainConfig(select="mr"), True) == "mr"
    with pytest.raises(DUCHError, match="--select map needs labels"):
        selection_metric(TrainConfig(select="map"), False)
