"""Data loss and mixed outputs: atomic folder publish with a kill between its steps (utils/publish.py), one writer
per output (utils/locks.py, two processes), main.py --overwrite keeping the old run whole and the user's files,
search.py index's manifest of digests, and hidden .tmp files of dead writers removed (utils/io.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_main
from utils.errors import DUCHError
from utils.locks import OutputLock, lock_path_of
from utils.publish import STEP_HOOK_ENV, old_path_of, publish_folder, recover_folder

ROOT = Path(__file__).resolve().parents[1]
RUN = "demo_8_test_default"


def _folder(path: Path, files: dict) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _contents(path: Path) -> dict:
    return {p.name: p.read_text() for p in sorted(path.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------ publish with a kill between steps

PUBLISH = """
import sys
from utils.publish import publish_folder
publish_folder(sys.argv[1], sys.argv[2], keep=lambda name: name.startswith("user_"))
"""


@pytest.mark.parametrize("step", [None, 1, 2, 3])
def test_publish_killed_between_steps_is_recovered(tmp_path, step):
    final = _folder(tmp_path / "run", {"model.pt": "old", "config.json": "old", "user_notes.txt": "mine"})
    staging = _folder(tmp_path / ".run.new", {"model.pt": "new", "config.json": "new"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if step is not None:
        env[STEP_HOOK_ENV] = str(step)
    done = subprocess.run([sys.executable, "-c", PUBLISH, str(staging), str(final)], env=env, cwd=ROOT)
    assert done.returncode == (0 if step is None else 137)
    # whatever the kill left, a reader never sees a mix: the folder is the old one whole, or the new one
    if final.exists():
        seen = _contents(final)
        assert {seen.get("model.pt"), seen.get("config.json")} in ({"old"}, {"new"})
    recover_folder(final, keep=lambda name: name.startswith("user_"))
    assert not old_path_of(final).exists()
    assert _contents(final) == {"config.json": "new", "model.pt": "new", "user_notes.txt": "mine"} or (
        step == 1 and _contents(final) == {"config.json": "old", "model.pt": "old", "user_notes.txt": "mine"})


def test_publish_into_a_new_place(tmp_path):
    staging = _folder(tmp_path / ".x.new", {"a": "1"})
    publish_folder(staging, tmp_path / "x")
    assert _contents(tmp_path / "x") == {"a": "1"} and not staging.exists()


# ------------------------------------------------------------------------------ the lock, two processes

HOLD = """
import sys, time
from utils.locks import OutputLock
with OutputLock(sys.argv[1], "run folder"):
    open(sys.argv[2], "w").close()
    time.sleep(60)
