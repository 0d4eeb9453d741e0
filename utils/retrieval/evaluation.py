"""Evaluation of hash codes over retrieval directions: one engine for main.py --test, validation and evaluate.py.

main.py's four directions (I->T, T->I, I->I, T->T) and their mean, or one direction (Q->DB) for a
single-modality codes file; the metrics of each direction come from ``utils.retrieval.metrics``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils.errors import DUCHError
from utils.io import npz_headers, npz_keys, read_npz
from utils.retrieval.hamming import as_code_words
from utils.retrieval.metrics import (
    DEFAULT_MEMORY_GB,
    MAP_DEFINITIONS,
    MAP_KS,
    as_labels,
    check_map_ks,
    retrieval_metrics,
)

if TYPE_CHECKING:
    import torch

DIRECTIONS = {"i2t": ("img", "txt"), "t2i": ("txt", "img"), "i2i": ("img", "img"), "t2t": ("txt", "txt")}
DIRECTION_TITLES = {"i2t": "I->T", "t2i": "T->I", "i2i": "I->I", "t2t": "T->T", "q2db": "Q->DB"}
CROSS_MODAL_KEYS = ("q_img", "q_txt", "db_img", "db_txt", "q_labels", "db_labels")
SINGLE_KEYS = ("q", "db", "q_labels", "db_labels")
# instance-level recall: test images, all their captions, and the row in test_img of each caption's image
INSTANCE_KEYS = ("test_img", "test_txt", "test_txt_image")


@dataclass
class EvalSet:
    """Features of the query or database items (one caption per image) and their labels, on the device
    (labels None: the dataset has none, class-level metrics are skipped)."""

    image: torch.Tensor
    caption: torch.Tensor
    labels: torch.Tensor | None


@dataclass
class InstanceSet:
    """Images and ALL their captions, for instance-level recall: ``caption_image[c]`` is the row in
    ``image`` of caption c's image."""

    image: torch.Tensor
    caption: torch.Tensor
    caption_image: np.ndarray


def instance_metrics(model, instance: InstanceSet, memory_gb: float = 1.0) -> dict:
    """Encode an instance set and score R@1/5/10 and mR, I->T and T->I, both forms (utils.retrieval.recall)."""
    from utils.retrieval.recall import instance_recall

    img, txt = model.encode(instance.image, instance.caption)
    return instance_recall(img, txt, instance.caption_image, memory_gb=memory_gb)


@dataclass
class Codes:
    q_img: torch.Tensor
    q_txt: torch.Tensor
    db_img: torch.Tensor
    db_txt: torch.Tensor

    def to_npz(self, q_labels, db_labels) -> dict:
        out = {k: v.cpu().numpy().astype(np.int8) for k, v in self.__dict__.items()}
        out["q_labels"] = np.asarray(q_labels.cpu())
        out["db_labels"] = np.asarray(db_labels.cpu())
        return out


def encode_sets(model, query: EvalSet, db: EvalSet) -> Codes:
    q_img, q_txt = model.encode(query.image, query.caption)
    db_img, db_txt = model.encode(db.image, db.caption)
    return Codes(q_img, q_txt, db_img, db_txt)


