"""Shared fixtures: small synthetic feature sets in the on-disk format of SPEC section 1."""
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