"""


def _holder(tmp_path, target):
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target), str(ready)], env=env)
    for _ in range(600):
        if ready.exists():
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the lock-holding process did not start")


def test_lock_refuses_a_second_process_and_names_the_owner(tmp_path):
    target = tmp_path / "runs" / RUN
    proc = _holder(tmp_path, target)
    try:
        with pytest.raises(DUCHError, match=f"being written by process {proc.pid} on .*remove {lock_path_of(target)}"):
            OutputLock(target, "run folder").acquire()
        assert json.loads(lock_path_of(target).read_text())["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with OutputLock(target, "run folder") as lock:  # the owner is gone (killed): its lock is taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock_path_of(target).exists()


def test_second_training_of_the_same_run_is_refused(demo_features, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["--dataset", "demo", "--bit", "8", "--data-dir", str(demo_features), "--out-dir", str(out), "--epochs", "1",
            "--batch-size", "32"]
    with OutputLock(out / RUN, "run folder"):  # as if another process were training it
        with pytest.raises(SystemExit) as exit_info:
            run_main(*argv)
        assert exit_info.value.code == 2 and f"being written by process {os.getpid()}" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            run_main(*argv, "--test")
    assert not (out / RUN).exists()


# ------------------------------------------------------------------------------ main.py --overwrite

def test_overwrite_replaces_the_run_and_keeps_the_users_files(demo_features, tmp_path):
    out = tmp_path / "runs"
    argv = ["--dataset", "demo", "--bit", "8", "--data-dir", str(demo_features), "--out-dir", str(out), "--epochs", "1",
            "--batch-size", "32"]
    run_main(*argv)
    run = out / RUN
    (run / "notes.txt").write_text("mine")
    (run / "index").mkdir()
    (run / "index" / "manifest.json").write_text("{}")
    old_config = json.loads((run / "config.json").read_text())
    run_main(*argv, "--overwrite", "--seed", "7")
    assert json.loads((run / "config.json").read_text())["seed"] == 7 != old_config["seed"]
    assert (run / "notes.txt").read_text() == "mine" and (run / "index" / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in out.iterdir()) == [RUN]  # no .old, no staging folder, no lock


def test_failed_first_training_removes_only_its_own_files(demo_features, tmp_path, monkeypatch):
    from utils.train.trainer import DUCHTrainer

    out = tmp_path / "runs"

    def keep_a_note(*args, **kwargs):  # a user file appears in the run folder while it trains
        (out / RUN / "notes.txt").write_text("mine")
        raise KeyboardInterrupt

    monkeypatch.setattr(DUCHTrainer, "train_epoch", keep_a_note)
    with pytest.raises(SystemExit):
        run_main("--dataset", "demo", "--bit", "8", "--data-dir", str(demo_features), "--out-dir", str(out),
                 "--epochs", "1")
    assert sorted(p.name for p in (out / RUN).iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------ search.py index: manifest of digests

def test_index_with_a_file_of_another_build_is_refused(tiny_run, tmp_path):
    import shutil

    from utils.search.query import SearchIndex

    index = tmp_path / "index"
    shutil.copytree(tiny_run["index"], index)
    manifest = json.loads((index / "manifest.json").read_text())
    assert set(manifest["digests"]) == {n for segments in manifest["segments"].values() for record in segments
                                        for n in record["files"].values()}
    SearchIndex.open(index)
    os.utime(index / "codes_images.npy", ns=(1, 1))  # touched, same content: the digest decides, and it matches
    assert manifest["digests"]["codes_images.npy"]["mtime_ns"] != 1
    SearchIndex.open(index)
    codes = np.load(index / "codes_images.npy")
    np.save(index / "codes_images.npy", codes ^ 1)  # same shape, other bits: a file of another build
    with pytest.raises(DUCHError, match="codes_images.npy is not the file the manifest was written with"):
        SearchIndex.open(index)


def test_interrupted_index_overwrite_leaves_no_old_manifest(tiny_run, tmp_path, monkeypatch, capsys):
    import shutil

    import search
    from utils.search import index as index_module

    index = tmp_path / "index"
    shutil.copytree(tiny_run["index"], index)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module.writer, "write_fresh_metadata", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        search.main(search.get_args_parser().parse_args(
            ["index", "--run", str(tiny_run["run"]), "--out", str(index), "--overwrite", "--no-progress"]))
    assert exit_info.value.code == 130
    assert not (index / "manifest.json").exists() and not lock_path_of(index).exists()
    with pytest.raises(SystemExit):
        search.main(search.get_args_parser().parse_args(
            ["query", "--index", str(index), "--row", "0", "--modality", "image"]))
    assert "no finished index" in capsys.readouterr().err


# ------------------------------------------------------------------------------ hidden .tmp files

def test_tmp_files_of_dead_writers_are_removed(tmp_path):
    from utils.io import write_text

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.json.{dead.pid}.abc123.tmp"
    live = tmp_path / f".out.json.{os.getpid()}.abc123.tmp"
    stale.write_text("half")
    live.write_text("being written")
    write_text(tmp_path / "out.json", "{}")
    assert not stale.exists() and live.exists() and (tmp_path / "out.json").read_text() == "{}"


# ------------------------------------------------------------------------------ a full disk, named


def test_a_full_disk_names_the_output_and_keeps_the_old_file(tmp_path, monkeypatch):
    """A write that fails half-way (no space left) names the file being written, keeps the previous version, and
    torch.save's RuntimeError for the same failure becomes one line that says what to do."""
    import errno

    import torch

    from utils.errors import DUCHError, describe_os_error
    from utils.io import atomic_path
    from utils.train.checkpoints import save_checkpoint

    out = tmp_path / "metrics.json"
    out.write_text("old")
    with pytest.raises(OSError) as err:
        with atomic_path(out) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
                raise OSError(errno.ENOSPC, "No space left on device")  # what a write on a full disk raises
    assert err.value.filename == str(out) and out.read_text() == "old"
    assert describe_os_error(err.value) == f"No space left on device: {out}; free some space and run the same " \
                                           f"command again"
    ckpt = tmp_path / "checkpoint_last.pt"
    save_checkpoint(ckpt, {"epoch": 1})
    before = ckpt.read_bytes()

    def full(payload, path):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DUCHError, match=f"cannot write checkpoint {ckpt} .*the disk may be full.*--resume"):
        save_checkpoint(ckpt, {"epoch": 2})
    assert ckpt.read_bytes() == before and len(list(tmp_path.iterdir())) == 2
