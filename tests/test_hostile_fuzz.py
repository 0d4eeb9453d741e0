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


# ------------------------------------------------------------------------------ split files, labels CSVs, manifests,
# HTTP parameters


def _outcome(call, outcomes):
    try:
        call()
        outcomes["ok"] += 1
    except DUCHError as err:
        assert "\n" not in str(err), str(err)
        outcomes["refused"] += 1


def _names(rng, n=12):
    pool = [f"{k}.png" for k in range(n)] + ["./1.png", "x.png", "", "../2.png", "é.png", "1.PNG"]
    return [str(rng.choice(pool)) for _ in range(int(rng.integers(0, 8)))]


def test_fuzz_split_files_and_labels_csvs(tmp_path):
    """Split files (a run's split.json and folders of file lists) and labels CSVs, near-valid and random:
    success or one DUCHError line."""
    from utils.data.labels import read_labels_csv
    from utils.data.splits import resolve_split

    rng = np.random.default_rng(26)
    images = [{"filename": f"{k}.png", "sentences": [{"raw": "x"}] * 3} for k in range(12)]
    filenames = [im["filename"] for im in images]
    offsets = np.arange(13) * 3
    outcomes = {"ok": 0, "refused": 0}
    split_json, lists, csv = tmp_path / "split.json", tmp_path / "lists", tmp_path / "labels.csv"
    lists.mkdir()
    for case in range(300):
        kind = case % 3
        if kind == 0:
            files = {p: _names(rng) for p in ("train", "val", "query", "db") if rng.random() > 0.2}
            if rng.random() < 0.4:  # a valid split, sometimes with a random val part
                files = {"train": filenames[:6], "query": filenames[6:8], "db": filenames[8:],
                         **({"val": files["val"]} if "val" in files and rng.random() < 0.5 else {})}
            doc = {"files": files} if rng.random() > 0.1 else random_json(rng)
            if rng.random() < 0.3:
                doc = dict(doc or {}, caption_index={p: [random_json(rng, 3) for _ in v] for p, v in files.items()})
            split_json.write_text(json.dumps(doc))
            _outcome(lambda: resolve_split("file", images, offsets, 42, split_json), outcomes)
        elif kind == 1:
            for part in ("train", "val", "test"):
                path = lists / f"{part}_filename.txt"
                path.unlink(missing_ok=True)
                if rng.random() > 0.2:
                    valid = {"train": filenames[:6], "val": filenames[6:8], "test": filenames[8:]}[part]
                    names = _names(rng) if rng.random() < 0.3 else valid
                    path.write_bytes("\n".join(names).encode() if rng.random() > 0.1 else rng.bytes(30))
            _outcome(lambda: resolve_split("file", images, offsets, 42, lists), outcomes)
        else:
            rows = [f"{n},{rng.choice(['a', 'b;c', '', ' '])}" for n in _names(rng, 12)]
            if rng.random() < 0.5:
                rows = [f"{n},{'ab'[k % 2]}" for k, n in enumerate(filenames)] + rows[:1]
            csv.write_bytes(("\n".join(rows)).encode() if rng.random() > 0.15 else rng.bytes(40))
            _outcome(lambda: read_labels_csv(csv, filenames), outcomes)
    assert outcomes["ok"] > 20 and outcomes["refused"] > 100, outcomes


def test_fuzz_index_manifests(tiny_run, tmp_path):
    """An index manifest with one field replaced by random JSON, its digests remade (so that the readers, not
    the digest check, meet it): opening and querying a row is a success or one DUCHError line."""
    import shutil

    from utils.search.query import Query, QueryEncoder, SearchIndex, search
    from utils.search.writer import file_digests

    rng = np.random.default_rng(27)
    original = json.loads((tiny_run["index"] / "manifest.json").read_text())
    outcomes = {"ok": 0, "refused": 0}
    index = tmp_path / "index"
    shutil.copytree(tiny_run["index"], index)
    fields = ["bit", "format", "segments", "checkpoint", "run", "dataset", "index", "counts", "image_dir", "encoders",
              "metadata", "removed", "added", "source"]
    for case in range(60):
        manifest = json.loads(json.dumps(original))
        key = fields[case % len(fields)]
        manifest[key] = random_json(rng, 2) if rng.random() > 0.2 else {"x": random_json(rng, 3)}
        manifest["digests"] = file_digests(index, list(original["digests"]))
        (index / "manifest.json").write_text(json.dumps(manifest))

        def open_and_query():
            opened = SearchIndex.open(index, verify_checkpoint=key != "checkpoint" or rng.random() < 0.5)
            search(opened, QueryEncoder(opened, "cpu"), [Query("row", row=0, modality="image")], k=3)

        _outcome(open_and_query, outcomes)
    assert outcomes["refused"] > 20, outcomes


def test_fuzz_http_parameters():
    """Random query strings for the search endpoint: parsed parameters or one RequestError line."""
    from utils.search.api import RequestError, parse_search_params

    rng = np.random.default_rng(28)
    names = ["text", "row", "modality", "target", "k", "rerank", "shortlist", "nprobe", "class", "split", "path", ""]
    values = ["", "0", "-1", "1", "5", "1000", "1001", str(2 ** 63), "1e3", "nan", "images", "captions", "caption",
              "true", "a river", " ", "\x00", "é", "9" * 40]
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(500):
        items = [(str(rng.choice(names)), str(rng.choice(values))) for _ in range(int(rng.integers(0, 6)))]
        if rng.random() < 0.5:
            items.append(("text", "a river"))
        try:
            parse_search_params(items, image=bool(rng.random() < 0.2))
            outcomes["ok"] += 1
        except RequestError as err:
            assert "\n" not in str(err) and 400 <= err.status < 500, str(err)
            outcomes["refused"] += 1
    assert outcomes["ok"] > 20 and outcomes["refused"] > 200, outcomes
