"""search.py end to end on a tiny trained run: index files, text / image / row queries against brute force,
the caption embedding, re-ranking, the results page, --queries, resumable --image-dir and bad input."""
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest

from utils.retrieval.codes import pack_codes, unpack_codes

BIT = 8  # few bits: many equal distances, so the tie order is exercised
ROOT = Path(__file__).resolve().parents[1]


def run_search(*argv):
    import search

    return search.main(search.get_args_parser().parse_args([str(a) for a in argv]))


def load_index(tiny_run):
    from utils.search.query import SearchIndex

    return SearchIndex.open(tiny_run["index"])


def brute_force(codes: np.ndarray, query_code: np.ndarray, k: int):
    """Hamming distance to every stored code, ranked by (distance, row)."""
    distances = np.bitwise_count(codes ^ query_code[None, :]).sum(axis=1)
    order = np.lexsort((np.arange(len(codes)), distances))[:k]
    return order.tolist(), distances[order].tolist()


def assert_equals_brute_force(result, codes, k):
    query_code = np.frombuffer(bytes.fromhex(result["query"]["code"]), dtype=np.uint8)
    rows, distances = brute_force(codes, query_code, k)
    assert [r["row"] for r in result["results"]] == rows
    assert [r["distance"] for r in result["results"]] == distances
    assert [r["rank"] for r in result["results"]] == list(range(1, len(rows) + 1))


def test_index_files_and_manifest(tiny_run):
    index_dir, run_dir = tiny_run["index"], tiny_run["run"]
    manifest = json.loads((index_dir / "manifest.json").read_text())
    n = 12
    assert manifest["bit"] == BIT and manifest["counts"] == {"images": n, "dataset_images": n, "new_images": 0,
                                                             "captions": 5 * n}
    assert not list(index_dir.glob("*.jsonl"))
    assert manifest["checkpoint"]["path"].endswith("checkpoint_best.pt") and len(manifest["checkpoint"]["sha256"]) == 64
    # the same 1-based epoch the run's own test reports for that checkpoint
    assert manifest["checkpoint"]["epoch"] == json.loads((run_dir / "metrics.json").read_text())["model"]["epoch"]
    assert manifest["encoders"]["text"]["model"] == str(tiny_run["bert"])
    assert manifest["encoders"]["image"]["weights"] == "none"
    assert manifest["features"]["caption"]["provenance"]["hidden_states"] == 4 and "faiss" in manifest["versions"]
    assert manifest["run"]["config"]["preset"] == "no_aug"
    assert manifest["index"]["images"]["faiss_class"] == "IndexBinaryFlat"
    codes = np.load(index_dir / "codes_images.npy")
    assert codes.dtype == np.uint8 and codes.shape == (n, 1)
    assert np.load(index_dir / "codes_captions.npy").shape == (5 * n, 1)
    outputs = np.load(index_dir / "outputs_images.npy")
    assert outputs.dtype == np.float16 and outputs.shape == (n, BIT)
    # the packed codes are the signs of the stored outputs, and unpack back to them
    assert np.array_equal(unpack_codes(codes, BIT), np.where(outputs.astype(np.float32) >= 0, 1, -1))
    # the stored standardisation is the run's own (utils.data.features.standardise) and the codes are the run's:
    # the query split's codes equal those main.py --test wrote
    split = json.loads((run_dir / "split.json").read_text())
    run_codes = np.load(run_dir / "codes.npz")
    assert np.array_equal(codes[split["query"]], pack_codes(run_codes["q_img"]))
    caption_codes = np.load(index_dir / "codes_captions.npy")
    assert np.array_equal(caption_codes[split["db_captions"]], pack_codes(run_codes["db_txt"]))
    index = load_index(tiny_run)
    meta = [index.metadata["captions"][r] for r in range(5 * n)]
    assert [m["row"] for m in meta] == list(range(5 * n)) and meta[7]["image_row"] == 1 and meta[7]["sentence"] == 2
    dataset = json.loads((tiny_run["data"] / "DEMO.json").read_text())
    assert meta[7]["caption"] == dataset["images"][1]["sentences"][2]["raw"]
    images = [index.metadata["images"][r] for r in range(n)]
    assert {m["split"] for m in images} == {"train", "query", "db"} and all(Path(m["path"]).is_file() for m in images)
    assert sum(m["split_caption"] for m in meta) == n
    # one SQLite file holds both tables, and the manifest the filters' names with their counts
    import sqlite3

    with sqlite3.connect(index_dir / "metadata.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM captions").fetchone()[0] == 5 * n
    assert sum(manifest["metadata"]["names"]["images"]["split"].values()) == n
    assert manifest["segments"]["images"][0]["type"] == "flat" and manifest["format_version"] == 2


