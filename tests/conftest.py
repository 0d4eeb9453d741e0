"""Shared fixtures: small synthetic feature sets in the on-disk format of docs/formats.md."""
import struct
import zlib

import pytest
import tqdm

# tests/test_distributed.py forks its ranks from this process: tqdm must start no monitor thread (a thread
# holding a lock at the fork would leave it held in the child)
tqdm.tqdm.monitor_interval = 0

from configs.datasets import get_dataset
from utils.demo.synthetic import make_synthetic_features

SMALL = dict(n_images=120, n_classes=4, image_dim=24, caption_dim=40, seed=1)


@pytest.fixture(scope="session")
def demo_features(tmp_path_factory):
    """A small class-structured 'demo' dataset (any feature width is allowed for demo)."""
    data_dir = tmp_path_factory.mktemp("demo_features")
    make_synthetic_features(get_dataset("demo"), data_dir, **SMALL)
    return data_dir


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


ONE_PIXEL_PNG = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
                 + _png_chunk(b"IDAT", zlib.compress(b"\x00\x00")) + _png_chunk(b"IEND", b""))
RENDER_PLOTS = [False]  # set while a test marked render_plots runs


@pytest.fixture(scope="session", autouse=True)
def _plots_built_not_drawn():
    """Every run writes three PNGs, and drawing them took a quarter of the suite's time. Outside the tests
    marked ``render_plots`` a figure is built as usual (every artist, legend and label) but saved as a
    one-pixel PNG, so the run's files and plot labels are still tested; the marked tests draw for real.
    The ranks tests/test_distributed.py forks inherit this."""
    from matplotlib.figure import Figure

    real_savefig = Figure.savefig

    def savefig_unrendered(self, fname, *args, **kwargs):
        if RENDER_PLOTS[0]:
            return real_savefig(self, fname, *args, **kwargs)
        if hasattr(fname, "write"):
            fname.write(ONE_PIXEL_PNG)
        else:
            with open(fname, "wb") as f:
                f.write(ONE_PIXEL_PNG)

    Figure.savefig = savefig_unrendered
    yield
    Figure.savefig = real_savefig


@pytest.fixture(scope="session", autouse=True)
def _random_resnet18_built_once_per_rng_state():
    """``--weights none`` builds torchvision's ResNet18 with random weights drawn from torch's generator: 45
    builds took 6 s of a run. torchvision's ``resnet18(weights=None)`` is memoised here by the generator's
    state: a repeat returns a copy of the same model and leaves the generator where the build would have
    left it, so the caller gets exactly what a real build gives. Other calls (weights, the meta device
    that a weights file is loaded on, other arguments) go to torchvision."""
    import copy
    import hashlib

    import torch
    import torchvision.models

    real = torchvision.models.resnet18
    built = {}

    def resnet18(*args, **kwargs):
        if args or kwargs != {"weights": None} or torch.empty(0).device.type != "cpu":
            return real(*args, **kwargs)
        key = hashlib.sha256(torch.random.get_rng_state().numpy().tobytes()).digest()
        if key not in built:
            model = real(weights=None)
            built[key] = (copy.deepcopy(model), torch.random.get_rng_state())
            return model
        model, state_after = built[key]
        torch.random.set_rng_state(state_after)
        return copy.deepcopy(model)

    torchvision.models.resnet18 = resnet18
    yield built
    torchvision.models.resnet18 = real


@pytest.fixture(autouse=True)
def _render_plots_when_marked(request):
    if request.node.get_closest_marker("render_plots") is None:
        yield
        return
    RENDER_PLOTS[0] = True
    try:
        yield
    finally:
        RENDER_PLOTS[0] = False


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """12 generated demo images, ResNet18 (random weights) features, tiny-BERT caption features, 2 epochs, and
    the search index of that run: read, never changed, by tests/test_search.py and tests/test_distributed.py."""
    import captions_embed
    import images_augment
    from tests.test_search import BIT, run_search
    from tests.tiny_bert import save_tiny_bert
    from utils.demo.scenes import make_demo_dataset

    root = tmp_path_factory.mktemp("search")
    data = make_demo_dataset(root / "data", images_per_class=2)
    bert = save_tiny_bert(root / "bert")
    common = ["--dataset", "demo", "--data-dir", str(data), "--device", "cpu", "--no-progress"]
    with pytest.warns(UserWarning, match="RANDOM"):
        images_augment.main(images_augment.get_args_parser().parse_args(
            [*common, "--img-aug", "center_crop_only", "--weights", "none", "--num-workers", "0"]))
    captions_embed.main(captions_embed.get_args_parser().parse_args([*common, "--model", str(bert)]))
    run_main("--dataset", "demo", "--preset", "no_aug", "--data-dir", str(data), "--out-dir", str(root / "runs"),
             "--bit", str(BIT), "--epochs", "2", "--batch-size", "4", "--valid-freq", "1")
    run_dir = root / "runs" / f"demo_{BIT}_test_no_aug"
    run_search("index", "--run", run_dir, "--no-progress")
    return {"root": root, "data": data, "run": run_dir, "index": run_dir / "index", "bert": bert}


