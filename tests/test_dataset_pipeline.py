"""Each JSON layout and label rule end to end: images_augment -> captions_embed -> main.py -> --test -> search.py.

Small datasets written here (24 images of 4 colour classes): Karpathy with class fields, Karpathy with class
prefixes in file names, ragged captions and nested folders, NWPU-Captions with class folders, a labels CSV,
and none; ResNet18 with random weights and the tiny BERT of tests/tiny_bert.py.
"""
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_main
from tests.test_search import run_search

CLASSES = ("farm", "bare_land", "sea", "port")
COLOURS = ((40, 160, 40), (170, 140, 90), (20, 60, 200), (120, 120, 120))
WORDS = ("green field", "bare land", "blue sea", "grey port")
PER_CLASS = 6
SPLIT_OF = ("train", "train", "train", "train", "val", "test")


def _image(path, c, i):
    rng = np.random.default_rng(100 * c + i)
    pixels = np.clip(np.asarray(COLOURS[c]) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _captions(c, i, count):
    return [f"there is a {WORDS[c]} number {m} here" for m in range(count)]


def make_folder_dataset(root, kind):
    """The same images as published caption lists (``precomp``: train names one per caption line, val and
    test one per image, a blank caption line, a blank line at the end) or records files (``records``: one
    record per caption in train, caption lists in val and test, image paths under part folders)."""
    root.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[tuple[str, list[str]]]] = {}
    for c, cls in enumerate(CLASSES):
        for i in range(PER_CLASS):
            name, split = f"{cls}_{i + 1}.png", SPLIT_OF[i]
            _image(root / "images" / (split if kind == "records" else "") / name, c, i)
            parts.setdefault(split, []).append((name, _captions(c, i, 5)))
    parts["test"][0][1][2] = "   "  # a blank caption, as the published RSITMD lines hold
    for part, images in parts.items():
        if kind == "precomp":
            caps = [t for _, texts in images for t in texts]
            names = [n for n, texts in images for _ in texts] if part == "train" else [n for n, _ in images]
            (root / f"{part}_caps.txt").write_text("\n".join(caps) + "\n")
            (root / f"{part}_filename.txt").write_text("\n".join(names) + "\n\n")
        else:
            records = ([{"image": f"{part}/{n}", "caption": t, "image_id": k} for k, (n, texts) in enumerate(images)
                        for t in texts] if part == "train" else
                       [{"image": f"{part}/{n}", "caption": texts} for n, texts in images])
            (root / f"rs_{part}.json").write_text(json.dumps(records))
    return root, []


def make_dataset(root, kind):
    """(JSON path, extra main.py flags) of a dataset of one kind; images under root/images."""
    if kind in ("precomp", "records"):
        return make_folder_dataset(root.parent / kind, kind)
    root.mkdir(parents=True, exist_ok=True)
    images, nwpu, csv_rows = [], {}, []
    for c, cls in enumerate(CLASSES):
        for i in range(PER_CLASS):
            j = c * PER_CLASS + i
            count = 1 + (j % 4) if kind in ("prefix", "nwpu") else 5  # ragged: 1 to 4 captions
            split = SPLIT_OF[i]
            if kind == "nwpu":
                name = f"{cls}_{i + 1:03d}.png"
                _image(root / "images" / cls / name, c, i)
                texts = _captions(c, i, count)
                entry = {"filename": name, "split": split, "raw": texts[0]}
                entry.update({f"raw_{m}": t for m, t in enumerate(texts) if m})
                nwpu.setdefault(cls, []).append(entry)
                continue
            name = f"{cls}_{i + 1}.png" if kind == "prefix" else f"{j + 1}.png"
            folder = root / "images" / (f"part{j % 2}" if kind == "prefix" else "")  # nested folders
            _image(folder / name, c, i)
            image = {"filename": name, "split": split, "sentences": [{"raw": t} for t in _captions(c, i, count)]}
            if kind == "fields":
                image.update(classcode=c, classname=cls)
            images.append(image)
            csv_rows.append(f"{name},{cls}" + (";coast" if cls in ("sea", "port") else ""))
    path = root / f"{kind}.json"
    path.write_text(json.dumps(nwpu if kind == "nwpu" else {"images": images}))
    extra = []
    if kind == "csv":
        (root / "labels.csv").write_text("filename,label\n" + "\n".join(csv_rows) + "\n")
        extra = ["--labels", str(root / "labels.csv"), "--split", "duch"]
    return path, extra


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from tests.tiny_bert import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def preprocess(json_path, bert):
    import captions_embed
    import images_augment

    common = ["--dataset", str(json_path), "--device", "cpu", "--no-progress"]
    with pytest.warns(UserWarning, match="RANDOM"):
        images_augment.main(images_augment.get_args_parser().parse_args(
            [*common, "--img-aug", "center_crop_only", "--crop-size", "32", "32", "--weights", "none",
             "--num-workers", "0"]))
    captions_embed.main(captions_embed.get_args_parser().parse_args([*common, "--model", str(bert)]))


