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
