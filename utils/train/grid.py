"""The grid of main.py: train and test every (dataset, method, bits) run in sequence, then compare them.

A finished run (its metrics.json written after its last epoch) is skipped, an interrupted one (a last
checkpoint short of its epochs) is resumed, a trained one without a test is tested; then the
comparison tables and figures (utils/train/compare.py) are written to the out-dir, one set per dataset,
named after the tag and preset.
"""

from __future__ import annotations

import logging
from pathlib import Path

from configs.train import FLOAT_METHOD, TrainConfig
from utils.logs import setup_logger
from utils.train import runner
from utils.train.checkpoints import LAST_NAME
from utils.train.run_config import read_run_config


def run_state(cfg: TrainConfig) -> str:
    """ "new", "interrupted" (epochs left), "untested" (all epochs, no metrics.json) or "finished"."""
    run_dir = runner.run_dir_of(cfg)
    if cfg.method == FLOAT_METHOD:  # nothing trained: finished once scored
        return "finished" if (run_dir / "metrics.json").is_file() else "new"
    if not (run_dir / LAST_NAME).exists():
        return "new"
    history = runner.read_history(run_dir)
    saved = read_run_config(run_dir, "grid")
    done = history[-1]["epoch"] if history else 0
    if done < max(int(saved.get("epochs", cfg.epochs)), cfg.epochs):
        return "interrupted"
    return "finished" if (run_dir / "metrics.json").is_file() else "untested"


def run_grid(configs: list[TrainConfig], typed: set[str] | frozenset = frozenset()) -> dict:
    """Run every configuration in order; returns {"runs": {folder: state before}, "tables": [...], "figures": [...]}."""
    from utils.train.compare import load_result, write_comparison

    logger = setup_logger(level=logging.INFO)
    states = {}
    for i, cfg in enumerate(configs, 1):
        state = run_state(cfg)
        run_dir = runner.run_dir_of(cfg)
        states[str(run_dir)] = state
        logger.info(f"grid {i}/{len(configs)}: {run_dir} ({state})")
        if state == "finished":
            continue
        if cfg.method == FLOAT_METHOD:
            from utils.train.float_run import float_run

            float_run(cfg, typed)
        elif state == "untested":
            runner.test_run(cfg, typed)
        else:
            runner.train(cfg, resume=state == "interrupted", typed=typed)
    written: dict = {"tables": [], "figures": []}
    groups: dict[tuple, list[TrainConfig]] = {}
    for cfg in configs:
        groups.setdefault((cfg.out_dir, cfg.tag, cfg.preset), []).append(cfg)
    for (out_dir, tag, preset), members in groups.items():
        results = [load_result(runner.run_dir_of(cfg)) for cfg in members]
        paths = write_comparison(results, Path(out_dir), stem=f"compare_{tag}_{preset}")
        for key in written:
            written[key] += paths[key]
        for table in paths["tables"]:
            if table.endswith(".md"):
                logger.info(Path(table).read_text(encoding="utf-8"))
    logger.info("comparison: " + ", ".join(written["tables"] + written["figures"]))
    return {"runs": states, **written}
