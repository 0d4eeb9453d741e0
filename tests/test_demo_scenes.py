"""The synthetic demo dataset: deterministic, docs/formats.md structure, balanced, labelled synthetic."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from configs.datasets import DATASETS
from utils.data.dataset_json import load_dataset_json
from utils.data.labels import image_labels
from utils.demo.scenes import CLASS_NAMES, make_demo_dataset
from utils.errors import DUCHError

PER_CLASS = 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), images_per_class=PER_CLASS, seed=0)


def test_structure(demo):
    data = load_dataset_json(demo / "DEMO.json")  # validates 5 captions per image
    n = PER_CLASS * DATASETS["demo"].num_classes
    assert data["dataset"] == "DEMO" and data["synthetic"] is True and "SYNTHETIC" in data["description"]
    assert data["num_classes"] == DATASETS["demo"].num_classes == len(CLASS_NAMES)
    assert data["classes"] == {str(k): name for k, name in enumerate(CLASS_NAMES)}
    images = data["images"]
    assert [im["filename"] for im in images] == [f"{k}.png" for k in range(1, n + 1)]
    assert [im["imgid"] for im in images] == list(range(n))
    sentid = 0
    for im in images:
        assert data["classes"][str(im["classcode"])] == im["classname"]
        assert im["split"] in {"train", "val", "test"}
        assert im["sentids"] == list(range(sentid, sentid + 5))
        assert [s["sentid"] for s in im["sentences"]] == im["sentids"]
        assert all(s["imgid"] == im["imgid"] for s in im["sentences"])
        raws = [s["raw"] for s in im["sentences"]]
        assert len(set(raws)) == 5 and all(r.endswith(" .") and "{" not in r for r in raws)
        sentid += 5
    assert Counter(image_labels(data).tolist()) == {k: PER_CLASS for k in range(len(CLASS_NAMES))}


def test_images(demo):
    pixels = [np.asarray(Image.open(demo / "images" / f"{k}.png")) for k in range(1, PER_CLASS * 6 + 1)]
    assert all(p.shape == (256, 256, 3) and p.dtype == np.uint8 for p in pixels)
    assert not np.array_equal(pixels[0], pixels[1])  # variety within a class
    # classes look different: mean colours of a forest and a beach are far apart
    forest = pixels[CLASS_NAMES.index("forest") * PER_CLASS].reshape(-1, 3).mean(0)
    beach = pixels[CLASS_NAMES.index("beach") * PER_CLASS].reshape(-1, 3).mean(0)
    assert np.abs(forest - beach).max() > 40


def test_deterministic_and_seeded(demo, tmp_path):
    again = make_demo_dataset(tmp_path / "again", images_per_class=PER_CLASS, seed=0)
    assert (again / "DEMO.json").read_bytes() == (demo / "DEMO.json").read_bytes()
    for k in range(1, PER_CLASS * 6 + 1):
        a = np.asarray(Image.open(demo / "images" / f"{k}.png"))
        b = np.asarray(Image.open(again / "images" / f"{k}.png"))
        np.testing.assert_array_equal(a, b)
    other = make_demo_dataset(tmp_path / "other", images_per_class=1, seed=1)
    first = np.asarray(Image.open(other / "images" / "1.png"))
    assert not np.array_equal(first, np.asarray(Image.open(demo / "images" / "1.png")))
    assert json.loads((other / "DEMO.json").read_text())["seed"] == 1


def test_refuses_overwrite(demo):
    with pytest.raises(DUCHError, match="--overwrite"):
        make_demo_dataset(demo, images_per_class=PER_CLASS)
    with pytest.raises(DUCHError):
        make_demo_dataset(demo / "x", images_per_class=0)