def test_standardisation_matches_training():
    from utils.data.features import standardise
    from utils.search.encoders import FeatureStats

    x = np.random.default_rng(0).gamma(2.0, size=(50, 33)).astype(np.float32)
    assert np.array_equal(FeatureStats.of(x).apply(x), standardise(x))
    stats = FeatureStats(**json.loads(json.dumps(FeatureStats.of(x).to_json())))  # through the manifest
    assert np.array_equal(stats.apply(x[3:4]), standardise(x)[3:4])


def test_caption_embedded_by_search_equals_captions_embed(tiny_run):
    from utils.search.query import QueryEncoder

    index = load_index(tiny_run)
    encoder = QueryEncoder(index, "cpu")
    dataset = json.loads((tiny_run["data"] / "DEMO.json").read_text())
    rows = [0, 13, 59]
    texts = [dataset["images"][r // 5]["sentences"][r % 5]["raw"] for r in rows]
    with h5py.File(tiny_run["data"] / "caption_emb_DEMO_aug.h5") as f:
        stored = f["caption_emb"][rows]
    for r, text, row in zip(rows, texts, stored):  # one at a time, as a --text query
        np.testing.assert_allclose(encoder.embed_texts([text])[0], row, atol=1e-5, rtol=0)
    # and hashed: a caption's text finds its own stored code
    codes = pack_codes(np.where(encoder.encode_texts(texts) >= 0, 1, -1))
    assert np.array_equal(codes, index.codes["captions"][rows])


def test_text_query_equals_brute_force(tiny_run, tmp_path, capsys):
    index = load_index(tiny_run)
    out = tmp_path / "r.json"
    results = run_search("query", "--index", tiny_run["index"], "--text", "There are green fields .", "-k", 7, "--json",
                         out)
    assert_equals_brute_force(results[0], index.codes["images"], 7)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results[0]))
    table = capsys.readouterr().out
    assert "rank hamming" in table and results[0]["results"][0]["filename"] in table
    captions = run_search("query", "--index", tiny_run["index"], "--text", "a river", "--target", "captions", "-k", 60,
                          "--quiet")
    assert_equals_brute_force(captions[0], index.codes["captions"], 60)  # every row: all ties ordered by row


def test_image_query_equals_brute_force_and_reproduces_the_features(tiny_run):
    from utils.search.query import QueryEncoder

    index = load_index(tiny_run)
    image = tiny_run["data"] / "images" / "5.png"
    results = run_search("query", "--index", tiny_run["index"], "--image", image, "-k", 12, "--quiet")
    assert_equals_brute_force(results[0], index.codes["images"], 12)
    # the same ResNet18 (random weights from the recorded seed), transform and standardisation as images_augment.py
    with h5py.File(tiny_run["data"] / "image_emb_DEMO_aug_center_crop_only.h5") as f:
        stored = f["image_emb"][4]
    np.testing.assert_allclose(QueryEncoder(index, "cpu").embed_images([image])[0], stored, atol=1e-4, rtol=1e-4)
    assert results[0]["query"]["code"] == index.codes["images"][4].tobytes().hex()
    assert results[0]["results"][0]["distance"] == 0


@pytest.mark.parametrize("modality,target",
                         [("image", "images"), ("caption", "images"), ("image", "captions"), ("caption", "captions")])