def evaluate_directions(
    pairs: dict, q_labels, db_labels, map_ks=MAP_KS, with_curves: bool = True,
    memory_gb: float = DEFAULT_MEMORY_GB, bits: int | None = None, progress: bool = False,
) -> dict:
    """Metrics of each direction {name: (query codes, database codes)}, in main.py's metrics.json layout:
    ``map@K`` as {direction..., "avg"}, ``chance`` per direction, and with curves ``p@k``,
    ``precision_radius``, ``recall_radius`` per direction."""
    from tqdm import tqdm

    ks = check_map_ks(map_ks)
    q_lab, db_lab = as_labels(q_labels, "query labels"), as_labels(db_labels, "database labels")
    packed: dict[int, object] = {}  # each code array is checked and packed once, however many directions use it

    def words(codes, name):
        if id(codes) not in packed:
            packed[id(codes)] = as_code_words(codes, bits, name)
        return packed[id(codes)]

    per_direction = {}
    for name, (q, db) in tqdm(pairs.items(), desc="evaluate", unit="direction", leave=False, disable=not progress):
        per_direction[name] = retrieval_metrics(
            words(q, f"query codes ({name})"), words(db, f"database codes ({name})"), q_lab, db_lab,
            map_ks=ks, with_curves=with_curves, memory_gb=memory_gb,
        )
    def table(key):  # one figure per direction and their mean
        values = {name: per_direction[name][key] for name in pairs}
        return {**values, "avg": float(np.mean(list(values.values())))}

    out: dict = {f"map@{k}": table(f"map@{k}") for k in ks}
    out["chance"] = {name: per_direction[name]["chance"] for name in pairs}
    if with_curves:  # the full report: the other mAP definitions (same counting pass) and the curves
        out.update({key: table(key) for key in [f"map_cut@{k}" for k in ks] + ["map_tie_aware"]})
        out["map_definitions"] = dict(MAP_DEFINITIONS)
        for key in ("p@k", "precision_radius", "recall_radius"):
            out[key] = {name: per_direction[name][key] for name in pairs}
    return out


def evaluate_codes(codes: Codes, q_labels, db_labels, with_curves: bool = True, progress: bool | None = None,
                   **kwargs) -> dict:
    """Metrics of the four directions, plus the mean of each mAP over them under ``"avg"``.
    A progress bar by default only with curves (not during validation)."""
    pairs = {name: (getattr(codes, f"q_{q_mod}"), getattr(codes, f"db_{db_mod}")) for name,
             (q_mod, db_mod) in DIRECTIONS.items()}
    progress = with_curves if progress is None else progress
    return evaluate_directions(pairs, q_labels, db_labels, with_curves=with_curves, progress=progress, **kwargs)


def read_codes_npz(path: str | Path) -> dict:
    """The arrays of a codes file that one of its layouts uses (never pickles): other keys are never read, and
    each read key's declared size is checked before its data is read."""
    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"codes file {path} not found")
    present = set(npz_keys(path, "codes file"))
    wanted = [k for k in dict.fromkeys((*CROSS_MODAL_KEYS, *SINGLE_KEYS, *INSTANCE_KEYS)) if k in present]
    check_code_headers(path, npz_headers(path, wanted, "codes file"))
    return read_npz(path, wanted, "codes file")


# arrays whose first dimension must agree (rows of one set), and code arrays whose widths must agree
_SAME_ROWS = (("q_img", "q_txt", "q_labels"), ("db_img", "db_txt", "db_labels"), ("q", "q_labels"),
              ("db", "db_labels"), ("test_txt", "test_txt_image"))
_SAME_WIDTH = (("q_img", "q_txt", "db_img", "db_txt"), ("q", "db"), ("test_img", "test_txt"))


def check_code_headers(path, headers: dict) -> None:
    """The arrays of a codes file fit together, judged from their headers before any data is read: codes are
    2-D numbers, the rows of one set agree, the widths of the codes compared agree."""
    for key, (shape, dtype) in headers.items():
        if dtype.kind not in "biuf":
            raise DUCHError(f"{path}: array {key!r} holds {dtype}, not numbers")
        if key not in ("q_labels", "db_labels", "test_txt_image") and len(shape) != 2:
            raise DUCHError(f"{path}: array {key!r} has shape {shape}; codes are (rows, bits)")
        if key == "test_txt_image" and len(shape) != 1:
            raise DUCHError(f"{path}: array 'test_txt_image' has shape {shape}; it is one image row per caption")
    for group, axis in [(g, 0) for g in _SAME_ROWS] + [(g, 1) for g in _SAME_WIDTH]:
        sizes = {k: headers[k][0][axis] for k in group if k in headers and len(headers[k][0]) > axis}
        if len(set(sizes.values())) > 1:
            a = next(iter(sizes))
            b = next(k for k in sizes if sizes[k] != sizes[a])
            if axis == 1:
                raise DUCHError(f"{path}: {a} codes have {sizes[a]} bits but {b} codes have {sizes[b]}; codes compared "
                                f"with each other need the same length (refused before reading them)")
            raise DUCHError(f"{path}: {b} has {sizes[b]:,} rows but {a} has {sizes[a]:,}; they must match (refused "
                            f"before reading them)")


