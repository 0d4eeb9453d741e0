"""Fuzz: random bytes and random small JSON shapes thrown at the dataset JSON reader and the codes readers (codes
.npz of evaluate.py, an index's codes .npy). Each input ends in success or a DUCHError (one clean line), never
another exception. Seeded and bounded: the same few hundred cases every run, in a few seconds."""
import json
import zipfile

import numpy as np
import pytest

from utils.errors import DUCHError

KEYS = ["images", "filename", "sentences", "raw", "classcode", "classname", "num_classes", "classes", "x"]
CODE_KEYS = ["q", "db", "q_labels", "db_labels", "q_img", "q_txt", "db_img", "db_txt", "other"]


def random_json(rng, depth=0):
    kind = rng.integers(0, 9 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(0, 2))
    if kind == 2:
        return int(rng.choice([0, 1, 5, -1, 2 ** 40, 4]))
    if kind == 3:
        return float(rng.choice([0.5, -1e308, 1e308, 3.0]))
    if kind == 4:
        return str(rng.choice(["", "a.png", "../x.png", "/etc/passwd", "a river\x1b[2J", "x" * 50, "é", "5"]))
    if kind in (5, 6):
        return [random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 6)))]
    return {str(rng.choice(KEYS)): random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))}


def plausible_dataset(rng):
    """Near-valid dataset JSON with one random thing changed: reaches deeper code than pure noise."""
    images = [{"filename": f"img_{j}.png", "classcode": j % 3,
               "sentences": [{"raw": f"caption {j} {i}"} for i in range(5)]}
              for j in range(int(rng.integers(1, 5)))]
    data = {"images": images, "num_classes": 3}
    target = images[int(rng.integers(0, len(images)))]
    where = rng.integers(0, 4)
    if where == 0:
        target[str(rng.choice(KEYS))] = random_json(rng, 2)
    elif where == 1:
        target["sentences"][int(rng.integers(0, 5))] = random_json(rng, 2)
    elif where == 2:
        target["sentences"][int(rng.integers(0, 5))]["raw"] = random_json(rng, 3)
    else:
        data[str(rng.choice(KEYS))] = random_json(rng, 2)
    return data


def read_dataset(path):
    from configs.datasets import get_dataset
    from utils.data.dataset_json import captions, load_dataset_json
    from utils.data.labels import resolve_labels

    data = load_dataset_json(path)
    resolve_labels(data, get_dataset("rsicd"), path)
    captions(data)


def test_fuzz_dataset_json_reader(tmp_path):
    rng = np.random.default_rng(18)
    path = tmp_path / "dataset.json"
    outcomes = {"ok": 0, "refused": 0}
    for case in range(400):
        if case % 4 == 0:
            path.write_bytes(rng.bytes(int(rng.integers(0, 200))))
        elif case % 4 == 1:
            path.write_text(json.dumps(random_json(rng)))
        else:
            text = json.dumps(plausible_dataset(rng))
            if case % 8 == 3:
                text = text[: int(rng.integers(0, len(text)))]  # truncated
            path.write_text(text)
        try:
            read_dataset(path)
            outcomes["ok"] += 1
        except DUCHError as err:
            assert "\n" not in str(err), str(err)
            outcomes["refused"] += 1
    assert outcomes["ok"] > 10 and outcomes["refused"] > 100, outcomes


def random_array(rng):
    kind = rng.integers(0, 7)
    shape = tuple(int(s) for s in rng.integers(0, 6, size=int(rng.integers(0, 4))))
    if kind == 0:
        return np.where(rng.random(shape) > 0.5, 1, -1).astype(rng.choice([np.int8, np.int64, np.float32]))
    if kind == 1:
        return rng.integers(0, 256, size=shape).astype(np.uint8)
    if kind == 2:
        return rng.normal(size=shape)
    if kind == 3:
        return np.array(["a", "b"])
    if kind == 4:
        return np.array([np.nan, np.inf])
    if kind == 5:
        return rng.integers(-3, 4, size=shape)
    return np.array(True)


def plausible_codes(rng):
    n_q, n_db, bits = int(rng.integers(0, 5)), int(rng.integers(0, 9)), int(rng.integers(1, 20))
    arrays = {"q": np.where(rng.random((n_q, bits)) > 0.5, 1, -1),
              "db": np.where(rng.random((n_db, bits)) > 0.5, 1, -1),
              "q_labels": rng.integers(0, 3, n_q), "db_labels": rng.integers(0, 3, n_db)}
    for _ in range(int(rng.integers(0, 3))):
        arrays[str(rng.choice(CODE_KEYS))] = random_array(rng)
    return arrays


def test_fuzz_codes_readers(tmp_path):
    from utils.io import read_npy
    from utils.retrieval.evaluation import evaluate_file

    rng = np.random.default_rng(1818)
    path = tmp_path / "codes.npz"
    outcomes = {"ok": 0, "refused": 0}
    for case in range(300):
        kind = case % 5
        if kind == 0:
            path.write_bytes(rng.bytes(int(rng.integers(0, 300))))
        elif kind == 1:  # a zip of random members
            with zipfile.ZipFile(path, "w") as z:
                for _ in range(int(rng.integers(0, 4))):
                    z.writestr(f"{rng.choice(CODE_KEYS)}.npy", rng.bytes(int(rng.integers(0, 200))))
        else:
            np.savez(path, **plausible_codes(rng))
            if kind == 4:
                data = path.read_bytes()
                path.write_bytes(data[: int(rng.integers(0, len(data)))])
        try:
            evaluate_file(path, map_ks=(int(rng.integers(1, 30)),), with_curves=bool(case % 2))
            outcomes["ok"] += 1
        except DUCHError as err:
            assert "\n" not in str(err), str(err)
            outcomes["refused"] += 1
    assert outcomes["ok"] > 10 and outcomes["refused"] > 100, outcomes

    npy = tmp_path / "codes.npy"
    for case in range(150):
        if case % 3 == 0:
            npy.write_bytes(b"\x93NUMPY" + rng.bytes(int(rng.integers(0, 120))))
        else:
            np.save(npy, random_array(rng))
            if case % 3 == 2:
                data = npy.read_bytes()
                npy.write_bytes(data[: int(rng.integers(0, len(data)))])
        try:
            read_npy(npy, "index codes")
        except DUCHError as err:
            assert "\n" not in str(err)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe", b"[]", b"{}", b'{"images": {}}', b"null", b'"x"'])
def test_small_edge_cases_of_the_dataset_reader(tmp_path, content):
    path = tmp_path / "d.json"
    path.write_bytes(content)
    with pytest.raises(DUCHError):
        read_dataset(path)
