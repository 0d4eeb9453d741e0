"""Evaluation of a DUCH model on the query and database sets: codes, metrics, tables."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from utils.metrics import retrieval_metrics

DIRECTIONS = {"i2t": ("img", "txt"), "t2i": ("txt", "img"), "i2i": ("img", "img"), "t2t": ("txt", "txt")}
DIRECTION_TITLES = {"i2t": "I->T", "t2i": "T->I", "i2i": "I->I", "t2t": "T->T"}
MAP_KS = (20, 10)


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


def evaluate_codes(codes: Codes, q_labels, db_labels, with_curves: bool = True) -> dict:
    """Metrics of the four directions, plus the mean of each mAP over them under ``"avg"``."""
    from tqdm import tqdm

    per_direction = {}
    for name, (q_mod, db_mod) in tqdm(DIRECTIONS.items(), desc="evaluate", unit="direction", leave=False, disable=not with_curves):
        per_direction[name] = retrieval_metrics(
            getattr(codes, f"q_{q_mod}"), getattr(codes, f"db_{db_mod}"), q_labels, db_labels,
            map_ks=MAP_KS, with_curves=with_curves,
        )
    out: dict = {}
    for k in MAP_KS:
        table = {name: per_direction[name][f"map@{k}"] for name in DIRECTIONS}
        table["avg"] = float(np.mean(list(table.values())))
        out[f"map@{k}"] = table
    out["chance"] = {name: per_direction[name]["chance"] for name in DIRECTIONS}
    if with_curves:
        for key in ("p@k", "precision_radius", "recall_radius"):
            out[key] = {name: per_direction[name][key] for name in DIRECTIONS}
    return out


def format_map_table(metrics: dict) -> str:
    """The readable console table of the four directions and their mean, with chance level."""
    names = list(DIRECTIONS) + ["avg"]
    header = f"{'':10s}" + "".join(f"{DIRECTION_TITLES.get(n, 'mean'):>8s}" for n in names)
    lines = [header]
    for k in MAP_KS:
        lines.append(f"{'mAP@' + str(k):10s}" + "".join(f"{metrics[f'map@{k}'][n]:8.3f}" for n in names))
    chance = metrics["chance"]
    chance_row = [chance[n] for n in DIRECTIONS] + [float(np.mean(list(chance.values())))]
    lines.append(f"{'chance':10s}" + "".join(f"{v:8.3f}" for v in chance_row))
    return "\n".join(lines)
