"""Facts about the supported datasets: one place for names, class counts and folder layouts."""
from __future__ import annotations

from dataclasses import dataclass

from configs.errors import DUCHError, did_you_mean

CAPTIONS_PER_IMAGE = 5


@dataclass(frozen=True)
class DatasetInfo:
    key: str  # the CLI name: ucm, rsicd, demo
    name: str  # the upper-case name used in file names: UCM, RSICD, DEMO
    num_classes: int
    num_images: int | None  # expected size of the real dataset (None: any)
    image_ext: str
    image_dir: str  # default image folder, relative to the data folder
    default_data_dir: str = "data"  # default --data-dir (JSON and feature files live here)
    # widths of the paper's features (ResNet18, BERT-base): an expectation, not a rule. Any width trains
    # as long as the base and augmented files of one modality agree (None: no expectation)
    image_dim: int | None = 512
    caption_dim: int | None = 768
    synthetic: bool = False
    # the dataset's documented label rule: False = every image carries an integer ``classcode``;
    # True = when no image carries one, the class is the file name before its last '_' (docs/formats.md)
    labels_from_filenames: bool = False
    # the original release's images_augment.py batch (its training-mode batch norm depends on it)
    original_image_batch_size: int = 525


DATASETS: dict[str, DatasetInfo] = {
    # UCM captions release: images 1.tif ... 2100.tif in one folder
    "ucm": DatasetInfo("ucm", "UCM", 21, 2100, ".tif", "UCM_captions/imgs", original_image_batch_size=525),
    # RSICD release: images <class>_<n>.jpg in one folder
    "rsicd": DatasetInfo(
        "rsicd", "RSICD", 31, 10921, ".jpg", "RSICD_images", original_image_batch_size=500, labels_from_filenames=True,
    ),
    # generated offline demo in the UCM layout; encoders available offline decide the widths
    "demo": DatasetInfo(
        "demo", "DEMO", 6, None, ".png", "images", default_data_dir="data/demo",
        image_dim=None, caption_dim=None, synthetic=True,
        original_image_batch_size=150,  # a quarter of the default demo (600 images), as 525 is of UCM
    ),
}


def get_dataset(key: str) -> DatasetInfo:
    """Look a dataset up by its CLI name (case-insensitive); unknown names are a clear error."""
    info = DATASETS.get(str(key).lower())
    if info is None:
        raise DUCHError(f"unknown dataset {key!r}{did_you_mean(key, DATASETS)}; choose one of: {', '.join(DATASETS)}")
    return info