@pytest.mark.parametrize("kind", ["fields", "prefix", "nwpu", "csv", "none", "precomp", "records"])
def test_layout_end_to_end(kind, tmp_path, bert, capsys):
    json_path, extra = make_dataset(tmp_path / "data", kind)
    preprocess(json_path, bert)
    # 1+2+3+4 per 4 images: 60 for the ragged ones; one blank caption left out of the folder layouts
    n_captions = {"prefix": 60, "nwpu": 60, "precomp": 119, "records": 119}.get(kind, 120)
    import h5py

    data_dir = json_path if json_path.is_dir() else tmp_path / "data"
    with h5py.File(data_dir / f"caption_emb_{kind}_aug.h5") as f:
        assert f["caption_emb"].shape[0] == n_captions
    flags = ["--dataset", str(json_path), "--preset", "no_aug", "--out-dir", str(tmp_path / "runs"), "--bit", "16",
             "--epochs", "2", "--batch-size", "8", "--valid-freq", "1", *extra]
    metrics = run_main(*flags)
    run_dir = tmp_path / "runs" / f"{kind}_16_test_no_aug"
    protocol = metrics["protocol"]
    assert protocol["split"] == ("duch" if kind == "csv" else "json")
    rules = {"fields": "classcode", "prefix": "file names", "nwpu": "classname", "csv": "labels CSV", "none": "none",
             "precomp": "file names", "records": "file names"}
    assert protocol["labels"] == rules[kind]
    assert protocol["dropped"] == {"blank_captions": int(json_path.is_dir()), "images_without_captions": 0}
    assert protocol["selection_metric"] == ("mr" if kind == "none" else "map")
    recall = metrics["recall"]
    for form in ("index", "tie_aware"):
        assert set(recall[form]) == {"i2t", "t2i", "mr"} and set(recall[form]["i2t"]) == {"r@1", "r@5", "r@10"}
        assert 0 <= recall[form]["mr"] <= 100
    assert ("map@20" in metrics) == (kind != "none") and (metrics.get("class_level") == "skipped") == (kind == "none")
    split = json.loads((run_dir / "split.json").read_text())
    if kind != "csv":  # the JSON's parts: test = the 4 images marked test, validation on the val images
        assert [len(split["files"][part]) for part in ("query", "val", "train")] == [4, 4, 16]
        assert recall["n_images"] == 4
    # the codes file carries the caption-to-image rows: evaluate.py recomputes the same recall
    codes = np.load(run_dir / "codes.npz")
    assert codes["test_txt"].shape[0] == len(codes["test_txt_image"]) == recall["n_captions"]
    import evaluate

    again = evaluate.main(evaluate.get_args_parser().parse_args(["--codes", str(run_dir / "codes.npz")]))
    assert again["recall"] == recall
    tested = run_main(*flags, "--test")
    assert tested["recall"] == recall
    out = capsys.readouterr()
    assert "I->T tie-aware" in out.out + out.err
    # the portable split trains the same parts again
    again_flags = [f for f in flags if f not in extra]
    moved = run_main(*again_flags, "--tag", "shared", "--split", "file", str(run_dir / "split.json"),
                     *(["--labels", extra[1]] if kind == "csv" else []))
    shared = json.loads((tmp_path / "runs" / f"{kind}_16_shared_no_aug" / "split.json").read_text())
    assert shared["files"] == split["files"] and shared["caption_index"] == split["caption_index"]
    assert moved["protocol"]["split"] == "file"
    run_search("index", "--run", run_dir, "--no-progress")
    found = run_search("query", "--index", run_dir / "index", "--text", "a blue sea", "--target", "captions", "-k", 5,
                       "--quiet")
    assert len(found[0]["results"]) == 5 and all(r["caption"] for r in found[0]["results"])


def test_baseline_without_labels_selects_on_recall(tmp_path, bert):
    """A baseline validates as DUCH does: without labels, on the val images' instance-level recall."""
    json_path, extra = make_dataset(tmp_path / "data", "none")
    preprocess(json_path, bert)
    flags = ["--dataset", str(json_path), "--preset", "no_aug", "--out-dir", str(tmp_path / "runs"), "--bit", "16",
             "--method", "djsrh", "--epochs", "2", "--batch-size", "8", "--valid-freq", "1", *extra]
    metrics = run_main(*flags)
    assert "map@20" not in metrics and 0 <= metrics["recall"]["tie_aware"]["mr"] <= 100
    history = [json.loads(line) for line in
               (tmp_path / "runs" / "djsrh_none_16_test_no_aug" / "history.jsonl").read_text().splitlines()]
    assert [set(r["valid"]) for r in history] == [{"recall"}, {"recall"}]