@pytest.fixture(scope="session", autouse=True)
def _real_torchrun_launch_in_background(request, tmp_path_factory):
    """tests/test_distributed.py's one real torchrun launch starts with the session and runs alongside it."""
    launch = "tests/test_distributed.py::test_torchrun_images_equal_one_process"
    if not any(item.nodeid == launch for item in request.session.items):
        yield
        return
    from tests.test_distributed import launch_torchrun_images, stop_launched

    launch_torchrun_images(tmp_path_factory)
    yield
    stop_launched()


def main_args(*argv):
    import main

    return main.get_args_parser().parse_args(list(argv))


def run_main(*argv):
    import main

    return main.main(main_args(*argv))


def count_image_reads(monkeypatch, interrupt_on: int | None = None) -> list:
    """Record every image ImageDataset reads (the returned list); raise Ctrl-C at read number ``interrupt_on``."""
    from utils.data.images import ImageDataset

    original_getitem, calls = ImageDataset.__getitem__, []

    def getitem(self, index):
        calls.append(index)
        if len(calls) == interrupt_on:
            raise KeyboardInterrupt
        return original_getitem(self, index)

    monkeypatch.setattr(ImageDataset, "__getitem__", getitem)
    return calls


# Garbage collection: Python's automatic collections walked the whole heap that torch and transformers
# build, again and again (5.2 s of a run, 3.0 s with freezing alone). In the session they are off; the
# garbage is collected at the end of each test module (so a module's cyclic garbage is all that can pile
# up: the peak memory of a run did not change, 1.4 GB) and what lives then is frozen, so that later
# collections skip it. Collections now take about 1 s of a run.
def _collect_then_freeze():
    import gc

    gc.collect()
    gc.freeze()


_COMPILING = {}  # the background process that compiles the numba kernels, while the session starts


def pytest_sessionstart(session):
    import gc

    gc.disable()  # automatic collections off (above)
    _compile_numba_kernels_in_background()


def _compile_numba_kernels_in_background():
    """Compiling the numba kernels (the evaluation's and the exact search's) takes about 30 s of one core on a
    fresh clone (a cached load takes one second). A process does it from the start of the session, beside the
    collection and the first modules, which leave the second core mostly idle; the first kernel call in this
    process waits for it rather than compiling the same code a second time."""
    import importlib.util
    import os
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("numba") is None:
        return
    from utils.retrieval import counting as metrics

    _COMPILING["proc"] = subprocess.Popen(
        [sys.executable, "-c", "from utils.retrieval.counting import compile_numba_kernels; compile_numba_kernels(); "
                               "from utils.search.mih import compile_kernels; compile_kernels()"],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _COMPILING["pid"] = os.getpid()
    numba_module = metrics._numba_module

    def numba_module_once_compiled():
        proc = _COMPILING.get("proc")
        if proc is not None and os.getpid() == _COMPILING["pid"]:  # not in a rank forked from here
            _, err = proc.communicate()
            assert proc.returncode == 0, f"compiling the numba kernels failed:\n{err.decode()[-3000:]}"
            del _COMPILING["proc"]
        return numba_module()

    metrics._numba_module = numba_module_once_compiled
    from utils.search import mih

    mih_kernels = mih._numba_kernels

    def mih_kernels_once_compiled():
        numba_module_once_compiled()
        return mih_kernels()

    mih._numba_kernels = mih_kernels_once_compiled


def pytest_collection_finish(session):
    _collect_then_freeze()


@pytest.fixture(scope="module", autouse=True)
def _freeze_what_each_module_leaves():
    yield
    _collect_then_freeze()


def pytest_sessionfinish(session):
    proc = _COMPILING.pop("proc", None)
    if proc is not None:  # no test scored codes
        proc.kill()
        proc.wait()
    _collect_then_freeze()
    import gc

    gc.enable()


def index_rows(index_dir, modality: str) -> list[dict]:
    """Every metadata row of an index folder, read through the index."""
    from utils.search.query import SearchIndex

    index = SearchIndex.open(index_dir)
    return [index.metadata[modality][r] for r in range(index.size(modality))]
