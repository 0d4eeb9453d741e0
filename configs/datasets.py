"""Facts about the supported datasets: one place for names, class counts and folder layouts.

A dataset is named (``ucm``, ``rsicd``, ``rsitmd``, ``sydney``, ``nwpu``, ``demo``) or given as the path of
its captions JSON (``resolve_dataset``); docs/datasets.md describes the layouts and protocols.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from configs.errors import DUCHError, did_you_mean

CAPTIONS_PER_IMAGE = 5


@dataclass(frozen=True)
class DatasetInfo:
    key: str  # the CLI name: ucm, rsicd, demo (for a dataset given by its file: the lower-case name)
    name: str  # the name used in file names: UCM, RSICD, DEMO (for a file: its stem or --name)
    num_classes: int | None
    num_images: int | None  # expected size of the real dataset (None: any)
    image_ext: str
    image_dir: str  # default image folder, relative to the data folder
    default_data_dir: str = "data"  # default --data-dir (JSON and feature files live here)
    # widths of the paper's features (ResNet18, BERT-base): an expectation, not a rule. Any width trains
    # as long as the base and augmented files of one modality agree (None: no expectation)
    image_dim: int | None = 512
    caption_dim: int | None = 768
    synthetic: bool = False
    # the original release's images_augment.py batch (its training-mode batch norm depends on it)
    original_image_batch_size: int = 525
    # labels (utils/data/labels.py): "classcode" = every image carries one (UCM: else its id blocks; demo);
    # "filename" = classcode, else every file name's '<class>_' prefix (RSICD); "auto" = class fields, else
    # file-name prefixes, else none. --labels CSV wins over every rule
    label_rule: str = "classcode"
    default_split: str = "duch"  # the split protocol when --split is not given: duch or json
    json_names: tuple[str, ...] = ()  # other names of the release's captions JSON, read when NAME.json is absent
    json_path: str | None = None  # a dataset given by its file: the captions JSON itself
    captions_per_image: int | None = 5  # the count every image must have (None: any, ragged allowed)
    # a release whose classes are fixed by image id: file ``<id>.<ext>``, ids 1.. in blocks of ``block_size``
    # per class, in ``class_names`` order (UCM: 100 per class, the UC Merced order); used when no classcode
    block_size: int | None = None
    class_names: tuple[str, ...] = ()

    @property
    def from_file(self) -> bool:
        return self.json_path is not None


# the UC Merced Land Use classes in the order of the release's image ids (1-100 agricultural, 101-200 airplane, ...)
UCM_CLASSES = (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential", "forest",
    "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark", "overpass",
    "parkinglot", "river", "runway", "sparseresidential", "storagetanks", "tenniscourt",
)

DATASETS: dict[str, DatasetInfo] = {
    # UCM captions release: images 1.tif ... 2100.tif in one folder
    "ucm": DatasetInfo("ucm", "UCM", 21, 2100, ".tif", "UCM_captions/imgs", original_image_batch_size=525,
                       json_names=("dataset.json",), block_size=100, class_names=UCM_CLASSES),
    # RSICD release: images <class>_<n>.jpg in one folder
    "rsicd": DatasetInfo(
        "rsicd", "RSICD", 31, 10921, ".jpg", "RSICD_images", original_image_batch_size=500, label_rule="filename",
        json_names=("dataset_rsicd.json",),
    ),
    # RSITMD release: images <class>_<n>.tif in one folder, dataset_RSITMD.json with train/test splits
    "rsitmd": DatasetInfo(
        "rsitmd", "RSITMD", 32, 4743, ".tif", "images", original_image_batch_size=500, label_rule="auto",
        default_split="json", json_names=("dataset_RSITMD.json",),
        captions_per_image=None,
    ),
    # Sydney-Captions release: images 1.tif ... 613.tif in one folder, 7 classes not named in the JSON
    "sydney": DatasetInfo(
        "sydney", "SYDNEY", 7, 613, ".tif", "imgs", original_image_batch_size=500, label_rule="auto",
        default_split="json", json_names=("dataset.json",),
        captions_per_image=None,
    ),
    # NWPU-Captions release: object keyed by class, images in NWPU-RESISC45/<class>/<class>_<n>.jpg
    "nwpu": DatasetInfo(
        "nwpu", "NWPU", 45, 31500, ".jpg", "NWPU-RESISC45", original_image_batch_size=500, label_rule="auto",
        default_split="json", json_names=("dataset_nwpu.json",),
        captions_per_image=None,
    ),
    # generated offline demo in the UCM layout; encoders available offline decide the widths
    "demo": DatasetInfo(
        "demo", "DEMO", 6, None, ".png", "images", default_data_dir="data/demo",
        image_dim=None, caption_dim=None, synthetic=True,
        original_image_batch_size=150,  # a quarter of the default demo (600 images), as 525 is of UCM
    ),
}


SPLIT_PROTOCOLS = ("duch", "json", "file")


def is_dataset_file(value: str) -> bool:
    """A --dataset value that names a captions file or folder rather than a known dataset."""
    value = str(value)
    if value.lower() in DATASETS:
        return False
    return value.lower().endswith(".json") or "/" in value or "\\" in value or Path(value).is_dir()


def get_dataset(key: str, name: str | None = None) -> DatasetInfo:
    """Look a dataset up by its CLI name (case-insensitive) or by the path of its captions JSON.

    A path gives a dataset named after the file's stem (or ``name``): ``data/mine/captions.json`` ->
    ``captions``, feature files ``image_emb_captions_aug_no_aug.h5`` ... next to the JSON by default. A
    folder (precomputed caption lists, or a records file per part) is named after the folder and holds its
    feature files. Unknown names are a clear error.
    """
    if is_dataset_file(key):
        path = Path(key)
        if not path.exists():
            raise DUCHError(
                f"dataset file {path} not found (--dataset takes {', '.join(DATASETS)}, the path of a captions JSON, "
                f"or a folder of caption lists or records files)"
            )
        label = name or (path.name if path.is_dir() else path.stem)
        if not label or any(c in label for c in "/\\ "):
            raise DUCHError(f"--name {label!r}: a dataset name is used in file names; use letters, digits, '-' and '_'")
        return DatasetInfo(
            label.lower(), label, None, None, "", "images",
            default_data_dir=str(path if path.is_dir() else path.parent),
            image_dim=None, caption_dim=None, label_rule="auto", default_split="json", json_path=str(path),
            captions_per_image=None, original_image_batch_size=500,
        )
    info = DATASETS.get(str(key).lower())
    if info is None:
        raise DUCHError(
            f"unknown dataset {key!r}{did_you_mean(key, DATASETS)}; choose one of: {', '.join(DATASETS)}, "
            f"or give the path of a captions JSON"
        )
    return replace(info, name=name) if name else info
