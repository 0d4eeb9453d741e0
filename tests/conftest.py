"""Shared fixtures: small synthetic feature sets in the on-disk format of SPEC section 1."""
import struct
import zlib

import pytest

from configs.datasets import get_dataset
from utils.synthetic import make_synthetic_features

SMALL = dict(n_images=120, n_classes=4, image_dim=24, caption_dim=40, seed=1)


@pytest.fixture(scope="session")
def demo_features(tmp_path_factory):
    """A small class-structured 'demo' dataset (any feature width is allowed for demo)."""
    data_dir = tmp_path_factory.mktemp("demo_features")
    make_synthetic_features(get_dataset("demo"), data_dir, **SMALL)
    return data_dir


def _one_pixel_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")


@pytest.fixture(scope="session", autouse=True)
def _plots_built_not_rendered():
    """Every run writes three PNGs, and drawing them takes a quarter of the suite's time. Outside the tests
    marked ``render_plots`` a figure is built as usual (every artist, legend and label) but saved as a
    one-pixel PNG, so the run's files and plot labels are still tested; the marked tests render for real."""
    from matplotlib.figure import Figure

    real_savefig = Figure.savefig

    def savefig_unrendered(self, fname, *args, **kwargs):
        if RENDER_PLOTS[0]:
            return real_savefig(self, fname, *args, **kwargs)
        if hasattr(fname, "write"):
            fname.write(_one_pixel_png())
        else:
            with open(fname, "wb") as f:
                f.write(_one_pixel_png())

    Figure.savefig = savefig_unrendered
    yield
    Figure.savefig = real_savefig


RENDER_PLOTS = [False]


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


def main_args(*argv):
    import main

    return main.get_args_parser().parse_args(list(argv))


def run_main(*argv):
    import main

    return main.main(main_args(*argv))


def count_image_reads(monkeypatch, interrupt_on: int | None = None) -> list:
    """Record every image ImageDataset reads (the returned list); raise Ctrl-C at read number ``interrupt_on``."""
    from utils.images import ImageDataset

    original_getitem, calls = ImageDataset.__getitem__, []

    def getitem(self, index):
        calls.append(index)
        if len(calls) == interrupt_on:
            raise KeyboardInterrupt
        return original_getitem(self, index)

    monkeypatch.setattr(ImageDataset, "__getitem__", getitem)
    return calls
