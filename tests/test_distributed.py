"""torchrun on CPU (gloo, 2 ranks): training, images_augment.py, captions_embed.py and search.py index give what
one process gives. One test launches the real ``torchrun``; the others fork the ranks torchrun would start
(``ranks()``: the same environment variables and process group, a second where a launch takes ten)."""
import json
import multiprocessing
import os
import shutil
import socket
import sys
import traceback
from pathlib import Path

import h5py
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


def _print_to(stdout_path: Path | None, stderr_path: Path | None) -> None:
    """In a process forked from the test process: file descriptors 1 and 2 go to these files (None: kept, as
    with a rank whose output is not captured), and sys.stdout/sys.stderr write to them again (the test
    process's are pytest's capture objects)."""
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        if path is not None:
            with open(path, "a") as f:
                os.dup2(f.fileno(), fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def _torchrun_agent(out: Path, argv: list[str]) -> None:
    _print_to(out / "stdout.txt", out / "stderr.txt")
    os.chdir(ROOT)
    os.environ.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    from torch.distributed.run import main as torchrun_main  # what the ``torchrun`` command runs

    torchrun_main(argv)


def start_torchrun(out: Path, script: str, *argv, nproc=2) -> multiprocessing.Process:
    """``torchrun --nproc_per_node=NPROC SCRIPT ARGV`` in the background; stdout and stderr go to files in ``out``.

    The launcher (torchrun's elastic agent, ``torch.distributed.run.main``) runs in a process forked from this
    one, with torch imported already: a fresh ``torchrun`` spends 3.5 s of CPU importing it. The ranks it starts
    are new ``python -u SCRIPT`` processes, as always."""
    argv = ["--standalone", f"--nproc_per_node={nproc}", str(ROOT / script), *map(str, argv)]
    agent = multiprocessing.get_context("fork").Process(target=_torchrun_agent, args=(out, argv), daemon=True)
    agent.start()
    return agent


def wait_for_torchrun(agent: multiprocessing.Process, out: Path) -> str:
    """Waits for the launch; returns its stdout, or fails with the end of both streams."""
    try:
        agent.join(timeout=300)
    finally:
        if agent.is_alive():
            agent.kill()
            agent.join()
    stdout, stderr = (out / "stdout.txt").read_text(), (out / "stderr.txt").read_text()
    assert agent.exitcode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def _rank_main(rank, world, port, work, argv, capture_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    printed = None if capture_dir is None else Path(capture_dir) / f"rank{rank}.txt"  # as torchrun would show it
    _print_to(printed, printed)
    torch.set_num_threads(1)  # one thread: no OpenMP team is ever started in a rank
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(1)
    code = 0
    try:
        work(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def ranks(work, argv, world=2, capture_dir=None):
    """Run ``work(argv)`` in the ranks torchrun would start (its environment variables, a gloo process group);
    returns their exit codes. With ``capture_dir``, rank r's stdout and stderr go to ``capture_dir/rank{r}.txt``.

    The ranks are forked from this process, with everything imported already: a tenth of a second where a
    torchrun launch takes ten, mostly importing torch. That is safe here: each rank runs one torch thread, and
    no thread pool outlives a call in the parent (numba's kernels run on short-lived Python threads).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_rank_main,
                             args=(rank, world, port, work, list(argv), capture_dir)) for rank in range(world)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    for proc in procs:
        if proc.exitcode is None:  # hung: no rank outlives its test
            proc.kill()
            proc.join()
    return [proc.exitcode for proc in procs]


def _run_main(argv):
    run_main(*argv)


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


# The real launch takes about 10 s, mostly the two ranks importing torch, while the test process mostly
# uses one core: it starts in the background at the session's first test (tests/conftest.py) and the test
# below collects it.
LAUNCHED: dict = {}
QUIRK_ROUTE = ("--original-quirks", "--img-aug", "each_img_random")  # train-mode batch norm, a random set per image


def launch_torchrun_images(tmp_path_factory) -> None:
    from utils.demo.scenes import make_demo_dataset

    root = tmp_path_factory.mktemp("torchrun")
    images = make_demo_dataset(root / "images", images_per_class=2)  # 12 images
    two_dir = copy_dataset(images, root / "two")
    LAUNCHED["images"] = (start_torchrun(root, "images_augment.py", *encode_argv(two_dir, *QUIRK_ROUTE)), root, images)


def stop_launched() -> None:
    for agent, *_ in LAUNCHED.values():
        if agent.is_alive():
            agent.kill()
            agent.join()
    LAUNCHED.clear()


def test_torchrun_images_equal_one_process(tmp_path_factory):
    """The real launcher, ``torchrun --nproc_per_node=2 images_augment.py``, on the quirk route (train-mode
    batch norm, each_img_random), bitwise equal to one process. The default route on 2 ranks is checked
    against one process by test_images_resume_from_the_ranks_part_files."""
    if "images" not in LAUNCHED:
        launch_torchrun_images(tmp_path_factory)
    proc, root, images = LAUNCHED.pop("images")
    one_dir = copy_dataset(images, root / "one")
    one_process_features(one_dir, *QUIRK_ROUTE)
    stdout = wait_for_torchrun(proc, root)
    assert_same_features(one_dir, root / "two", "image_emb_DEMO_aug_each_img_random.h5")
    assert stdout.count("wrote ") == 1  # rank 0 alone reports


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
        assert shard_sizes(n, world) == [b - a for a,
                                         b in bounds] and max(shard_sizes(n, world)) - min(shard_sizes(n, world)) <= 1


def test_two_ranks_train_as_one_process(one_process, demo_features, tmp_path):
    out = tmp_path / "two"
    assert ranks(_run_main, train_args(demo_features, out, *ARGS), capture_dir=tmp_path) == [0, 0]
    run_dir = out / RUN
    assert_same_training(one_process, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["world_size"], config["backend"]) == (2, "gloo")
    assert json.loads((one_process / "config.json").read_text())["world_size"] == 1
    printed = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert printed[0].count("training done") == 1 and "training done" not in printed[1]  # rank 0 alone logs
    assert (run_dir / "train.log").read_text().count("epoch 3/3") == 1
    # the one-process --test evaluates the 2-rank checkpoint to the 2-rank run's metrics
    saved = json.loads((run_dir / "metrics.json").read_text())
    again = run_main(*train_args(demo_features, out, *ARGS, "--test"))
    assert again["map@20"] == saved["map@20"]


def test_resume_under_torchrun(one_process, demo_features, tmp_path):
    """One process trains 2 epochs; 2 ranks resume it to 3: the same as 3 epochs in one process."""
    out = tmp_path / "resumed"
    run_main(*train_args(demo_features, out, *ARGS, "--epochs", "2"))
    assert ranks(_run_main, train_args(demo_features, out, *ARGS, "--resume")) == [0, 0]
    assert_same_training(one_process, out / RUN)
    config = json.loads((out / RUN / "config.json").read_text())
    assert config["world_size"] == 1 and config["resumed"][0]["world_size"] == 2


def test_test_is_refused_under_torchrun(demo_features, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exc:
        run_main(*train_args(demo_features, tmp_path, "--test"))
    assert exc.value.code == 2 and "python main.py --test, not torchrun" in capsys.readouterr().err


# ---- images_augment.py ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from utils.demo.scenes import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("images"), images_per_class=2)  # 12 images


def encode_argv(data_dir, *extra) -> list[str]:
    return ["--dataset", "demo", "--data-dir", str(data_dir), "--weights", "none", "--num-workers", "0",
            "--no-progress",
            "--batch-size", "5", *extra]


def encode(data_dir, *extra):
    import warnings

    import images_augment

    args = images_augment.get_args_parser().parse_args(encode_argv(data_dir, *extra))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # --weights none
        return images_augment.main(args)


def _encode_but_the_merge_dies(argv):
    from utils.preprocess import image_features

    def merge_dies(*args, **kwargs):
        raise KeyboardInterrupt

    image_features._merge_parts = merge_dies
    encode(*argv)


def one_process_features(data_dir, *extra):
    """One process, one thread: CPU convolutions round alike only with the same thread count (torchrun's ranks
    have 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return read_with_attrs(encode(data_dir, *extra))
    finally:
        torch.set_num_threads(threads)


def read_with_attrs(path):
    with h5py.File(path, "r") as f:
        return f["image_emb"][()], dict(f["image_emb"].attrs)


def copy_dataset(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.h5", ".*"))
    return dst


def assert_same_features(one_dir: Path, two_dir: Path, name: str):
    one, one_attrs = read_with_attrs(one_dir / name)
    two, two_attrs = read_with_attrs(two_dir / name)
    assert np.array_equal(one, two)
    assert (one_attrs["world_size"], two_attrs["world_size"]) == (1, 2)
    differ = {k for k in one_attrs if str(one_attrs[k]) != str(two_attrs[k])}
    assert differ <= {"world_size", "dataset_json", "versions"}
    assert sorted(p.name for p in two_dir.iterdir()) == sorted(["DEMO.json", "images", name])  # no part file left


def _encode_reading_no_image(argv):
    from utils.data.images import ImageDataset

    def no_reading(self, index):
        raise AssertionError(f"image {index} was read again")

    ImageDataset.__getitem__ = no_reading
    encode(*argv)


def test_images_resume_from_the_ranks_part_files(images, tmp_path):
    """Both ranks finish their part files, then the merge dies: the rerun encodes nothing and merges them."""
    data = copy_dataset(images, tmp_path / "data")
    codes = ranks(_encode_but_the_merge_dies, [data])
    assert codes[0] == 130 and codes[1] not in (0, None)  # rank 1 waits for rank 0 at the end, and fails with it
    parts = sorted(p.name for p in data.glob(".*part-*"))
    assert parts == [".image_emb_DEMO_aug_no_aug.h5.part-0-of-2.npz", ".image_emb_DEMO_aug_no_aug.h5.part-1-of-2.npz"]
    assert ranks(_encode_reading_no_image, [data]) == [0, 0]  # both shards come from the part files
    one, _ = one_process_features(copy_dataset(images, tmp_path / "one"))
    assert np.array_equal(read_with_attrs(data / "image_emb_DEMO_aug_no_aug.h5")[0], one)
    assert not list(data.glob(".*part-*"))


# ---- captions_embed.py ---------------------------------------------------------------------------------
def _embed(argv):
    import captions_embed

    return captions_embed.main(captions_embed.get_args_parser().parse_args(argv))


@pytest.mark.parametrize("quirks", [False, True], ids=["default", "quirks"])
def test_caption_embeddings_from_two_ranks_equal_one_process(tmp_path, quirks):
    """15 captions in batches of 4 sorted by length (default) or in order (quirk): 2 + 2 batches per rank."""
    from tests.test_captions_embed import make_json, read
    from tests.tiny_bert import save_tiny_bert

    model = save_tiny_bert(tmp_path / "bert", num_layers=4)
    dirs = {}
    for name in ("one", "two"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        make_json(dirs[name] / "augmented_UCM.json", with_aug=True)

    def argv(data_dir):
        return ["--data-dir", str(data_dir), "--model", str(model), "--device", "cpu", "--batch-size", "4",
                "--no-progress",
                *(["--original-quirks"] if quirks else [])]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outputs = _embed(argv(dirs["one"]))
    finally:
        torch.set_num_threads(threads)
    assert ranks(_embed, argv(dirs["two"])) == [0, 0]
    assert set(outputs) == {"raw", "aug_rb"}
    for path in outputs.values():
        one, one_attrs, _ = read(path)
        two, two_attrs, _ = read(dirs["two"] / path.name)
        assert np.array_equal(one, two), path.name
        assert (one_attrs["world_size"], two_attrs["world_size"]) == (1, 2)
    assert not list(dirs["two"].glob(".*part-*"))


# ---- search.py index --image-dir -----------------------------------------------------------------------
def _search(argv):
    from tests.test_search import run_search

    run_search(*argv)


def test_search_index_image_dir_from_two_ranks_equals_one_process(tiny_run, tmp_path):
    """5 new images in shards of 2: rank 0 encodes shards 0 and 1, rank 1 shard 2; rank 0 builds the index."""
    from tests.test_search import _image_dir

    folder = _image_dir(tmp_path, tiny_run["data"])
    args = ["index", "--run", str(tiny_run["run"]), "--image-dir", str(folder), "--shard-size", "2", "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _search([*args, "--out", str(tmp_path / "one")])
    finally:
        torch.set_num_threads(threads)
    assert ranks(_search, [*args, "--out", str(tmp_path / "two")]) == [0, 0]
    one, two = tmp_path / "one", tmp_path / "two"
    assert (two / "manifest.json").is_file()
    for name in ("codes_images.npy", "outputs_images.npy", "index_images.faiss", "codes_captions.npy",
                 *(f"image_dir_features/shard_00000{i}.npy" for i in range(3))):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    from tests.conftest import index_rows

    assert index_rows(one, "images") == index_rows(two, "images")


# ---- one step's gradients --------------------------------------------------------------------------------
# Adam is blind to the scale of a gradient (a mean where a sum belongs trains alike): so the gradients
# themselves are compared, after one step on 11 rows (6 + 5 on 2 ranks), batch norm included.
STEP_ROWS = [9, 2, 14, 0, 7, 11, 3, 15, 5, 12, 1]


def _step_trainer(trainer_class):
    from configs.train import TrainConfig
    from utils.retrieval.evaluation import EvalSet

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    views = {"i1": torch.randn(16, 12, generator=g), "i2": torch.randn(16, 12, generator=g),
             "t1": torch.randn(16, 20, generator=g), "t2": torch.randn(16, 20, generator=g)}
    empty = EvalSet(torch.zeros(0, 12), torch.zeros(0, 20), torch.zeros(0))
    trainer = trainer_class(TrainConfig(bit=8), views, empty, empty, torch.device("cpu"))
    losses = trainer._train_step(torch.tensor(STEP_ROWS))
    state = {name: p.grad.clone() for name, p in trainer.model.named_parameters()}
    state.update({f"buffer {name}": b.clone() for name, b in trainer.model.named_buffers()})
    return losses, state, trainer


def _distributed_step(argv):
    from utils import distributed
    from utils.train.distributed_trainer import DistributedDUCHTrainer

    distributed.init_from_env("cpu")
    try:
        losses, state, trainer = _step_trainer(DistributedDUCHTrainer)
        if distributed.context().is_main:
            torch.save({"losses": losses, "state": state, "B": trainer.B, "buffers": trainer.buffers}, argv[0])
    finally:
        distributed.shutdown()


def test_one_step_gradients_of_two_ranks_equal_one_process(tmp_path):
    from utils.train.trainer import DUCHTrainer

    losses, state, trainer = _step_trainer(DUCHTrainer)
    assert ranks(_distributed_step, [str(tmp_path / "two.pt")]) == [0, 0]
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for term, value in losses.items():
        assert two["losses"][term] == pytest.approx(value, rel=1e-5), term
    assert set(two["state"]) == set(state)  # parameters and buffers of the same names: checkpoints interchange
    # the biases before batch norm have a zero gradient, up to rounding: tolerances on the largest gradient's scale
    scale = max(value.abs().max().item() for value in state.values())
    for name, value in state.items():
        assert torch.allclose(two["state"][name], value, rtol=1e-4, atol=1e-6 * scale), name
    for view, buffer in trainer.buffers.items():
        assert torch.allclose(two["buffers"][view], buffer, atol=1e-6), view
    assert torch.equal(two["B"], trainer.B)
