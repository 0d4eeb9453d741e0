"""Inputs that changed since a result was made are refused by name (utils/fingerprints.py): main.py --test and
--resume after a feature file was replaced, cached --image-dir shards after an image changed, and
images_augment.py's resume files (utils/preprocess/resume.py) made from other images."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from tests.conftest import run_main
from utils.errors import DUCHError
from utils.fingerprints import changed_inputs, check_unchanged, difference, fingerprint

RUN = "demo_8_test_default"


def test_fingerprint_sees_content_not_only_size_and_time(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    record = fingerprint(path)
    assert difference(record) is None and set(record) == {"path", "size", "mtime_ns", "sha256"}
    os.utime(path, ns=(1, 1))  # touched, same bytes: still the same input
    assert difference(record) is None
    path.write_bytes(b"b" * 100)  # same size, other bytes
    assert difference(record) == "content (sha256) changed"
    path.write_bytes(b"b" * 101)
    assert difference(record) == "size 100 -> 101 bytes"
    no_digest = fingerprint(path, digest=False)
    path.write_bytes(b"c" * 101)
    os.utime(path, ns=(5, 5))
    assert "mtime changed" in difference(no_digest)
    path.unlink()
    assert difference(record) == "missing"
    with pytest.raises(DUCHError, match=r"input files changed since it was made \(image .*f.bin: missing\); retrain"):
        check_unchanged({"image": record}, "the run", "retrain")
    assert changed_inputs({"x": "not a record"}) == []


def _train(data, out, *extra):
    run_main("--dataset", "demo", "--bit", "8", "--data-dir", str(data), "--out-dir", str(out), "--epochs", "2",
             "--batch-size", "32", *extra)


def _replace_same_shape(path):
    with h5py.File(path, "r") as f:
        key = list(f.keys())[0]
        array = f[key][()]
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array[::-1].copy())  # same shape, same values, other order


def test_test_and_resume_refuse_a_replaced_feature_file(demo_features, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo_features, data)
    out = tmp_path / "runs"
    _train(data, out)
    config = json.loads((out / RUN / "config.json").read_text())
    assert set(config["inputs"]) == {"image", "image_aug", "caption", "caption_aug"}
    metrics = (out / RUN / "metrics.json").read_bytes()
    run_main("--dataset", "demo", "--bit", "8", "--out-dir", str(out), "--test")  # unchanged: accepted
    _replace_same_shape(data / "image_emb_DEMO_aug_center.h5" if (data / "image_emb_DEMO_aug_center.h5").exists()
                        else next(data.glob("image_emb_*.h5")))
    metrics = (out / RUN / "metrics.json").read_bytes()
    for flag in ("--test", "--resume"):
        with pytest.raises(SystemExit) as exit_info:
            more = ["--epochs", "3"] if flag == "--resume" else []
            run_main("--dataset", "demo", "--bit", "8", "--out-dir", str(out), flag, *more)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"{flag} of the run" in err and "input files changed" in err
        assert "image_emb_" in err and ("content (sha256) changed" in err or "size" in err)
    assert (out / RUN / "metrics.json").read_bytes() == metrics  # not overwritten by a result of other inputs


def test_index_refuses_changed_inputs_and_records_the_checkpoint_it_loaded(demo_features, tmp_path, capsys,
                                                                          monkeypatch):
    """search.py index applies --test's rule to the feature files it encodes, and its manifest names the
    checkpoint by the sha256 of the bytes the model was loaded from, even if the file is replaced right after."""
    import hashlib

    import utils.train.checkpoints as checkpoints
    from tests.test_search import run_search

    data = tmp_path / "data"
    shutil.copytree(demo_features, data)
    out = tmp_path / "runs"
    _train(data, out)
    best = out / RUN / "checkpoint_best.pt"
    loaded = best.read_bytes()
    real = checkpoints.load_checkpoint_digest

    def load_then_replace(path, *args):  # a --resume finishes right after the index loaded the model
        answer = real(path, *args)
        best.write_bytes(best.read_bytes() + b"x")
        return answer

    monkeypatch.setattr(checkpoints, "load_checkpoint_digest", load_then_replace)
    run_search("index", "--run", out / RUN, "--no-progress", "--out", tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["checkpoint"]["sha256"] == hashlib.sha256(loaded).hexdigest()
    monkeypatch.setattr(checkpoints, "load_checkpoint_digest", real)
    _replace_same_shape(next(data.glob("image_emb_DEMO_aug_center_crop_only.h5")))
    with pytest.raises(SystemExit) as exit_info:
        run_search("index", "--run", out / RUN, "--no-progress", "--out", tmp_path / "ix2")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "input files changed since the run was trained" in err
    assert "image_emb_DEMO_aug_center_crop_only.h5: content (sha256) changed" in err
    assert not (tmp_path / "ix2" / "manifest.json").exists()


def test_cached_image_dir_shards_of_a_changed_image_are_refused(tiny_run, tmp_path, monkeypatch):
    from PIL import Image

    import utils.search.index as index_module
    from tests.test_search import _image_dir, interrupt_second_shard, run_search

    folder = _image_dir(tmp_path, tiny_run["data"])
    args = ["index", "--run", tiny_run["run"], "--image-dir", folder, "--shard-size", 2, "--no-progress",
            "--out", tmp_path / "ix"]
    original = interrupt_second_shard(monkeypatch, index_module)
    with pytest.raises(SystemExit):
        run_search(*args)
    monkeypatch.setattr(index_module, "encode_shard", original)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(folder / "a.png")  # an image of a cached shard changes
    with pytest.raises(DUCHError, match=r"caches features of images that changed since \(a.png\); pass --overwrite"):
        index_module.build_index(index_module.IndexOptions(run_dir=tiny_run["run"], image_dir=folder, shard_size=2,
                                                           out=tmp_path / "ix", progress=False))


def test_resume_file_of_other_images_is_named_and_not_used(tmp_path, capsys):
    from utils.preprocess import resume

    def fp(stats):
        return json.dumps({"img_aug": "center", "inputs": stats}, sort_keys=True)

    piece = tmp_path / ".out.h5.partial.npz"
    resume.save_piece(piece, fp({"a.png": [10, 1], "b.png": [20, 2]}), features=np.zeros((2, 3)),
                      filled=np.ones(2, bool))
    assert resume.load_piece(piece, fp({"a.png": [10, 1], "b.png": [20, 2]})) is not None
    assert resume.load_piece(piece, fp({"a.png": [10, 1], "b.png": [20, 3]}), notes=True) is None
    assert "images that changed since (b.png)" in capsys.readouterr().err
