"""``main.py --method float``: the feature files' own retrieval by cosine similarity, written as a run.

No network is trained and no bits are used: the encoders' float embeddings (the values in the feature files,
not standardised) are ranked by cosine similarity on the same split, query and database sets and test set as
the hashing runs, with the same metric families (utils/retrieval/cosine.py). Image and caption embeddings are
compared with each other only when one CLIP-family checkpoint made both (one shared space); otherwise the
cross-modal directions are not defined and the run reports I->I and T->T. The run folder holds config.json,
split.json, metrics.json (with the bytes one item takes as float32) and test.log.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from configs.encoders import image_encoder_kind
from configs.files import CONFIG_NAME, SPLIT_NAME
from configs.train import TrainConfig, check_config
from utils.errors import DUCHError
from utils.io import write_json
from utils.locks import OutputLock
from utils.logs import setup_logger
from utils.retrieval.cosine import cosine_metrics, cosine_recall
from utils.retrieval.metrics import MAP_KS

FLOAT_BYTES = 4  # float32
METRICS_NAME = "metrics.json"


def shared_space(cfg: TrainConfig, widths: dict) -> bool:
    """Image and caption embeddings are comparable: one CLIP-family checkpoint made both, at one width."""
    return (cfg.encoder == cfg.text_encoder and image_encoder_kind(cfg.encoder) == "checkpoint"
            and widths["image"] == widths["caption"])


def float_metrics(data, shared: bool, map_ks=MAP_KS) -> dict:
    """metrics.json of the float reference: the class-level directions (cross-modal ones only in a shared
    space), instance-level recall (shared space only), and the memory per item."""
    f = data.features
    widths = f.widths
    out: dict = {}
    if f.labels is not None:
        q, db = data.query, data.db
        views = {"img": (q.image, db.image), "txt": (q.caption, db.caption)}
        pairs = {"i2i": ("img", "img"), "t2t": ("txt", "txt")}
        if shared:
            pairs = {"i2t": ("img", "txt"), "t2i": ("txt", "img"), **pairs}
        ql, dl = np.asarray(q.labels.cpu()), np.asarray(db.labels.cpu())
        per = {name: cosine_metrics(views[a][0].cpu().numpy(), views[b][1].cpu().numpy(), ql, dl, map_ks=map_ks)
               for name, (a, b) in pairs.items()}
        directions = ("i2t", "t2i", "i2i", "t2t")
        for key in [f"map@{k}" for k in map_ks] + [f"map_cut@{k}" for k in map_ks]:
            values = {d: per[d][key] if d in per else None for d in directions}
            out[key] = {**values, "avg": float(np.mean(list(values.values()))) if shared else None}
        out["chance"] = {d: per[d]["chance"] for d in per}
        for key in ("p@k", "precision_rank", "recall_rank"):
            out[key] = {d: per[d][key] for d in per}
        out["rank_cutoffs"] = {d: per[d]["rank_cutoffs"] for d in per}
    else:
        out["class_level"] = "skipped"
    if shared:
        inst = data.test_instance
        out["recall"] = cosine_recall(inst.image.cpu().numpy(), inst.caption.cpu().numpy(), inst.caption_image)
    else:
        out["recall"] = "skipped: image and caption embeddings lie in different spaces (another encoder for each)"
    out["float"] = {
        "similarity": "cosine",
        "shared_space": shared,
        "widths": widths,
        "bytes_per_item": {k: FLOAT_BYTES * v for k, v in widths.items()},
    }
    return out


def format_float_results(metrics: dict) -> str:
    """Console table: mAP per direction ("n/a" where a direction is not defined) and the recall."""
    from utils.retrieval.evaluation import DIRECTION_TITLES
    from utils.retrieval.recall import format_recall_table

    lines = []
    if "chance" in metrics:
        names = ("i2t", "t2i", "i2i", "t2t", "avg")
        lines.append(f"{'cosine':10s}" + "".join(f"{DIRECTION_TITLES.get(n, 'mean'):>8s}" for n in names))
        for key in [k for k in metrics if k.startswith("map@")]:
            cells = ["n/a" if metrics[key][n] is None else f"{metrics[key][n]:.3f}" for n in names]
            lines.append(f"{'mAP@' + key.split('@')[1]:10s}" + "".join(f"{c:>8s}" for c in cells))
    else:
        lines.append("class-level metrics skipped: the dataset has no labels")
    if isinstance(metrics.get("recall"), dict):
        lines.append(format_recall_table(metrics["recall"]))
    else:
        lines.append(f"instance-level recall {metrics.get('recall')}")
    per_item = metrics["float"]["bytes_per_item"]
    lines.append(f"memory per item: image {per_item['image']} B, caption {per_item['caption']} B (float32)")
    return "\n".join(lines)


def float_run(cfg: TrainConfig, typed: set[str] | frozenset = frozenset(), test: bool = False,
              overwrite: bool = False) -> dict:
    """Score the feature files of ``cfg`` by cosine similarity into the float run's folder; ``test`` scores
    an existing one again with the settings of its config.json."""
    from utils.train.run_config import bind_to_run, check_inputs_unchanged, read_run_config
    from utils.train.runner import run_dir_of

    check_config(cfg)
    run_dir = run_dir_of(cfg)
    with OutputLock(run_dir, "run folder"):
        saved = None
        if test:
            saved = read_run_config(run_dir, "--test")
            cfg.bit = int(saved.get("bit", cfg.bit))  # no bits: the float run's folder and results ignore them
            cfg = bind_to_run(cfg, set(typed) - {"bit"}, saved, run_dir, "test")
            check_inputs_unchanged(saved, "--test")
        elif (run_dir / METRICS_NAME).exists() and not overwrite:
            raise DUCHError(f"{run_dir} already holds the float reference; pass --test to score it again with its "
                            "settings, or --overwrite to start over")
        run_dir.mkdir(parents=True, exist_ok=True)
        return _score(cfg, run_dir, saved)


def _score(cfg: TrainConfig, run_dir: Path, saved: dict | None) -> dict:
    import torch

    from utils.runtime import seed_everything
    from utils.train.run_data import RunData, protocol_record, run_warnings
    from utils.train.runner import config_record

    logger = setup_logger(run_dir / "test.log")
    seed_everything(cfg.seed)
    device = torch.device("cpu")  # numpy does the ranking
    data = RunData(cfg, device, standardised=False)
    warnings = run_warnings(cfg, data, trained=False)
    for warning in warnings:
        logger.warning(f"warning: {warning}")
    shared = shared_space(cfg, data.features.widths)
    record = config_record(cfg, device, "float", data, warnings)
    if saved is None:
        write_json(run_dir / CONFIG_NAME, record)
        write_json(run_dir / SPLIT_NAME, data.split_record(), indent=None)
    start = time.perf_counter()
    metrics = float_metrics(data, shared)
    metrics["protocol"] = protocol_record(data)
    metrics["n_query"], metrics["n_db"] = len(data.split.query), len(data.split.db)
    metrics["eval_time_s"] = round(time.perf_counter() - start, 4)
    metrics["warnings"] = warnings
    write_json(run_dir / METRICS_NAME, metrics)
    if "p@k" in metrics:
        from utils.train.plots import plot_p_at_k

        plot_p_at_k(metrics, run_dir / "p_at_k.png", cfg.run_name())
    space = "one shared space" if shared else "different spaces: cross-modal directions n/a"
    logger.info(f"float reference of {cfg.dataset} ({cfg.encoder} / {cfg.text_encoder} features, {space}; "
                f"{metrics['n_query']} queries, {metrics['n_db']} database items, {metrics['eval_time_s']:.2f} s)\n"
                f"{format_float_results(metrics)}\nresults in {run_dir}")
    return metrics
