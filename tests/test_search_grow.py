"""Index folders beyond the flat build: the multi-index (mih) end to end, indexes of codes files (--codes),
growing (--add), shrinking (--remove) with readers that see the old index or the new one, and a server whose
models load in the background."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import index_rows
from tests.test_search import assert_equals_brute_force, brute_force, run_search
from utils.errors import DUCHError


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def copy_index(tiny_run, tmp_path):
    out = tmp_path / "index"
    shutil.copytree(tiny_run["index"], out)
    return out


def test_mih_index_ranks_as_the_flat_index(tiny_run, tmp_path):
    from utils.search.query import Query, SearchIndex, search

    run_search("index", "--run", tiny_run["run"], "--out", tmp_path / "mih", "--index-type", "mih", "--no-progress")
    manifest = json.loads((tmp_path / "mih" / "manifest.json").read_text())
    assert manifest["index"]["type"] == "mih" and manifest["index"]["captions"]["substrings"] >= 1
    assert (tmp_path / "mih" / "mih_ids_captions.npy").is_file()
    assert not (tmp_path / "mih" / "index_images.faiss").exists()
    mih, flat = SearchIndex.open(tmp_path / "mih"), SearchIndex.open(tiny_run["index"])
    for row in (0, 7, 11):
        for target in ("images", "captions"):
            queries = [Query("row", row=row, modality="image")]
            ours = search(mih, None, queries, target=target, k=60)[0]
            assert ours["results"] == search(flat, None, queries, target=target, k=60)[0]["results"]
            assert_equals_brute_force(ours, np.asarray(mih.codes[target]), 60)
    a_class = mih.metadata["images"][3]["class"]
    for target in ("images", "captions"):  # a filter, with the top k cut after it
        queries = [Query("row", row=5, modality="caption")]
        ours = search(mih, None, queries, target=target, k=20, classes=[a_class], splits=["db", "train"])[0]
        assert ours["results"] and all(r["class"] == a_class for r in ours["results"])
        assert ours["results"] == search(flat, None, queries, target=target, k=20, classes=[a_class],
                                         splits=["db", "train"])[0]["results"]
    text = run_search("query", "--index", tmp_path / "mih", "--text", "a river", "-k", 12, "--quiet")[0]
    assert_equals_brute_force(text, np.asarray(mih.codes["images"]), 12)


def write_codes_file(path, rng, n=40, bits=16):
    labels = rng.integers(0, 3, n)
    db_img = np.where(rng.random((n, bits)) < 0.5, 1, -1).astype(np.int8)
    db_txt = np.where(rng.random((n, bits)) < 0.5, 1, -1).astype(np.int8)
    np.savez(path, db_img=db_img, db_txt=db_txt, db_labels=labels)
    return db_img, db_txt, labels


@pytest.mark.parametrize("index_type", ["flat", "mih"])
def test_codes_file_index_is_searched_by_rows(tmp_path, capsys, index_type):
    from utils.retrieval.codes import pack_codes

    rng = np.random.default_rng(5)
    db_img, db_txt, labels = write_codes_file(tmp_path / "codes.npz", rng)
    out = tmp_path / "codes_index"
    run_search("index", "--codes", tmp_path / "codes.npz", "--out", out, "--index-type", index_type, "--no-progress")
    result = run_search("query", "--index", out, "--row", 3, "--modality", "caption", "-k", 40, "--quiet")[0]
    assert_equals_brute_force(result, pack_codes(db_img), 40)
    assert result["query"]["code"] == pack_codes(db_txt)[3].tobytes().hex()
    only = run_search("query", "--index", out, "--row", 3, "--modality", "image", "--target", "captions", "--class",
                      "2", "-k", 40, "--quiet")[0]
    wanted = np.flatnonzero(labels == 2)
    rows, _ = brute_force(pack_codes(db_txt)[wanted], pack_codes(db_img)[3], 40)
    assert [r["row"] for r in only["results"]] == wanted[rows].tolist()
    for flags, message in ((["--text", "a river"], "no model"), (["--row", "1", "--modality", "image", "--rerank"],
                                                                  "continuous outputs")):
        with pytest.raises(SystemExit):
            run_search("query", "--index", out, *flags, "--quiet")
        assert message in one_line(capsys)
    with pytest.raises(SystemExit):
        run_search("index", "--codes", tmp_path / "codes.npz", "--no-progress")
    assert "needs --out" in one_line(capsys)
    # class codes are a memory-mapped column; multi-hot labels the names of each row's labels
    assert (out / "labels_images.npy").is_file() and not (out / "metadata.sqlite").exists()
    multi = np.zeros((40, 3), np.int8)
    multi[np.arange(40), labels] = 1
    multi[0, 0] = multi[0, 2] = 1
    np.savez(tmp_path / "multi.npz", db_img=db_img, db_txt=db_txt, db_labels=multi)
    run_search("index", "--codes", tmp_path / "multi.npz", "--out", tmp_path / "multi", "--no-progress")
    from utils.search.query import SearchIndex

    multi_index = SearchIndex.open(tmp_path / "multi")
    assert multi_index.metadata["images"][0]["class"] == "0;2" and (tmp_path / "multi" / "metadata.sqlite").is_file()
    # a removed row of a codes index is never returned, in either modality
    run_search("index", "--out", out, "--remove", "3", "--no-progress")
    again = run_search("query", "--index", out, "--row", 0, "--modality", "image", "--target", "captions", "-k", 40,
                       "--quiet")[0]
    assert 3 not in [r["row"] for r in again["results"]] and len(again["results"]) == 39
    from utils.search.server import SearchService

    served = SearchService(out, "cpu")  # the page's description of an index without a model
    try:
        described = served.describe()
        assert described["checkpoint"] is None and described["codes"] == str((tmp_path / "codes.npz").resolve())
        assert not described["encoders"]["text"]["available"] and described["removed"]["images"] == 1
    finally:
        served.close()
    np.savez(tmp_path / "bad.npz", db_img=np.full((4, 8), 3))
    with pytest.raises(SystemExit):
        run_search("index", "--codes", tmp_path / "bad.npz", "--out", tmp_path / "bad", "--no-progress")
    assert "codes must be all ±1 or all 0/1" in one_line(capsys)


def _new_images(tmp_path, tiny_run):
    from PIL import Image

    folder = tmp_path / "arrivals"
    folder.mkdir()
    Image.open(tiny_run["data"] / "images" / "1.png").save(folder / "a.png")
    Image.open(tiny_run["data"] / "images" / "6.png").save(folder / "b.png")
    return folder


def test_add_images_and_captions_then_remove(tiny_run, tmp_path, capsys):
    from utils.search.query import Query, SearchIndex, search

    out = copy_index(tiny_run, tmp_path)
    before = SearchIndex.open(out)  # a reader opened before the changes
    folder = _new_images(tmp_path, tiny_run)
    run_search("index", "--out", out, "--add", "--image-dir", folder, "--no-progress")
    grown = SearchIndex.open(out)
    assert grown.size("images") == 14 and before.size("images") == 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert [len(s) for s in manifest["segments"].values()] == [2, 1] and manifest["counts"]["images"] == 14
    assert grown.metadata["images"][12]["filename"] == "a.png" and grown.metadata["images"][12]["split"] == "new"
    # an added image is encoded as a query of the same file is: its own nearest row, at distance 0
    result = run_search("query", "--index", out, "--image", folder / "b.png", "-k", 14, "--quiet")[0]
    assert_equals_brute_force(result, np.asarray(grown.codes["images"]), 14)
    assert {r["row"] for r in result["results"] if r["distance"] == 0} >= {13}
    assert grown.codes["images"][12].tobytes() == grown.codes["images"][0].tobytes()  # a.png is 1.png
    # adding the same folder again encodes nothing
    run_search("index", "--out", out, "--add", "--image-dir", folder, "--no-progress")
    assert SearchIndex.open(out).size("images") == 14 and "0 images (2 already indexed" in capsys.readouterr().out
    capsys.readouterr()
    lines = "a.png\tthere are green fields next to a river\n1.png\ta red roof près de l'eau\n"
    (tmp_path / "captions.txt").write_text(lines, encoding="utf-8")
    run_search("index", "--out", out, "--add", "--captions", tmp_path / "captions.txt", "--no-progress")
    grown = SearchIndex.open(out)
    assert grown.size("captions") == 62 and grown.metadata["captions"][60]["image_row"] == 12
    assert grown.metadata["captions"][61]["image_row"] == 0
    assert grown.metadata["captions"][61]["caption"] == "a red roof près de l'eau"  # non-ASCII kept as written
    assert grown.metadata["images"][0]["captions"] == index_rows(tiny_run["index"], "images")[0]["captions"]
    text = run_search("query", "--index", out, "--text", "a red roof", "--target", "captions", "-k", 62, "--quiet")[0]
    assert_equals_brute_force(text, np.asarray(grown.codes["captions"]), 62)
    # remove by file name and by row: never returned again, with their captions; row numbers stay
    run_search("index", "--out", out, "--remove", "a.png", "3", "--no-progress")
    shrunk = SearchIndex.open(out)
    gone_images, gone_captions = {12, 3}, {60, 15, 16, 17, 18, 19}
    for target, gone in (("images", gone_images), ("captions", gone_captions)):
        result = search(shrunk, None, [Query("row", row=0, modality="image")], target=target, k=100)[0]
        kept = [r for r in range(shrunk.size(target)) if r not in gone]
        rows, distances = brute_force(np.asarray(shrunk.codes[target])[kept], shrunk.codes["images"][0], 100)
        assert [r["row"] for r in result["results"]] == [kept[i] for i in rows]
        assert [r["distance"] for r in result["results"]] == distances
        filtered = search(shrunk, None, [Query("row", row=0, modality="image")], target=target, k=100,
                          splits=["new", "db", "query", "train"])[0]
        assert not {r["row"] for r in filtered["results"]} & gone
    with pytest.raises(DUCHError, match="was removed"):
        search(shrunk, None, [Query("row", row=12, modality="image")])
    # --compact: one segment per modality, the same answers, removed rows still left out
    queries = [Query("row", row=r, modality=m) for r, m in ((0, "image"), (13, "image"), (61, "caption"))]
    answers = {t: search(shrunk, None, queries, target=t, k=70) for t in ("images", "captions")}
    run_search("index", "--out", out, "--compact", "--no-progress")
    compacted = SearchIndex.open(out)
    assert [len(compacted.segments[t]) for t in ("images", "captions")] == [1, 1]
    assert all(search(compacted, None, queries, target=t, k=70) == answers[t] for t in answers)
    assert compacted.segments["images"][0].record["files"]["codes"] == "codes_images.s2.npy"
    # the reader opened first still answers from the index it opened: all 12 rows, none removed
    old = search(before, None, [Query("row", row=0, modality="image")], k=100)[0]
    assert sorted(r["row"] for r in old["results"]) == list(range(12))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_search("index", "--out", out, "--remove", "nothing.png", "--no-progress")
    assert "not in the index: 'nothing.png'" in one_line(capsys)


def test_additions_after_a_compaction_take_new_file_names(tiny_run, tmp_path):
    """An --add after --compact, then another: each new segment gets files of its own (never those of the
    compacted segment the index still reads), and the index ranks as brute force over every row."""
    from PIL import Image

    from utils.search.query import Query, SearchIndex, search

    out = copy_index(tiny_run, tmp_path)
    folders = []
    for n, source in enumerate((2, 4, 8)):
        folder = tmp_path / f"batch{n}"
        folder.mkdir()
        Image.open(tiny_run["data"] / "images" / f"{source}.png").save(folder / f"n{n}.png")
        folders.append(folder)
    run_search("index", "--out", out, "--add", "--image-dir", folders[0], "--no-progress")
    run_search("index", "--out", out, "--compact", "--no-progress")
    for folder in folders[1:]:
        run_search("index", "--out", out, "--add", "--image-dir", folder, "--no-progress")
    index = SearchIndex.open(out)
    records = index.manifest["segments"]["images"]
    assert [r["number"] for r in records] == [2, 3, 4] and index.size("images") == 15
    assert len({r["files"]["codes"] for r in records}) == 3
    result = search(index, None, [Query("row", row=14, modality="image")], k=15)[0]
    assert_equals_brute_force(result, np.asarray(index.codes["images"]), 15)


def test_interrupted_add_leaves_the_old_index(tiny_run, tmp_path, monkeypatch):
    from utils.search import grow
    from utils.search.query import SearchIndex

    out = copy_index(tiny_run, tmp_path)
    folder = _new_images(tmp_path, tiny_run)
    manifest = (out / "manifest.json").read_bytes()
    real_commit = grow.writer.commit

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grow.writer, "commit", interrupted)
    with pytest.raises(SystemExit):
        run_search("index", "--out", out, "--add", "--image-dir", folder, "--no-progress")
    assert (out / "manifest.json").read_bytes() == manifest  # segment files and metadata rows written, not published
    assert (out / "codes_images.s1.npy").is_file() and SearchIndex.open(out).size("images") == 12
    monkeypatch.setattr(grow.writer, "commit", real_commit)
    run_search("index", "--out", out, "--add", "--image-dir", folder, "--no-progress")  # the rows past 12 replaced
    index = SearchIndex.open(out)
    assert index.size("images") == 14 and [index.metadata["images"][r]["filename"] for r in (12, 13)] == \
        ["a.png", "b.png"]


def test_grow_refusals(tiny_run, tmp_path, capsys):
    out = copy_index(tiny_run, tmp_path)
    for flags, message in ((["--add"], "--add needs --image-dir"),
                           (["--add", "--overwrite", "--image-dir", tmp_path], "without --codes and --overwrite"),
                           (["--captions", tmp_path / "c.txt"], "use it with --add"),
                           (["--compact", "--remove", "1"], "a step of its own"),
                           (["--remove", "99"], "no such image row")):
        with pytest.raises(SystemExit):
            run_search("index", "--out", out, *flags, "--no-progress")
        assert message in one_line(capsys)
    (tmp_path / "c.txt").write_text("1.png a caption without a tab\n")
    with pytest.raises(SystemExit):
        run_search("index", "--out", out, "--add", "--captions", tmp_path / "c.txt", "--no-progress")
    assert "expected IMAGE<TAB>SENTENCE" in one_line(capsys)


def test_server_answers_rows_while_the_models_load(tiny_run):
    from utils.search.api import SearchParams
    from utils.search.query import Query, SearchIndex, search
    from utils.search.server import SearchService

    service = SearchService(tiny_run["index"], "cpu", preload="background")
    try:
        assert service.health()["models"]["state"] in ("loading", "ready", "not loaded")
        assert service.describe()["encoders"]["text"]["available"]  # the page keeps its text box while they load
        answer = service.search(SearchParams(row=4, modality="image", k=5))  # needs no model, waits for none
        index = SearchIndex.open(tiny_run["index"])
        assert answer == search(index, None, [Query("row", row=4, modality="image")], k=5)[0]
        assert service.models_ready.wait(120)
        health = service.health()["models"]
        assert health == {"state": "ready", "text": True, "image": True}
    finally:
        service.close()


def test_server_follows_the_index_as_it_grows(tiny_run, tmp_path, monkeypatch):
    """A running server answers from the index it opened until the manifest is replaced, then from the new
    one (whole: counts, rows and removals together), keeping its models when the run is the same."""
    from utils.search import archive
    from utils.search.api import SearchParams
    from utils.search.server import SearchService

    monkeypatch.setattr(archive, "REFRESH_SECONDS", 0.0)
    out = copy_index(tiny_run, tmp_path)
    service = SearchService(out, "cpu", preload="none")
    try:
        encoder = service.encoder
        assert service.describe()["counts"]["images"] == 12
        run_search("index", "--out", out, "--add", "--image-dir", _new_images(tmp_path, tiny_run), "--no-progress")
        run_search("index", "--out", out, "--remove", "0", "--no-progress")
        described = service.describe()
        assert described["counts"]["images"] == 14 and described["removed"]["images"] == 1
        rows = [r["row"] for r in service.search(SearchParams(row=13, modality="image", k=20))["results"]]
        assert 13 in rows and 0 not in rows and len(rows) == 13
        assert service.encoder is encoder  # the same run: the models stay
    finally:
        service.close()