def test_row_query_equals_brute_force(tiny_run, modality, target):
    index = load_index(tiny_run)
    results = run_search("query", "--index", tiny_run["index"], "--row", 3, "--modality", modality, "--target", target,
                         "-k", 9, "--quiet")
    stored = index.codes["images" if modality == "image" else "captions"][3]
    assert results[0]["query"]["code"] == stored.tobytes().hex()
    assert_equals_brute_force(results[0], index.codes[target], 9)


def test_faiss_flat_orders_ties_by_row():
    """The property the exact search relies on, at several k, on codes with heavy ties."""
    from utils.search.query import order_by_distance_then_row
    from utils.search.segments import make_binary_index

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, size=(3000, 1), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(40, 1), dtype=np.uint8)
    index, _ = make_binary_index(codes, "flat")
    for k in (1, 10, 300, 3000):
        distances, rows = order_by_distance_then_row(*index.search(queries, k))
        raw_distances, raw_rows = index.search(queries, k)
        assert np.array_equal(rows, raw_rows)  # faiss already returns (distance, row) order
        for i, q in enumerate(queries):
            expect_rows, expect_distances = brute_force(codes, q, k)
            assert rows[i].tolist() == expect_rows and distances[i].tolist() == expect_distances


def test_rerank_orders_the_shortlist_by_cosine(tiny_run):
    index = load_index(tiny_run)
    results = run_search("query", "--index", tiny_run["index"], "--row", 2, "--modality", "caption", "--rerank",
                         "--shortlist", 12, "-k", 12, "--quiet")[0]["results"]
    outputs = index.outputs("images").astype(np.float32)
    q = index.outputs("captions")[2].astype(np.float32)
    cos = outputs @ q / (np.linalg.norm(outputs, axis=1) * np.linalg.norm(q))
    assert [r["row"] for r in results] == np.lexsort((np.arange(12), -cos)).tolist()  # shortlist = everything
    assert all(abs(r["cosine"] - cos[r["row"]]) < 1e-5 for r in results)
    distances = np.bitwise_count(index.codes["images"] ^ index.codes["captions"][2]).sum(axis=1)
    assert [r["distance"] for r in results] == distances[[r["row"] for r in results]].tolist()


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.stack_ok = [], True

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_html_page_shows_k_thumbnails_that_decode(tiny_run, tmp_path):
    import base64
    import io

    from PIL import Image

    page = tmp_path / "page.html"
    results = run_search("query", "--index", tiny_run["index"], "--text", "a beach & <sea>", "-k", 5, "--html", page,
                         "--quiet")
    text = page.read_text()
    parser = _Page()
    parser.feed(text)
    assert len(parser.images) == 5
    for src in parser.images:
        assert src.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert max(im.size) <= 192
    assert "a beach &amp; &lt;sea&gt;" in text and "<sea>" not in text
    for r in results[0]["results"]:
        assert r["filename"] in text
    image_page = tmp_path / "image.html"
    run_search("query", "--index", tiny_run["index"], "--image", tiny_run["data"] / "images" / "1.png", "-k", 3,
               "--html", image_page, "--quiet")
    parser = _Page()
    parser.feed(image_page.read_text())
    assert len(parser.images) == 4  # the query thumbnail and 3 results


def test_queries_file_gives_json_lines_like_single_queries(tiny_run, tmp_path, capsys):
    lines = ["a river next to green fields", str(tiny_run["data"] / "images" / "2.png"), "many trees"]
    (tmp_path / "q.txt").write_text("\n".join(lines) + "\n\n")
    out = tmp_path / "out.jsonl"
    run_search("query", "--index", tiny_run["index"], "--queries", tmp_path / "q.txt", "-k", 4, "--json", out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["query"]["kind"] for r in records] == ["text", "image", "text"]
    assert "queries/s" in capsys.readouterr().err
    single = run_search("query", "--index", tiny_run["index"], "--text", lines[2], "-k", 4, "--quiet")
    assert records[2]["results"] == json.loads(json.dumps(single[0]["results"]))


