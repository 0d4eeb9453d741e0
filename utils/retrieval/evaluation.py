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
from utils.retrieval.hamming import as_code_words
from utils.retrieval.metrics import (
    DEFAULT_MEMORY_GB,
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


@dataclass
class EvalSet:
    """Features of the query or database items (one caption per image) and their labels, on the device."""

    image: torch.Tensor
    caption: torch.Tensor
    labels: torch.Tensor


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
    out: dict = {}
    for k in ks:
        table = {name: per_direction[name][f"map@{k}"] for name in pairs}
        table["avg"] = float(np.mean(list(table.values())))
        out[f"map@{k}"] = table
    out["chance"] = {name: per_direction[name]["chance"] for name in pairs}
    if with_curves:
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


def load_codes_file(path: str | Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Directions and labels of a codes file: main.py's codes.npz (four directions) or a
    single-modality file with ``q, db, q_labels, db_labels`` (one direction, ``q2db``). Other keys are ignored."""
    from utils.io import npz_keys, read_npz

    path = Path(path)
    if not path.is_file():
        raise DUCHError(f"codes file {path} not found")
    present = set(npz_keys(path, "codes file"))
    if all(k in present for k in CROSS_MODAL_KEYS):  # only the keys of the layout are read, each size-checked first
        a = read_npz(path, CROSS_MODAL_KEYS, "codes file")
        pairs = {name: (a[f"q_{qm}"], a[f"db_{dm}"]) for name, (qm, dm) in DIRECTIONS.items()}
    elif all(k in present for k in SINGLE_KEYS):
        a = read_npz(path, SINGLE_KEYS, "codes file")
        pairs = {"q2db": (a["q"], a["db"])}
    else:
        near = CROSS_MODAL_KEYS if any(k in present for k in ("q_img", "q_txt", "db_img", "db_txt")) else SINGLE_KEYS
        missing = [k for k in near if k not in present]
        raise DUCHError(
            f"{path} lacks {', '.join(missing)}; a codes file holds either {', '.join(CROSS_MODAL_KEYS)} "
            f"(main.py's codes.npz) or {', '.join(SINGLE_KEYS)} (found: {', '.join(sorted(present)) or 'nothing'})"
        )
    return pairs, a["q_labels"], a["db_labels"]


def evaluate_file(
    path: str | Path, map_ks=MAP_KS, with_curves: bool = True, memory_gb: float = DEFAULT_MEMORY_GB,
    bits: int | None = None,
) -> dict:
    """Metrics of a codes file (``load_codes_file``), every array checked under its own name first."""
    pairs, q_labels, db_labels = load_codes_file(path)
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
