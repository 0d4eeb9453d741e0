"""The data of one run: its feature files, labels, split and device tensors (``RunData``), what metrics.json
says about the protocol, and the warnings a run gives about its data and settings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from configs.datasets import get_dataset
from configs.train import TrainConfig
from utils.data.describe import lonely_queries
from utils.data.features import Features, load_features, resolve_files
from utils.data.splits import Split, resolve_split
from utils.errors import DUCHError
from utils.retrieval.evaluation import EvalSet, InstanceSet


def check_data_dir(cfg: TrainConfig, source: str = "--data-dir") -> None:
    """A mistyped --data-dir is reported, never created."""
    if not Path(cfg.data_dir).is_dir():
        raise DUCHError(f"data folder {cfg.data_dir} does not exist ({source}); it holds the dataset JSON and the "
                        "feature files")


def _training_warnings(cfg: TrainConfig, data: "RunData") -> list[str]:
    """Code lengths and batch sizes that train, but probably not as the user meant."""
    out = []
    if cfg.bit < 8:
        out.append(f"--bit {cfg.bit} is below 8: at most {2 ** cfg.bit} distinct codes to rank a database with; the "
                   "paper uses 16 to 128 bits")
    elif cfg.bit % 8:
        out.append(f"--bit {cfg.bit} is not a multiple of 8: packed codes fill whole bytes and the paper uses 16, 32, "
                   "64 or 128 bits")
    n_train = len(data.split.train)
    if cfg.batch_size > n_train:
        out.append(f"--batch-size {cfg.batch_size} is larger than the {n_train} training images: every epoch is one "
                   f"batch of {n_train}")
    return out


def run_warnings(cfg: TrainConfig, data: "RunData", trained: bool = True) -> list[str]:
    """Settings and data that run but probably not as the user meant: said on the console and kept in config.json.
    ``trained=False`` (the float reference, which makes no codes and no batches): those about the data only."""
    out = _training_warnings(cfg, data) if trained else []
    labels = data.features.labels
    if labels is None:
        why = LABEL_RULES if data.features.label_rule == "none" else "--labels none"
        return out + [f"the dataset has no labels ({why}): class-level metrics (mAP, P@K, PR) are skipped; "
                      f"instance-level recall is reported"] + data.features.warnings
    lonely = lonely_queries(labels, data.split)
    if lonely:
        out.append(lonely)
    return out + data.features.warnings


LABEL_RULES = "no class field in the JSON, no class prefix in the file names, no --labels CSV"


def split_protocol(cfg: TrainConfig) -> str:
    """--split, else the dataset's default (duch for UCM, RSICD and the demo, json for the others)."""
    return cfg.split or get_dataset(cfg.dataset, cfg.name).default_split


def selection_metric(cfg: TrainConfig, has_labels: bool) -> str:
    """--select, else map where the dataset has labels and mr where it has none; map without labels is refused."""
    if cfg.select == "map" and not has_labels:
        raise DUCHError("--select map needs labels, and this dataset has none (--labels CSV gives them); "
                        "--select mr selects on instance-level recall")
    return cfg.select or ("map" if has_labels else "mr")


def instance_rows(images: list[int], offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Caption rows of the given images (all of each image's captions, in order) and the position in
    ``images`` of each row's image."""
    offsets = np.asarray(offsets)
    counts = offsets[np.asarray(images, dtype=np.int64) + 1] - offsets[np.asarray(images, dtype=np.int64)]
    rows = np.concatenate([np.arange(offsets[j], offsets[j + 1]) for j in images]) if images else np.zeros(0, np.int64)
    return rows.astype(np.int64), np.repeat(np.arange(len(images)), counts)


class RunData:
    """Features, split and the device tensors of one run."""

    def __init__(self, cfg: TrainConfig, device, standardised: bool = True):
        ds = get_dataset(cfg.dataset, cfg.name)
        self.paths = resolve_files(ds, cfg.data_dir, cfg.preset, cfg.img_aug_emb, cfg.encoder, cfg.text_encoder)
        cfg.files = self.paths.to_json()
        self.features: Features = load_features(ds, self.paths, cfg.preset, cfg.original_quirks, labels_csv=cfg.labels,
                                                encoder=cfg.encoder, text_encoder=cfg.text_encoder,
                                                standardised=standardised)
        cfg.select = selection_metric(cfg, self.features.labels is not None)
        self.select = cfg.select
        self.protocol = split_protocol(cfg)
        self.split: Split = resolve_split(self.protocol, self.features.images, self.features.caption_offsets, cfg.seed,
                                          cfg.split_file, self.paths.dataset_json, self.features.left_out)
        f, s = self.features, self.split
        self.filenames = [image["filename"] for image in f.images]

        def tensor(x):
            return torch.as_tensor(np.ascontiguousarray(x), device=device)

        def labels(rows):
            return None if f.labels is None else tensor(f.labels[rows])

        def instance(images):
            rows, owner = instance_rows(images, f.caption_offsets)
            return InstanceSet(tensor(f.image[images]), tensor(f.caption[rows]), owner), rows

        self.train_views = {
            "i1": tensor(f.image[s.train]),
            "i2": tensor(f.image_aug[s.train]),
            "t1": tensor(f.caption[s.train_captions]),
        }
        self.train_views["t2"] = (self.train_views["t1"] if f.caption_aug is None
                                  else tensor(f.caption_aug[s.train_captions]))
        self.query = EvalSet(tensor(f.image[s.query]), tensor(f.caption[s.query_captions]), labels(s.query))
        self.db = EvalSet(tensor(f.image[s.db]), tensor(f.caption[s.db_captions]), labels(s.db))
        # validation: the val part against the train images (json, file with val), else query/db as the original
        if s.val:
            self.valid_query = EvalSet(tensor(f.image[s.val]), tensor(f.caption[s.val_captions]), labels(s.val))
            self.valid_db = EvalSet(tensor(f.image[s.train]), tensor(f.caption[s.train_captions]), labels(s.train))
        else:
            self.valid_query, self.valid_db = self.query, self.db
        # a json/file split without val images selects no model on test: the last validation wins
        self.selects_model = bool(s.val) or self.protocol == "duch"
        self.test_instance, self.test_caption_rows = instance(s.test)
        self.valid_instance = instance(s.valid_query)[0] if s.val else self.test_instance

    def split_record(self) -> dict:
        return self.split.to_json(self.filenames, self.features.caption_offsets)


def protocol_record(data: RunData) -> dict:
    """The evaluation protocol, as metrics.json states it."""
    s = data.split
    class_level = (
        "skipped: no labels" if data.features.labels is None else
        "query = test images (one caption each), database = every image outside test; relevant = shares a label"
        if data.protocol != "duch" else "the original's query / database split; relevant = shares a label"
    )
    return {
        "split": data.protocol, "labels": data.features.label_rule, "dropped": data.features.dropped,
        "images": {"train": len(s.train), "val": len(s.val), "test": len(s.test), "database": len(s.db)},
        "selection": "validation images against train images" if s.val else (
            "query against database (the original's)" if data.protocol == "duch" else "none: the last validated model"),
        "selection_metric": data.select,
        "class_level": class_level,
        "instance_level": "within the test images and all their captions: I->T hit when any of the image's captions is "
                          "in the top K; T->I hit when the caption's image is; ties by index and tie-aware expectation",
    }
