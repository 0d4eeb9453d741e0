"""``main.py --describe``: what a run would read from a dataset, checked, before any preprocessing.

It reads the captions (in any layout), resolves the labels and the split exactly as a run does, and
reports the counts, the rules that applied and every warning a run would give; no feature file is
needed and nothing but the report is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from configs import files
from configs.datasets import DatasetInfo
from utils.data.dataset_json import DROPPED_KEY, caption_offsets, dropped_warning, left_out_images, load_dataset_json
from utils.data.features import check_enough_images
from utils.data.labels import resolve_labels
from utils.data.splits import Split, resolve_split


def lonely_queries(labels: np.ndarray | None, split: Split) -> str | None:
    """A warning when queries have no relevant database item (single-label classes), else None."""
    if labels is None or labels.ndim != 1 or not split.query:
        return None
    q_labels, db_labels = labels[split.query], labels[split.db]
    lonely = int((~np.isin(q_labels, db_labels)).sum())
    if lonely == len(q_labels):
        return ("no query has a relevant database item (no query's class occurs in the database): every retrieval "
                "metric is 0")
    if lonely:
        return (f"{lonely} of {len(q_labels)} queries have no relevant database item (their class is absent from the "
                "database); they count 0 in mAP, precision and recall")
    return None


def describe_dataset(ds: DatasetInfo, data_dir: str | Path, protocol: str, split_file: str | None = None,
                     labels_csv: str | None = None, seed: int = 42) -> dict:
    """The report of ``--describe`` (docs/datasets.md): counts, layout, split sizes, labels, what was left out,
    warnings. Raises the errors a run would raise."""
    path = files.current_dataset_json(ds, data_dir)
    data = load_dataset_json(path, hint="pass --data-dir to the folder that holds it, or --dataset PATH", ds=ds)
    images = data["images"]
    check_enough_images(len(images), path)
    offsets = caption_offsets(data)
    labels = resolve_labels(data, ds, path, labels_csv)
    split = resolve_split(protocol, images, offsets, seed, split_file, path, left_out_images(data))
    warnings = [w for w in [dropped_warning(data), *labels.warnings, lonely_queries(labels.values, split)] if w]
    if labels.values is None:
        warnings.append("no labels: class-level metrics (mAP, P@K, PR) are skipped and models are selected on mR; "
                        "instance-level recall is reported")
    dropped = data[DROPPED_KEY]
    return {
        "dataset": ds.name, "source": str(path), "images": len(images), "captions": int(offsets[-1]),
        "layout": data["layout"],
        "splits": {"protocol": split.protocol, "train": len(split.train), "val": len(split.val),
                   "test": len(split.test), "query": len(split.query), "database": len(split.db)},
        "labels": {"rule": labels.rule, "classes": labels.n_classes if labels.present else 0},
        "dropped": {k: dropped[k] for k in ("blank_captions", "images_without_captions")},
        "warnings": warnings,
    }


def describe_table(report: dict) -> str:
    """The report as a few aligned lines."""
    s, lab, drop = report["splits"], report["labels"], report["dropped"]
    rows = [
        ("dataset", f"{report['dataset']} ({report['layout']}: {report['source']})"),
        ("images", f"{report['images']:,} ({report['captions']:,} captions)"),
        ("split", f"{s['protocol']}: train {s['train']:,}, val {s['val']:,}, test {s['test']:,}; "
                  f"queries {s['query']:,}, database {s['database']:,}"),
        ("labels", f"{lab['rule']}: {lab['classes']} classes" if lab["classes"] else lab["rule"]),
        ("left out", f"{drop['blank_captions']} blank captions, {drop['images_without_captions']} images without "
                     "captions"),
        *(("warning", w) for w in report["warnings"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
