"""Bad dataset input through main.py: one line, exit 2, nothing written; and --check-overlap."""
import json
import shutil

import pytest

from configs.datasets import get_dataset
from tests.conftest import run_main
from tests.test_dataset_pipeline import make_dataset
from utils.demo.synthetic import make_synthetic_features


@pytest.fixture
def synthetic(tmp_path):
    """syn.json (Karpathy, 5 captions, class fields, train/val/test split fields) with its feature files."""
    source = tmp_path / "data" / "syn.json"
    source.parent.mkdir()
    source.write_text("{}")
    make_synthetic_features(get_dataset(str(source)), source.parent, n_images=30, n_classes=3, image_dim=8,
                            caption_dim=8)
    augmented = source.parent / "augmented_syn.json"
    data = json.loads(augmented.read_text())
    for j, image in enumerate(data["images"]):
        image["split"] = ("train", "train", "val", "test", "train")[j % 5]
    augmented.write_text(json.dumps(data))
    source.write_text(json.dumps(data))
    return source, data


def fails(capsys, tmp_path, source, *extra):
    with pytest.raises(SystemExit) as exc:
        run_main("--dataset", str(source), "--out-dir", str(tmp_path / "runs"), "--bit", "8", "--epochs", "1", *extra)
    assert exc.value.code == 2
    assert not (tmp_path / "runs").exists()  # nothing written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def rewrite(source, data):
    for path in (source, source.parent / "augmented_syn.json"):
        path.write_text(json.dumps(data))


def test_synthetic_dataset_trains(synthetic, tmp_path):
    source, _ = synthetic
    metrics = run_main("--dataset", str(source), "--out-dir", str(tmp_path / "runs"), "--bit", "8", "--epochs", "1",
                       "--batch-size", "8")
    assert metrics["protocol"]["images"] == {"train": 18, "val": 6, "test": 6, "database": 24}


def test_missing_split_field(synthetic, tmp_path, capsys):
    source, data = synthetic
    del data["images"][7]["split"]
    rewrite(source, data)
    assert "image 7 (8.png) has no 'split' field; --split json needs" in fails(capsys, tmp_path, source)


def test_split_file_naming_unknown_files(synthetic, tmp_path, capsys):
    source, data = synthetic
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"files": {"train": ["1.png", "zz.png"], "query": ["2.png"], "db": ["3.png"]}}))
    line = fails(capsys, tmp_path, source, "--split", "file", str(split))
    assert "files.train names 1 files the dataset does not have (e.g. 'zz.png')" in line


@pytest.mark.parametrize("problem,message", [
    ("duplicate", "duplicate file name '1.png' (images 0 and 1)"),
    # an image without captions is left out: features made with it no longer match the images
    ("no_captions", "rows, but the dataset JSON has 29 images"),
    ("mixed", "mixed layouts"),
])
def test_bad_json(synthetic, tmp_path, capsys, problem, message):
    source, data = synthetic
    if problem == "duplicate":
        data["images"][1]["filename"] = "1.png"
    elif problem == "no_captions":
        data["images"][4]["sentences"] = []
    else:
        data["images"][2] = {"filename": "3.png", "raw": "a caption", "split": "train"}
    rewrite(source, data)
    assert message in fails(capsys, tmp_path, source)


def test_labels_csv_with_unknown_files(synthetic, tmp_path, capsys):
    source, data = synthetic
    for image in data["images"]:
        del image["classcode"], image["classname"]
    rewrite(source, data)
    csv = tmp_path / "labels.csv"
    csv.write_text("1.png,a\nnot_there.png,b\n")
    line = fails(capsys, tmp_path, source, "--labels", str(csv))
    assert "line 2 names 'not_there.png', which is not an image" in line


def test_bad_split_flag(synthetic, tmp_path, capsys):
    source, _ = synthetic
    assert "--split file needs the path of a split.json" in fails(capsys, tmp_path, source, "--split", "file")
    assert "--split random: choose duch, json or file PATH" in fails(capsys, tmp_path, source, "--split", "random")


def test_check_overlap_counts_shared_test_images(tmp_path, capsys):
    mine, _ = make_dataset(tmp_path / "mine", "fields")
    theirs, _ = make_dataset(tmp_path / "theirs", "nwpu")
    their_files = sorted((tmp_path / "theirs" / "images").rglob("*.png"))
    for k, path in enumerate(their_files):  # every picture of theirs differs from mine ...
        path.write_bytes(b"other picture %d" % k)
    tests = [im["filename"] for im in json.loads(mine.read_text())["images"] if im["split"] == "test"]
    for k in range(2):  # ... but two of mine's test images, renamed
        target = tmp_path / "theirs" / "images" / "sea" / f"sea_00{k + 1}.png"
        shutil.copy(tmp_path / "mine" / "images" / tests[k], target)
    report = run_main("--dataset", str(mine), "--check-overlap", str(theirs))
    assert report["test_images"] == 4 and report["other_images"] == 24 and report["shared"] == 2
    assert report["examples"] == [[tests[0], "sea_001.png"], [tests[1], "sea_002.png"]]
    assert "fields: 2 of its 4 test images also occur in nwpu (same file content)" in capsys.readouterr().out


def test_check_overlap_self_finds_a_test_image_copied_into_train(tmp_path, capsys):
    """One picture under two names, in test and in train: names cannot show it, content does."""
    mine, _ = make_dataset(tmp_path / "mine", "fields")
    images = json.loads(mine.read_text())["images"]
    tests = [im["filename"] for im in images if im["split"] == "test"]
    train = [im["filename"] for im in images if im["split"] == "train"]
    report = run_main("--dataset", str(mine), "--check-overlap", "self")
    assert report["shared"] == 0 and report["other_images"] == 20  # 16 train + 4 val images
    shutil.copy(tmp_path / "mine" / "images" / tests[1], tmp_path / "mine" / "images" / train[3])
    report = run_main("--dataset", str(mine), "--check-overlap", "self")
    assert report["shared"] == 1 and report["examples"] == [[tests[1], train[3]]]
    assert "fields: 1 of its 4 test images also occur in fields train and val" in capsys.readouterr().out