def load_codes_file(path: str | Path, arrays: dict | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Directions and labels of a codes file: main.py's codes.npz (four directions) or a
    single-modality file with ``q, db, q_labels, db_labels`` (one direction, ``q2db``). Other keys are ignored."""
    arrays = read_codes_npz(path) if arrays is None else arrays
    if all(k in arrays for k in CROSS_MODAL_KEYS):
        a = arrays
        pairs = {name: (a[f"q_{qm}"], a[f"db_{dm}"]) for name, (qm, dm) in DIRECTIONS.items()}
    elif all(k in arrays for k in SINGLE_KEYS):
        a = arrays
        pairs = {"q2db": (a["q"], a["db"])}
    else:
        near = CROSS_MODAL_KEYS if any(k in arrays for k in ("q_img", "q_txt", "db_img", "db_txt")) else SINGLE_KEYS
        missing = [k for k in near if k not in arrays]
        raise DUCHError(
            f"{path} lacks {', '.join(missing)}; a codes file holds either {', '.join(CROSS_MODAL_KEYS)} "
            f"(main.py's codes.npz) or {', '.join(SINGLE_KEYS)}, and/or {', '.join(INSTANCE_KEYS)} for instance-level "
            f"recall (found: {', '.join(sorted(arrays)) or 'nothing'})"
        )
    return pairs, a["q_labels"], a["db_labels"]


def has_class_codes(arrays: dict) -> bool:
    return all(k in arrays for k in CROSS_MODAL_KEYS) or all(k in arrays for k in SINGLE_KEYS)


def evaluate_file(
    path: str | Path, map_ks=MAP_KS, with_curves: bool = True, memory_gb: float = DEFAULT_MEMORY_GB,
    bits: int | None = None,
) -> dict:
    """Metrics of a codes file (``load_codes_file``), every array checked under its own name first; with
    ``test_img``, ``test_txt`` and ``test_txt_image`` also instance-level recall (or only that)."""
    arrays = read_codes_npz(path)
    recall = None
    if all(k in arrays for k in INSTANCE_KEYS):
        from utils.retrieval.recall import instance_recall

        recall = instance_recall(arrays["test_img"], arrays["test_txt"], arrays["test_txt_image"], memory_gb=memory_gb,
                                 bits=bits)
        if not has_class_codes(arrays):
            return {"recall": recall}
    elif any(k in arrays for k in INSTANCE_KEYS):
        missing = [k for k in INSTANCE_KEYS if k not in arrays]
        raise DUCHError(f"{path} lacks {', '.join(missing)}; instance-level recall needs {', '.join(INSTANCE_KEYS)}")
    metrics = _evaluate_class_codes(path, arrays, map_ks, with_curves, memory_gb, bits)
    if recall is not None:
        metrics["recall"] = recall
    return metrics


def score_codes_file(
    path: str | Path, out: str | Path | None = None, overwrite: bool = False, map_ks=MAP_KS, with_curves: bool = True,
    memory_gb: float = DEFAULT_MEMORY_GB, bits: int | None = None,
) -> dict:
    """evaluate.py --codes: the metrics of a codes file (``evaluate_file``) with its path and scoring time,
    logged as the console table and, with ``out``, written as metrics.json. ``out`` is checked before any scoring."""
    import time

    from utils.io import check_output_file, write_json
    from utils.logs import setup_logger

    if bits is not None and bits < 1:
        raise DUCHError(f"--bits must be at least 1, got {bits}")
    out = Path(out) if out else None
    if out is not None:  # a folder, a missing folder or an existing file is named before any scoring
        if out.is_file() and not overwrite:
            raise DUCHError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
        check_output_file(out, overwrite=True, flag="--out")
    logger = setup_logger()
    start = time.perf_counter()
    metrics = evaluate_file(path, map_ks=map_ks, with_curves=with_curves, memory_gb=memory_gb, bits=bits)
    elapsed = time.perf_counter() - start
    metrics["codes"] = str(path)
    metrics["eval_time_s"] = round(elapsed, 4)
    if out is not None:
        write_json(out, metrics)
    logger.info(f"{path} ({elapsed:.2f} s)\n{format_results(metrics)}" + (f"\nmetrics in {out}" if out else ""))
    return metrics


def _evaluate_class_codes(path, arrays: dict, map_ks, with_curves: bool, memory_gb: float, bits) -> dict:
    pairs, q_labels, db_labels = load_codes_file(path, arrays)
    ks = check_map_ks(map_ks)
    names = {"q2db": ("q", "db")} if "q2db" in pairs else {n: (f"q_{a}", f"db_{b}") for n, (a, b) in DIRECTIONS.items()}
    checked: dict[str, object] = {}
    for name, (q_key, db_key) in names.items():
        q, db = pairs[name]
        for key, array in ((q_key, q), (db_key, db)):
            if key not in checked:
                checked[key] = as_code_words(array, bits, f"{Path(path).name}: {key}")
        if checked[q_key].bits != checked[db_key].bits:
            raise DUCHError(f"{Path(path).name}: {q_key} codes have {checked[q_key].bits} bits but {db_key} codes have "
                            f"{checked[db_key].bits}")
    q_lab, db_lab = as_labels(q_labels,
                              f"{Path(path).name}: q_labels"), as_labels(db_labels, f"{Path(path).name}: db_labels")
    for key, labels in (("q_labels", q_lab), ("db_labels", db_lab)):
        side = key.split("_")[0]
        rows = {k: len(v) for k, v in checked.items() if k.split("_")[0] == side}
        if any(n != labels.n for n in rows.values()):
            raise DUCHError(f"{Path(path).name}: {key} has {labels.n} rows but "
                            + ", ".join(f"{k} has {n}" for k, n in rows.items()))
    words = {name: (checked[a], checked[b]) for name, (a, b) in names.items()}
    metrics = evaluate_directions(words, q_lab, db_lab, map_ks=ks, with_curves=with_curves, memory_gb=memory_gb,
                                  progress=True)
    metrics["n_query"], metrics["n_db"] = q_lab.n, db_lab.n
    return metrics


def format_results(metrics: dict) -> str:
    """The class-level table (when there are labels) and the instance-level recall (when computed)."""
    from utils.retrieval.recall import format_recall_table

    parts = []
    if "chance" in metrics:
        parts.append(format_map_table(metrics))
    elif metrics.get("class_level") == "skipped":
        parts.append("class-level metrics skipped: the dataset has no labels")
    if "recall" in metrics:
        parts.append(format_recall_table(metrics["recall"]))
    return "\n".join(parts)


def format_map_table(metrics: dict) -> str:
    """The readable console table of the directions and their mean, with chance level."""
    directions = list(metrics["chance"])
    ks = [key.split("@", 1)[1] for key in metrics if key.startswith("map@")]
    names = directions + ["avg"]
    header = f"{'':10s}" + "".join(f"{DIRECTION_TITLES.get(n, 'mean'):>8s}" for n in names)
    lines = [header]
    for k in ks:
        lines.append(f"{'mAP@' + k:10s}" + "".join(f"{metrics[f'map@{k}'][n]:8.3f}" for n in names))
    chance = metrics["chance"]
    chance_row = [chance[n] for n in directions] + [float(np.mean(list(chance.values())))]
    lines.append(f"{'chance':10s}" + "".join(f"{v:8.3f}" for v in chance_row))
    return "\n".join(lines)