def test_ivf_index_returns_true_distances(tiny_run, tmp_path):
    out = tmp_path / "ivf"
    run_search("index", "--run", tiny_run["run"], "--out", out, "--index-type", "ivf", "--nlist", 2, "--no-progress")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["index"]["captions"]["faiss_class"] == "IndexBinaryIVF"
    assert manifest["index"]["captions"]["nlist"] == 2
    codes = np.load(out / "codes_captions.npy")
    res = run_search("query", "--index", out, "--row", 0, "--modality", "image", "--target", "captions", "-k", 60,
                     "--nprobe", 2, "--quiet")[0]
    assert_equals_brute_force(res, codes, 60)  # every list probed: the exact ranking


def _image_dir(root: Path, data: Path) -> Path:
    """New images: copies of two dataset images (one nested, one as 16-bit grey) and a JPEG."""
    from PIL import Image

    folder = root / "new"
    (folder / "sub").mkdir(parents=True)
    Image.open(data / "images" / "1.png").save(folder / "a.png")
    Image.open(data / "images" / "3.png").save(folder / "sub" / "b.tif")
    grey = (np.asarray(Image.open(data / "images" / "5.png").convert("L")).astype(np.uint16) * 257)
    Image.fromarray(grey).save(folder / "sub" / "c16.png")
    Image.fromarray((grey // 257).astype(np.uint8)).save(folder / "sub" / "c8.png")  # the same picture in 8 bits
    Image.open(data / "images" / "7.png").convert("RGB").save(folder / "d.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_image_dir_is_indexed_and_resumes_after_an_interruption(tiny_run, tmp_path, monkeypatch):
    import utils.search.index as index_module

    folder = _image_dir(tmp_path, tiny_run["data"])
    args = ["index", "--run", tiny_run["run"], "--image-dir", folder, "--shard-size", 2, "--no-progress"]
    run_search(*args, "--out", tmp_path / "full")
    full = tmp_path / "full"
    from tests.conftest import index_rows

    meta = index_rows(full, "images")
    assert [m["filename"] for m in meta[12:]] == ["a.png", "d.jpg", "sub/b.tif", "sub/c16.png", "sub/c8.png"]
    assert all(m["split"] == "new" for m in meta[12:])
    codes = np.load(full / "codes_images.npy")
    # same image, same code
    assert codes[12].tobytes() == codes[0].tobytes() and codes[14].tobytes() == codes[2].tobytes()
    outputs = np.load(full / "outputs_images.npy")
    assert np.array_equal(outputs[15], outputs[16])  # 16-bit and 8-bit versions of one picture: one output

    original = interrupt_second_shard(monkeypatch, index_module)
    with pytest.raises(SystemExit) as exc:
        run_search(*args, "--out", tmp_path / "part")
    assert exc.value.code == 130
    part = tmp_path / "part"
    assert not (part / "manifest.json").exists() and len(list((part / "image_dir_features").glob("shard_*.npy"))) == 1
    monkeypatch.setattr(index_module, "encode_shard", original)
    run_search(*args, "--out", part)
    for name in ("codes_images.npy", "outputs_images.npy", "index_images.faiss",
                 "codes_captions.npy", "image_dir_features/shard_000000.npy", "image_dir_features/shard_000001.npy"):
        assert (part / name).read_bytes() == (full / name).read_bytes(), name
    assert index_rows(part, "images") == index_rows(full, "images")


# ------------------------------------------------------------------------------------------------
# bad input: one line, exit status 2


def expect_error(capsys, *argv, match):
    with pytest.raises(SystemExit) as exc:
        run_search(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    return err


def test_bad_queries(tiny_run, tmp_path, capsys):
    index = tiny_run["index"]
    expect_error(capsys, "index", "--run", tmp_path / "nope", match="run folder not found")
    expect_error(capsys, "query", "--index", tmp_path / "nope", "--text", "x", match="index folder not found")
    expect_error(capsys, "query", "--index", tmp_path, "--text", "x", match="manifest.json missing")
    expect_error(capsys, "query", "--index", index, "--text", "x", "-k", 0, match="-k must be at least 1")
    expect_error(capsys, "query", "--index", index, "--text", "   ", match="empty text query")
    expect_error(capsys, "query", "--index", index, "--row", 12, "--modality", "image",
                 match="--row 12 is out of range")
    expect_error(capsys, "query", "--index", index, "--row", -1, "--modality", "caption", match="out of range")
    expect_error(capsys, "query", "--index", index, "--row", 1, match="--row needs --modality")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    expect_error(capsys, "query", "--index", index, "--image", bad, match="cannot read image")
    expect_error(capsys, "query", "--index", index, "--image", tmp_path / "missing.png", match="image not found")
    expect_error(capsys, "index", "--run", tiny_run["run"], "--no-progress", match="already holds an index")


def test_index_of_another_checkpoint_is_refused(tiny_run, tmp_path, capsys):
    import shutil

    import torch

    built = tmp_path / "built"
    shutil.copytree(tiny_run["run"], built, ignore=shutil.ignore_patterns("index"))
    run_search("index", "--run", built, "--no-progress")
    run = built.rename(tmp_path / "moved")  # a run folder moved with its index still works
    run_search("query", "--index", run / "index", "--text", "a river", "--quiet")
    payload = torch.load(run / "checkpoint_best.pt", weights_only=True)
    payload["epoch"] = 99  # retrained or resumed: another file
    torch.save(payload, run / "checkpoint_best.pt")
    expect_error(capsys, "query", "--index", run / "index", "--row", 0, "--modality", "image",
                 match="has changed since this index was built")


def test_text_query_without_a_text_model_record(tiny_run, tmp_path, capsys):
    import shutil

    index = tmp_path / "index"
    shutil.copytree(tiny_run["index"], index)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["encoders"]["text"] = None  # as an index of the authors' published features, which record no model
    (index / "manifest.json").write_text(json.dumps(manifest))
    expect_error(capsys, "query", "--index", index, "--text", "a river", match="--text-model")
    run_search("query", "--index", index, "--row", 0, "--modality", "caption", "--quiet")  # rows still work


def test_text_model_flag_replaces_a_missing_record(tiny_run, tmp_path):
    data = tmp_path / "data"
    import shutil

    shutil.copytree(tiny_run["data"], data)
    with h5py.File(data / "caption_emb_DEMO_aug.h5", "a") as f:
        for name in list(f["caption_emb"].attrs):
            del f["caption_emb"].attrs[name]
    # a run trained on such a file (the authors' published features carry no record): its fingerprint says so
    from utils.fingerprints import fingerprint

    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run, ignore=shutil.ignore_patterns("index"))
    config = json.loads((run / "config.json").read_text())
    config["inputs"]["caption"] = fingerprint(data / "caption_emb_DEMO_aug.h5")
    (run / "config.json").write_text(json.dumps(config))
    out = tmp_path / "ix"
    run_search("index", "--run", run, "--data-dir", data, "--out", out, "--no-progress")
    assert json.loads((out / "manifest.json").read_text())["encoders"]["text"] is None
    run_search("index", "--run", run, "--data-dir", data, "--out", out, "--overwrite", "--no-progress",
               "--text-model", tiny_run["bert"])
    spec = json.loads((out / "manifest.json").read_text())["encoders"]["text"]
    assert spec["model"] == str(tiny_run["bert"]) and spec["source"].startswith("flags")
    res = run_search("query", "--index", out, "--text", "a river", "--quiet")
    assert_equals_brute_force(res[0], np.load(out / "codes_images.npy"), 10)


def test_cli_prints_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "search.py", "query", "--index", str(tmp_path / "none"), "--text", "x"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: index folder not found")


def interrupt_second_shard(monkeypatch, index_module):
    """Ctrl-C while the second shard of --image-dir is encoded; returns the real encode_shard to restore."""
    original, calls = index_module.encode_shard, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*a, **kw)

    monkeypatch.setattr(index_module, "encode_shard", interrupted)
    return original
