"""No traceback: a full disk, outputs that are folders or in missing folders (checked before the work), non-UTF-8
queries, damaged index folders and Ctrl-C during start-up each give one line and exit 2 (130 for Ctrl-C), with
nothing half-written (utils/errors.py exit_on_user_error, utils/io.py check_output_file)."""
import errno
import json
import shutil
import sqlite3

import numpy as np
import pytest


def _codes(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "codes.npz"
    np.savez(path, q=np.where(rng.random((5, 16)) > 0.5, 1, -1), db=np.where(rng.random((20, 16)) > 0.5, 1, -1),
             q_labels=rng.integers(0, 3, 5), db_labels=rng.integers(0, 3, 20))
    return path


def _one_line(capsys):
    """The one message line on stderr (progress bars aside), with no traceback."""
    err = capsys.readouterr().err
    lines = [x.strip() for x in err.replace("\r", "\n").splitlines() if x.strip() and not x.startswith("evaluate:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def evaluate(*argv):
    import evaluate as script

    return script.main(script.get_args_parser().parse_args([str(a) for a in argv]))


def test_evaluate_out_checked_before_scoring(tmp_path, capsys, monkeypatch):
    import evaluate as script
    import utils.retrieval.evaluation as evaluation

    codes = _codes(tmp_path)
    never = lambda *a, **k: pytest.fail("scored before --out was checked")  # noqa: E731
    monkeypatch.setattr(evaluation, "evaluate_file", never)
    if hasattr(script, "evaluate_file"):  # imported at the script's top
        monkeypatch.setattr(script, "evaluate_file", never)
    for out, message in ((tmp_path, "is a folder"), (tmp_path / "missing" / "m.json", "does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            evaluate("--codes", codes, "--out", out)
        assert exit_info.value.code == 2 and message in _one_line(capsys)


def test_full_disk_is_one_line_and_leaves_no_tmp(tmp_path, capsys, monkeypatch):
    import utils.io

    codes = _codes(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(utils.io.os, "replace", full)
    with pytest.raises(SystemExit) as exit_info:
        evaluate("--codes", codes, "--out", out_dir / "metrics.json")
    err = _one_line(capsys)
    assert exit_info.value.code == 2 and "No space left on device" in err and "free some space" in err
    assert list(out_dir.iterdir()) == []  # no metrics.json, no hidden .tmp


def test_ctrl_c_during_start_up(tmp_path, capsys, monkeypatch):
    import evaluate as script
    import utils.logs

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(utils.logs, "setup_logger", interrupted)
    if hasattr(script, "setup_logger"):  # imported at the script's top
        monkeypatch.setattr(script, "setup_logger", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        evaluate("--codes", _codes(tmp_path))
    assert exit_info.value.code == 130 and _one_line(capsys) == "interrupted"


def run_search(*argv):
    import search

    return search.main(search.get_args_parser().parse_args([str(a) for a in argv]))


def test_search_outputs_and_queries_checked_at_the_door(tmp_path, capsys):
    bad = tmp_path / "queries.txt"
    bad.write_bytes(b"a river\nfields \xff\xfe of corn\n")
    with pytest.raises(SystemExit) as exit_info:
        run_search("query", "--index", tmp_path / "none", "--queries", bad)
    assert exit_info.value.code == 2 and "not UTF-8 text: byte 0xff on line 2" in _one_line(capsys)
    cases = (("--html", tmp_path, "--html"), ("--json", tmp_path / "no" / "r.json", "does not exist"))
    for flag, out, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_search("query", "--index", tmp_path / "none", "--text", "a river", flag, out)
        assert exit_info.value.code == 2 and message in _one_line(capsys)


def test_text_query_that_is_not_utf8():
    from utils.errors import DUCHError
    from utils.search.query import require_text

    with pytest.raises(DUCHError, match="not valid UTF-8"):
        require_text(b"river \xff".decode("utf-8", "surrogateescape"))  # what argv holds for such bytes


@pytest.fixture
def index_copy(tiny_run, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(tiny_run["index"], index)
    return index


def _vouch_again(index):
    """The manifest's digests remade for the damaged files: the readers themselves must cope, not only the
    digest check."""
    from utils.search.writer import file_digests

    manifest = json.loads((index / "manifest.json").read_text())
    manifest["digests"] = file_digests(index, list(manifest["digests"]))
    (index / "manifest.json").write_text(json.dumps(manifest))


def _damage(index, kind):
    if kind == "truncated codes":
        data = (index / "codes_images.npy").read_bytes()
        (index / "codes_images.npy").write_bytes(data[: len(data) - 7])
    elif kind == "object codes":
        np.save(index / "codes_images.npy", np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    elif kind == "float codes":
        np.save(index / "codes_images.npy", np.zeros((12, 2), np.float32))
    elif kind == "metadata row":
        with sqlite3.connect(index / "metadata.sqlite") as con:
            con.execute("UPDATE images SET captions = '[broken' WHERE row = 3")
    elif kind == "metadata file":
        data = (index / "metadata.sqlite").read_bytes()
        (index / "metadata.sqlite").write_bytes(b"not a database" + data[200:])
    elif kind == "metadata of another build":
        with sqlite3.connect(index / "metadata.sqlite") as con:
            con.execute("UPDATE info SET value = 'another' WHERE key = 'build_id'")
    elif kind == "metadata path":
        with sqlite3.connect(index / "metadata.sqlite") as con:
            con.execute("UPDATE images SET path = '/etc/passwd'")
    elif kind == "faiss":
        data = (index / "index_images.faiss").read_bytes()
        (index / "index_images.faiss").write_bytes(data[:30])
    elif kind == "manifest":
        manifest = json.loads((index / "manifest.json").read_text())
        del manifest["checkpoint"]
        (index / "manifest.json").write_text(json.dumps(manifest))
    elif kind == "manifest json":
        (index / "manifest.json").write_text('{"format": ')
    elif kind in ("bit", "no digests"):
        manifest = json.loads((index / "manifest.json").read_text())
        manifest.update(bit="8x") if kind == "bit" else manifest.pop("digests")
        (index / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("kind,message", [
    ("truncated codes", "truncated"), ("object codes", "object array"), ("float codes", "not packed"),
    ("metadata row", "row 3 is damaged"), ("metadata path", "outside the index's image folders"),
    ("metadata file", "not a readable metadata file"), ("metadata of another build", "another build"),
    ("faiss", "cannot read faiss index"), ("manifest", "is damaged"), ("manifest json", "not valid JSON"),
    ("bit", "'bit' is '8x', not a code length"), ("no digests", "vouches for no file"),
])
def test_damaged_index_folder_is_one_line(index_copy, capsys, kind, message):
    if kind not in ("manifest", "manifest json", "bit", "no digests") and not kind.startswith("metadata"):
        _damage(index_copy, kind)
        with pytest.raises(SystemExit) as exit_info:  # the manifest's digests notice first
            run_search("query", "--index", index_copy, "--row", "0", "--modality", "image", "--quiet")
        assert exit_info.value.code == 2 and "not the file the manifest was written with" in _one_line(capsys)
        _vouch_again(index_copy)
    else:
        _damage(index_copy, kind)
    with pytest.raises(SystemExit) as exit_info:
        run_search("query", "--index", index_copy, "--row", "0", "--modality", "image", "--quiet")
    assert exit_info.value.code == 2 and message in _one_line(capsys)


@pytest.mark.parametrize("case", ["nested json", "classcode 10**30", "csv field", "csv empty rows"])
def test_more_inputs_that_once_gave_a_traceback(tmp_path, capsys, case):
    """A 200,000-level nested JSON, a class code beyond any integer type, a labels CSV with a field over the
    csv module's limit or of empty rows only: each one line naming the file, exit status 2."""
    from tests.conftest import run_main

    images = [{"filename": f"a_{k}.png", "split": "train" if k % 3 else "test",
               "sentences": [{"raw": f"caption {k}"}]} for k in range(12)]
    path = tmp_path / "d.json"
    extra, expected = [], ""
    if case == "nested json":
        path.write_text("[" * 200_000 + "]" * 200_000)
        expected = "nests deeper than Python's JSON reader goes"
    elif case == "classcode 10**30":
        for image in images:
            image["classcode"] = 10 ** 30
        path.write_text(json.dumps({"images": images}))
        expected = "a class code is a non-negative integer below 2^31"
    else:
        path.write_text(json.dumps({"images": images}))
        csv = tmp_path / "labels.csv"
        csv.write_text("a_0.png," + "x" * 200_000 + "\n" if case == "csv field" else "\n,\n , \n")
        extra, expected = ["--labels", str(csv)], str(csv)
    with pytest.raises(SystemExit) as exit_info:
        run_main("--dataset", str(path), "--describe", str(tmp_path / "r.json"), *extra)
    line = _one_line(capsys)
    assert exit_info.value.code == 2 and expected in line, line
