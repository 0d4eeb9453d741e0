"""The split and the caption rows, and the tensors a run trains and evaluates on (docs/method.md).

The expectations re-derive the original release's random calls, written out here from docs/method.md, and read
the feature files with h5py and standardise them here, independently of utils/data/splits.py and
utils/data/features.py.
"""
import json
import random

import h5py
import numpy as np
import pytest
import torch

from configs.datasets import get_dataset
from configs.train import TrainConfig
from utils.data.splits import choose_captions, make_split, split_indices
from utils.demo.synthetic import make_synthetic_features


def original_split(n, seed=42):
    """docs/method.md: random.seed(42); train = sorted(sample(range(N), int(0.5 N))); rest sorted;
    query = sorted(sample(rest, int(0.2 |rest|))); db = rest - query; then for each of the three
    sets, re-seeded with 42, one random.sample(range(5), 1) per image in order picks row 5 j + i."""
    random.seed(seed)
    train = sorted(random.sample(range(n), int(0.5 * n)))
    rest = sorted(set(range(n)) - set(train))
    query = sorted(random.sample(rest, int(0.2 * len(rest))))
    db = sorted(set(rest) - set(query))
    rows = []
    for images in (train, query, db):
        random.seed(seed)
        rows.append([5 * j + random.sample(range(5), 1)[0] for j in images])
    return train, query, db, *rows


@pytest.mark.parametrize("n,seed", [(2100, 42), (10921, 42), (37, 42), (2100, 7)])  # UCM, RSICD, a small odd one
def test_split_and_caption_rows_follow_the_original_random_calls(n, seed):
    train, query, db, train_rows, query_rows, db_rows = original_split(n, seed)
    s = make_split(n, seed)  # another seed must reach all four draws
    assert (s.train, s.query, s.db) == (train, query, db)
    assert s.train_captions == train_rows
    assert s.query_captions == query_rows
    assert s.db_captions == db_rows


def test_split_sizes_and_disjointness_ucm():
    s = make_split(2100, 42)
    assert (len(s.train), len(s.query), len(s.db)) == (1050, 210, 840)
    assert sorted(s.train + s.query + s.db) == list(range(2100))
    for images, rows in ((s.train, s.train_captions), (s.query, s.query_captions), (s.db, s.db_captions)):
        assert all(5 * j <= r < 5 * j + 5 for j, r in zip(images, rows))


def test_the_default_seed_is_the_originals_42():
    assert make_split(37) == make_split(37, 42) != make_split(37, 43)
    train, query, db, *rows = original_split(37)
    assert (split_indices(37), choose_captions(train)) == ((train, query, db), rows[0])


def test_the_seed_matters():
    a, b = make_split(300, 42), make_split(300, 7)
    assert a.train != b.train and a.train_captions != b.train_captions


# ---- the tensors of a run ----------------------------------------------------------------------------
N_IMAGES, IMAGE_DIM, CAPTION_DIM = 60, 12, 20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("split_features")
    make_synthetic_features(get_dataset("demo"), d, n_images=N_IMAGES, n_classes=5, image_dim=IMAGE_DIM,
                            caption_dim=CAPTION_DIM, seed=3, image_sets=("aug_center", "aug_random"),
                            caption_keys=("aug_rb", "aug_bt_prob"))
    return d


def standardised(path, key):
    """docs/method.md: one scalar mean and one scalar population (ddof 0) std over the whole array."""
    with h5py.File(path, "r") as f:
        x = f[key][()].astype(np.float64)
    return (x - x.sum() / x.size) / np.sqrt(((x - x.mean()) ** 2).sum() / x.size)


def assert_rows(tensor, expected):
    assert tensor.shape == expected.shape
    np.testing.assert_allclose(tensor.cpu().numpy(), expected, rtol=0, atol=5e-6)


@pytest.mark.parametrize("preset,image_aug,caption_aug,original_quirks", [
    ("default", "image_emb_DEMO_aug_aug_center.h5", "caption_emb_DEMO_aug_rb.h5", False),
    ("txt_aug_bt_prob", "image_emb_DEMO_aug_aug_center.h5", "caption_emb_DEMO_aug_bt_prob.h5", False),
    ("img_aug_random", "image_emb_DEMO_aug_aug_random.h5", "caption_emb_DEMO_aug_rb.h5", False),
    ("default", "image_emb_DEMO_aug_aug_center.h5", "caption_emb_DEMO_aug.h5", True),  # QUIRK: txt2 = txt1
])
def test_run_tensors_are_the_standardised_rows_of_the_split(data_dir, preset, image_aug, caption_aug, original_quirks):
    from utils.train.run_data import RunData

    cfg = TrainConfig(dataset="demo", data_dir=str(data_dir), preset=preset, bit=8, original_quirks=original_quirks)
    data = RunData(cfg, torch.device("cpu"))
    image = standardised(data_dir / "image_emb_DEMO_aug_center_crop_only.h5", "image_emb")
    caption = standardised(data_dir / "caption_emb_DEMO_aug.h5", "caption_emb")
    image2 = standardised(data_dir / image_aug, "image_emb")
    caption2 = standardised(data_dir / caption_aug, "caption_emb")
    labels = np.array([im["classcode"] for im in json.loads((data_dir / "augmented_DEMO.json").read_text())["images"]])
    train, query, db, train_rows, query_rows, db_rows = original_split(N_IMAGES)

    views = data.train_views
    assert_rows(views["i1"], image[train])
    assert_rows(views["i2"], image2[train])
    assert_rows(views["t1"], caption[train_rows])
    assert_rows(views["t2"], caption2[train_rows])
    for evalset, images, rows in ((data.query, query, query_rows), (data.db, db, db_rows)):
        assert_rows(evalset.image, image[images])
        assert_rows(evalset.caption, caption[rows])
        assert evalset.labels.tolist() == labels[images].tolist()
