"""torchrun training on CPU (gloo, 2 ranks spawned by the test) equals one process on the same global batch."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_main
from tests.test_main import train_args
from utils.distributed import shard_bounds, shard_sizes

ROOT = Path(__file__).resolve().parents[1]
RUN = "demo_8_test_default"
# 60 training rows in batches of 25, 25, 10: uneven shards (13 + 12, 5 + 5) on 2 ranks
ARGS = ("--batch-size", "25", "--valid-freq", "1")
RTOL = 1e-4


def torchrun(*argv, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "main.py"), *argv],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _rank_main(rank, world, port, argv):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        run_main(*argv)
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    os._exit(0)


def forked_ranks(*argv, world=2):
    """The ranks torchrun would start, forked from this process (torch already imported: a second, not ten)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=_rank_main, args=(rank, world, port, argv)) for rank in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0] * world


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def assert_same_training(one: Path, two: Path):
    h1, h2 = history(one), history(two)
    assert [r["epoch"] for r in h1] == [r["epoch"] for r in h2]
    for a, b in zip(h1, h2):
        assert a["lr"] == b["lr"]
        for term, value in a["loss"].items():
            assert b["loss"][term] == pytest.approx(value, rel=RTOL), (a["epoch"], term)
    assert (one / "split.json").read_text() == (two / "split.json").read_text()
    c1, c2 = np.load(one / "codes.npz"), np.load(two / "codes.npz")
    for key in ("q_img", "q_txt", "db_img", "db_txt", "q_rows", "db_rows"):
        assert np.array_equal(c1[key], c2[key]), key


@pytest.fixture(scope="module")
def one_process(demo_features, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    run_main(*train_args(demo_features, out, *ARGS))
    return out / RUN


def test_shards_are_contiguous_and_cover_the_rows():
    for n, world in ((25, 2), (10, 4), (3, 4), (7, 3)):
        bounds = [shard_bounds(n, world, r) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert shard_sizes(n, world) == [b - a for a, b in bounds] and max(shard_sizes(n, world)) - min(shard_sizes(n, world)) <= 1


def test_two_ranks_train_as_one_process(one_process, demo_features, tmp_path):
    out = tmp_path / "two"
    proc = torchrun(*train_args(demo_features, out, *ARGS))
    run_dir = out / RUN
    assert_same_training(one_process, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["world_size"], config["backend"]) == (2, "gloo")
    assert json.loads((one_process / "config.json").read_text())["world_size"] == 1
    assert proc.stdout.count("training done") == 1  # rank 0 alone logs
    assert (run_dir / "train.log").read_text().count("epoch 3/3") == 1
    # the one-process --test evaluates the 2-rank checkpoint to the 2-rank run's metrics
    saved = json.loads((run_dir / "metrics.json").read_text())
    again = run_main(*train_args(demo_features, out, *ARGS, "--test"))
    assert again["map@20"] == saved["map@20"]


def test_resume_under_torchrun(one_process, demo_features, tmp_path):
    """One process trains 2 epochs; 2 ranks resume it to 3: the same as 3 epochs in one process."""
    out = tmp_path / "resumed"
    run_main(*train_args(demo_features, out, *ARGS, "--epochs", "2"))
    forked_ranks(*train_args(demo_features, out, *ARGS, "--resume"))
    assert_same_training(one_process, out / RUN)
    config = json.loads((out / RUN / "config.json").read_text())
    assert config["world_size"] == 1 and config["resumed"][0]["world_size"] == 2


def test_test_is_refused_under_torchrun(demo_features, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exc:
        run_main(*train_args(demo_features, tmp_path, "--test"))
    assert exc.value.code == 2 and "python main.py --test, not torchrun" in capsys.readouterr().err
