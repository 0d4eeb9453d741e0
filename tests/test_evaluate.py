"""evaluate.py: both codes-file formats, the code forms, metrics.json and the table, and bad input at the door."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_main
from utils.retrieval.codes import pack_codes
from utils.retrieval.evaluation import Codes, evaluate_codes
from utils.retrieval.metrics import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]


def evaluate(*argv):
    import evaluate as script

    return script.main(script.get_args_parser().parse_args([str(a) for a in argv]))


def class_codes(rng, labels, bits, flip):
    centres = np.where(rng.random((labels.max() + 1, bits)) > 0.5, 1, -1).astype(np.int8)
    codes = centres[labels]
    return np.where(rng.random(codes.shape) < flip, -codes, codes).astype(np.int8)


@pytest.fixture
def four_way(tmp_path):
    rng = np.random.default_rng(0)
    ql, dl = rng.integers(0, 5, 40), rng.integers(0, 5, 200)
    arrays = {
        "q_img": class_codes(rng, ql, 24, 0.1), "q_txt": class_codes(rng, ql, 24, 0.2),
        "db_img": class_codes(rng, dl, 24, 0.1), "db_txt": class_codes(rng, dl, 24, 0.2),
        "q_labels": ql, "db_labels": dl, "q_rows": np.arange(40), "db_rows": np.arange(200),  # extra keys are ignored
    }
    path = tmp_path / "codes.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_codes_npz_gives_main_py_metrics(four_way, tmp_path, capsys):
    path, a = four_way
    out = tmp_path / "metrics.json"
    metrics = evaluate("--codes", path, "--out", out)
    codes = Codes(*(torch.tensor(a[k]) for k in ("q_img", "q_txt", "db_img", "db_txt")))
    want = evaluate_codes(codes, torch.tensor(a["q_labels"]), torch.tensor(a["db_labels"]))
    saved = json.loads(out.read_text())
    for key in want:
        assert saved[key] == json.loads(json.dumps(want[key])), key
    assert saved["n_query"] == 40 and saved["n_db"] == 200 and metrics["map@20"] == want["map@20"]
    assert set(saved["map@10"]) == {"i2t", "t2i", "i2i", "t2t", "avg"} and len(saved["precision_radius"]["t2t"]) == 25
    printed = capsys.readouterr().out
    assert "I->T" in printed and "T->T" in printed and "chance" in printed and "mAP@20" in printed


def test_single_modality_packed_and_options(tmp_path, capsys):
    rng = np.random.default_rng(1)
    ql, dl = rng.integers(0, 4, 30), rng.integers(0, 4, 120)
    q, db = class_codes(rng, ql, 12, 0.15), class_codes(rng, dl, 12, 0.15)
    path = tmp_path / "single.npz"
    np.savez(path, q=pack_codes(q), db=pack_codes(db), q_labels=np.eye(4)[ql], db_labels=np.eye(4)[dl])
    metrics = evaluate("--codes", path, "--bits", 12, "--map-k", 5, 50, "--no-curves")
    want = retrieval_metrics(q, db, ql, dl, map_ks=(5, 50), with_curves=False)
    assert metrics["map@5"] == {"q2db": want["map@5"], "avg": want["map@5"]}
    assert metrics["map@50"]["q2db"] == want["map@50"] and metrics["chance"] == {"q2db": want["chance"]}
    assert "p@k" not in metrics
    printed = capsys.readouterr().out
    assert "Q->DB" in printed and "mAP@50" in printed


def test_main_py_codes_score_as_main_py_does(demo_features, tmp_path):
    """One engine: evaluate.py on a run's codes.npz gives that run's metrics.json."""
    metrics = run_main("--dataset", "demo", "--bit", "8", "--epochs", "2", "--batch-size", "32", "--data-dir",
                       str(demo_features), "--out-dir", str(tmp_path))
    run_dir = tmp_path / "demo_8_test_default"
    again = evaluate("--codes", run_dir / "codes.npz")
    for key in ("map@20", "map@10", "chance", "p@k", "precision_radius", "recall_radius"):
        assert again[key] == metrics[key], key


def bad_file(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def good(n_q=4, n_db=9, bits=8):
    rng = np.random.default_rng(3)
    return dict(q=np.where(rng.random((n_q, bits)) > 0.5, 1, -1), db=np.where(rng.random((n_db, bits)) > 0.5, 1, -1),
                q_labels=np.zeros(n_q, int), db_labels=np.zeros(n_db, int))


@pytest.mark.parametrize(
    "change,extra,message",
    [
        (lambda a: a.pop("db_labels"), (), "lacks db_labels"),
        (lambda a: a.update(db=np.ones((9, 16))), (), "8 bits but db codes have 16"),
        (lambda a: a.update(db_labels=np.zeros(5, int)), (), "db_labels has 5 rows but db has 9"),
        (lambda a: a.update(q=np.array([{"bits": 1}] * 4, dtype=object)), (),
         "holds Python objects (an object array)"),  # no pickles
        (lambda a: a.update(q_img=a.pop("q")), (), "lacks q_txt, db_img, db_txt; a codes file holds either"),
        (lambda a: a.update(db_txt=a.pop("db")), (), "lacks q_img, q_txt, db_img; a codes file holds either"),
        (lambda a: a.update(q=np.full((4, 8), 3)), (), "the value 3"),
        (lambda a: a.update(q=np.full((4, 8), np.nan)), (), "NaN"),
        (lambda a: a.update(q=np.ones((0, 8)), q_labels=np.zeros(0)), (), "empty"),
        (lambda a: None, ("--map-k", "0"), "at least 1"),
        (lambda a: None, ("--bits", "12"), "8 values per row, but --bits is 12"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, change, extra, message):
    arrays = good()
    change(arrays)
    with pytest.raises(SystemExit) as exit_info:
        evaluate("--codes", bad_file(tmp_path, **arrays), *extra)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


def test_missing_file_and_existing_out(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate("--codes", tmp_path / "nope.npz")
    assert "not found" in capsys.readouterr().err
    path = bad_file(tmp_path, **good())
    out = tmp_path / "metrics.json"
    out.write_text("{}")
    with pytest.raises(SystemExit):
        evaluate("--codes", path, "--out", out)
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "{}"
    evaluate("--codes", path, "--out", out, "--overwrite")
    assert "map@20" in json.loads(out.read_text())


def test_cli_help_and_error_without_traceback(tmp_path):
    help_text = subprocess.run([sys.executable, "evaluate.py", "--help"], cwd=ROOT, capture_output=True,
                               text=True).stdout
    assert "(default: [20, 10])" in help_text and "(default: 4.0)" in help_text
    done = subprocess.run([sys.executable, "evaluate.py", "--codes", str(tmp_path / "x.npz")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "not found" in done.stderr
