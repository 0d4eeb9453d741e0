"""Train and test runs of main.py: the run folder, its files, and the order of the work.

A run's ``config.json`` is the truth about it: ``--test`` and ``--resume`` read their settings from it
and refuse a typed flag that contradicts it (``--resume`` may raise ``--epochs``). Epochs are 1-based
wherever a user reads them (history, logs, metrics, checkpoints).
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from configs.datasets import get_dataset
from configs.files import CONFIG_NAME, SPLIT_NAME
from configs.train import TrainConfig, check_config
from utils import distributed
from utils.data.features import width_notes
from utils.errors import DUCHError
from utils.io import atomic_path, check_writable_dir, write_json, write_text
from utils.locks import OutputLock
from utils.logs import FILE_ONLY, close_log_files, setup_logger
from utils.publish import publish_folder, recover_folder, staging_path_of
from utils.retrieval.evaluation import (
    encode_sets,
    evaluate_codes,
    format_results,
)
from utils.retrieval.recall import instance_recall
from utils.runtime import git_commit, resolve_device, seed_everything, versions
from utils.train.checkpoints import BEST_NAME, LAST_NAME, checkpoint_epoch, load_checkpoint, save_checkpoint
from utils.train.run_config import (
    bind_to_run,
    check_inputs_unchanged,
    check_same_files,
    input_fingerprints,
    read_run_config,
)
from utils.train.run_data import RunData, check_data_dir, protocol_record, run_warnings
from utils.train.trainer import DUCHTrainer, run_epochs

HISTORY_NAME = "history.jsonl"
# what a training or test writes in its run folder (cleared by --overwrite)
RUN_OUTPUTS = (
    CONFIG_NAME, SPLIT_NAME, HISTORY_NAME, BEST_NAME, LAST_NAME, "train.log", "losses.png",
    "metrics*.json", "codes*.npz", "pr_curves*.png", "p_at_k*.png", "test*.log", "test_config*.json",
)


def refuse(message: str):
    raise DUCHError(message)


def run_dir_of(cfg: TrainConfig) -> Path:
    """``out_dir/<run name>``; the name (dataset, bit, tag, preset) stays one folder inside ``out_dir``."""
    from utils.paths import contained, safe_name

    safe_name(cfg.tag, "--tag")
    return contained(cfg.out_dir, safe_name(cfg.run_name(), "run name"), "run folder")


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / HISTORY_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_history(run_dir: Path, history: list[dict]) -> None:
    write_text(run_dir / HISTORY_NAME, "".join(json.dumps(r) + "\n" for r in history))


def config_record(cfg: TrainConfig, device, mode: str, data: RunData, warnings: list[str], **extra) -> dict:
    return {
        **cfg.to_json(), "inputs": input_fingerprints(cfg, data.paths),
        "feature_widths": data.features.widths, "resolved_device": str(device), "mode": mode,
        "argv": list(sys.argv), "git_commit": git_commit(), "versions": versions(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "warnings": warnings, **extra,
    }


def _check_widths(payload: dict, data: RunData, ckpt_path: Path) -> None:
    widths = data.features.widths
    if (payload["image_dim"], payload["caption_dim"]) != (widths["image"], widths["caption"]):
        raise DUCHError(
            f"{ckpt_path} was trained on features of width {payload['image_dim']}/{payload['caption_dim']} "
            f"(image/caption) but the feature files have {widths['image']}/{widths['caption']}; "
            f"the feature files were remade with another encoder"
        )


def _log_warnings(logger, warnings: list[str]) -> None:
    for warning in warnings:
        logger.warning(f"warning: {warning}")


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
          typed: set[str] | frozenset = frozenset()) -> dict:
    """Train, keep best and last checkpoints, then evaluate the best model. Returns the metrics.

    ``typed``: the settings the user typed flags for; with ``resume`` the run's config.json supplies the
    others and a typed one that contradicts it is refused. A training that fails before its first epoch
    is saved leaves no run folder behind.
    """
    check_config(cfg)
    if resume and overwrite:
        refuse("--resume continues a run and --overwrite starts it over: pass one of them")
    run_dir = run_dir_of(cfg)
    ctx = distributed.context()
    out_created = not Path(cfg.out_dir).exists()
    lock = OutputLock(run_dir, "run folder") if ctx.is_main else None
    if lock is not None:
        lock.acquire()  # a second training (or test) of the same run is refused, naming this process
    try:
        if ctx.is_main:
            recover_folder(run_dir, keep=not_run_output)  # a publish killed half-way is finished or undone first
        return _train_locked(cfg, run_dir, resume, overwrite, typed)
    finally:
        if lock is not None:
            lock.release()
            if out_created and not run_dir.exists():  # a failed first training leaves no empty --out-dir either
                try:
                    Path(cfg.out_dir).rmdir()
                except OSError:
                    pass


def is_run_output(name: str) -> bool:
    """Whether a file of a run folder is one main.py writes (RUN_OUTPUTS); anything else is the user's."""
    import fnmatch

    return any(fnmatch.fnmatch(name, pattern) for pattern in RUN_OUTPUTS)


def not_run_output(name: str) -> bool:
    return not is_run_output(name)


def _remove_run_outputs(run_dir: Path) -> None:
    """Delete only the files main.py writes, then the folder if nothing else is in it: a user's file survives."""
    close_log_files()
    for path in run_dir.iterdir() if run_dir.is_dir() else ():
        if path.is_file() and is_run_output(path.name):
            path.unlink()
    try:
        run_dir.rmdir()
    except OSError:
        pass


def _train_locked(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool, typed) -> dict:
    last_path = run_dir / LAST_NAME
    if last_path.exists() and not (resume or overwrite):
        refuse(f"{run_dir} already holds a trained run; pass --resume to continue it, --overwrite to start over, "
               f"--test to evaluate it, or choose another --tag")
    saved = None
    if resume:
        if not last_path.exists():
            refuse(f"--resume: no {LAST_NAME} in {run_dir} to continue from")
        saved = read_run_config(run_dir, "--resume")
        cfg = bind_to_run(cfg, set(typed), saved, run_dir, "resume")
        check_inputs_unchanged(saved, "--resume")
    check_data_dir(cfg, f"the data_dir of {run_dir / CONFIG_NAME}" if resume else "--data-dir")
    run_created = not run_dir.exists()
    # --overwrite of an existing run trains in a hidden folder beside it; the old run stays whole until the
    # new one has saved its first epoch and takes its place in one rename (utils/publish.py)
    staging = staging_path_of(run_dir, "overwrite") if overwrite and run_dir.exists() else None
    work_dir = staging or run_dir
    if staging is not None and distributed.context().is_main and staging.exists():
        shutil.rmtree(staging)  # a hidden folder of ours, left by an overwrite killed before its first epoch
    distributed.barrier()
    check_writable_dir(work_dir, "run folder")
    try:
        return _train(cfg, work_dir, saved, publish_to=run_dir if staging else None)
    except BaseException:
        if distributed.context().is_main:
            if staging is not None and staging.exists():  # the new run never took the old one's place
                close_log_files()
                shutil.rmtree(staging, ignore_errors=True)
            elif run_created and not last_path.exists():  # nothing to resume: leave no empty run folder
                _remove_run_outputs(run_dir)
        raise


def check_model_fits(cfg: TrainConfig, widths: dict, device) -> None:
    """A --bit whose networks cannot fit in memory is refused, saying what they would need."""
    import os

    from models.duch import HIDDEN_UNITS

    hash_nets = sum(w * HIDDEN_UNITS + HIDDEN_UNITS * cfg.bit for w in widths.values())
    params = hash_nets + 2 * (cfg.bit * 2 * cfg.bit + 2 * cfg.bit)  # and the two discriminators
    need = params * 4 * 4  # float32 weights, gradients and two Adam moments
    if device.type == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        try:
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return
    if need > have:
        raise DUCHError(f"--bit {cfg.bit}: the networks would need about {need / 2**30:.1f} GiB ({params:,} "
                        f"parameters with gradients and optimiser state), more than the {have / 2**30:.1f} GiB "
                        f"of {device}; use fewer bits")


def _epoch_line(cfg: TrainConfig, record: dict) -> str:
    loss = record["loss"]
    if cfg.method != "duch":
        terms = ", ".join(f"{k} {v:.6g}" for k, v in loss.items() if k != "total")
        return (f"epoch {record['epoch']}/{cfg.epochs}: loss total {loss['total']:.6g} ({terms}); "
                f"lr {record['lr']:.3g}; {record['time_s']:.3f} s")
    return (
        f"epoch {record['epoch']}/{cfg.epochs}: loss total {loss['total']:.6g} = contrastive {loss['contrastive']:.6g}"
        f" + {cfg.alpha:g} x adversarial {loss['adversarial']:.6g} + {cfg.beta:g} x quantization "
        f"{loss['quantization']:.6g}"
        f" + {cfg.gamma:g} x bit_balance {loss['bit_balance']:.6g}; discriminator {loss['discriminator']:.6g}"
        f"; lr {record['lr']:.3g}; {record['time_s']:.3f} s"
    )


def _method_note(cfg: TrainConfig) -> str:
    if cfg.method != "duch":
        return f"the DUCH authors' {cfg.method.upper()} settings (docs/baselines.md)"
    return "original-release quirks" if cfg.original_quirks else "paper method"


def _loss_weights(cfg: TrainConfig) -> dict[str, float]:
    if cfg.method == "duch":
        return {"adversarial": cfg.alpha, "quantization": cfg.beta, "bit_balance": cfg.gamma}
    from utils.train.trainer_baselines import LOSSES

    return LOSSES[cfg.method].term_weights(cfg.method_params)


def _trainer_class(cfg: TrainConfig, distributed_run: bool):
    """DUCH's trainer (its distributed form under torchrun), or a baseline's (one process only)."""
    if cfg.method != "duch":
        if distributed_run:
            refuse(f"--method {cfg.method} trains in one process: run it with python main.py, not torchrun")
        from utils.train.trainer_baselines import BaselineTrainer

        return BaselineTrainer
    if distributed_run:
        from utils.train.distributed_trainer import DistributedDUCHTrainer

        return DistributedDUCHTrainer
    return DUCHTrainer


def _validation_score(cfg: TrainConfig, data: RunData, trainer, valid: dict, epoch: int, logger) -> float:
    """The score that selects the best model (--select): mAP@K averaged over the directions, or the tie-aware
    mR; logged with the validation table."""
    if data.select == "map":
        score, what = valid[f"map@{cfg.map_k}"]["avg"], f"mAP@{cfg.map_k} avg"
    else:
        score, what = valid["recall"]["tie_aware"]["mr"], "mR (tie-aware)"
    logger.info(f"epoch {epoch + 1}: validation {what} {score:.4f}\n{format_results(valid)}")
    if not data.selects_model:  # no validation images, and test never selects: the latest model is kept
        logger.info("no validation images in the split: the best checkpoint is the latest validated model")
        score = max(score, trainer.best_score + 1.0)
    return score


def _train(cfg: TrainConfig, run_dir: Path, saved: dict | None, publish_to: Path | None = None) -> dict:
    """Under torchrun every rank trains (utils/train/distributed_trainer.py); rank 0 alone writes, logs and tests.

    ``publish_to``: ``run_dir`` is a staging folder that replaces this run folder once the first epoch is saved."""
    last_path = run_dir / LAST_NAME
    ctx = distributed.context()
    device = ctx.device if ctx.distributed else resolve_device(cfg.device)
    seed_everything(cfg.seed)
    saved_files = dict(cfg.files)
    data = RunData(cfg, device)  # before --overwrite deletes anything: bad data leaves the old run intact
    if saved is not None:
        check_same_files(saved_files, cfg.files, "--resume")
    logger = setup_logger(run_dir / "train.log" if ctx.is_main else None,
                          level=logging.INFO if ctx.is_main else logging.ERROR)
    warnings = run_warnings(cfg, data)
    check_model_fits(cfg, data.features.widths, device)
    trainer = _trainer_class(cfg, ctx.distributed)(cfg, data.train_views, data.valid_query, data.valid_db, device)
    trainer.instance = data.valid_instance
    history: list[dict] = []
    record = config_record(cfg, device, "train", data, warnings, **ctx.record())
    if saved is not None:
        state = load_checkpoint(last_path)  # on the CPU: RNG states must stay CPU tensors
        _check_widths(state, data, last_path)
        trainer.load_state(state)
        history = [r for r in read_history(run_dir) if r["epoch"] <= trainer.epoch + 1]
        resumed = {"time": record["time"], "after_epoch": trainer.epoch + 1, "argv": record["argv"],
                   "git_commit": record["git_commit"],
                   **ctx.record()}
        if cfg.epochs != saved["epochs"]:
            resumed["epochs"] = [saved["epochs"], cfg.epochs]
            logger.info(f"--epochs raised from {saved['epochs']} to {cfg.epochs} (recorded in {CONFIG_NAME} under "
                        "'resumed')")
        record.update(time=saved.get("time"), argv=saved.get("argv"), git_commit=saved.get("git_commit"),
                      world_size=saved.get("world_size", 1), backend=saved.get("backend"),
                      resumed=[*saved.get("resumed", []), resumed])
        logger.info(f"resuming {run_dir} after epoch {trainer.epoch + 1} of {cfg.epochs}")
    _log_warnings(logger, warnings)
    for note in width_notes(get_dataset(cfg.dataset, cfg.name), data.features.widths):
        logger.info(note)
    if ctx.is_main:
        write_json(run_dir / CONFIG_NAME, record)
        write_json(run_dir / SPLIT_NAME, data.split_record(), indent=None)
    s = data.split
    logger.info(
        f"{cfg.method.upper()} {cfg.dataset} {cfg.bit} bits, preset {cfg.preset}, "
        f"{_method_note(cfg)}, "
        f"device {device}{f' x {ctx.world_size} ranks ({ctx.backend})' if ctx.distributed else ''}; train "
        f"{len(s.train)} / query {len(s.query)} / database {len(s.db)} images"
    )

    def on_epoch_end(epoch: int, record: dict) -> None:
        nonlocal run_dir, last_path, publish_to
        if not ctx.is_main:
            return
        history.append(record)
        logger.info(_epoch_line(cfg, record), extra=FILE_ONLY)
        if "valid" in record:
            score = _validation_score(cfg, data, trainer, record["valid"], epoch, logger)
            if score > trainer.best_score:
                trainer.best_score, trainer.best_epoch = score, epoch
                save_checkpoint(run_dir / BEST_NAME, trainer.model_payload())
        write_history(run_dir, history)
        save_checkpoint(last_path, trainer.state_payload())
        if publish_to is not None:  # the new run can be resumed now: it takes the old one's place, user files kept
            publish_folder(run_dir, publish_to, keep=not_run_output)
            logger.info(f"--overwrite: the new run replaced the old one in {publish_to} "
                        f"(files main.py did not write were kept)")
            run_dir, last_path, publish_to = publish_to, publish_to / LAST_NAME, None

    try:
        run_epochs(trainer, on_epoch_end)
    except KeyboardInterrupt:
        if trainer.epoch >= 0:
            logger.info(f"interrupted; {trainer.epoch + 1} epochs are saved in {last_path}; continue with the same "
                        "command and --resume")
        else:
            logger.info("interrupted before the first epoch ended; nothing was saved")
        raise SystemExit(130) from None
    if not ctx.is_main:
        return {}
    times = [r["time_s"] for r in history]
    logger.info(f"training done: {len(history)} epochs, median {np.median(times):.3f} s per epoch; best epoch "
                f"{trainer.best_epoch + 1}")
    return test(cfg, run_dir=run_dir, data=data, device=device, warnings=warnings)


def main_command(cfg: TrainConfig, *extra: str) -> str:
    """The main.py command line of a run (for error messages), keeping a non-default --data-dir and --out-dir."""
    parts = ["python main.py", f"--dataset {cfg.dataset}", f"--preset {cfg.preset}", f"--bit {cfg.bit}",
             f"--tag {cfg.tag}"]
    if cfg.method != "duch":
        parts.insert(1, f"--method {cfg.method}")
    if cfg.name:
        parts.append(f"--name {cfg.name}")
    if Path(cfg.data_dir) != Path(get_dataset(cfg.dataset, cfg.name).default_data_dir):
        parts.append(f"--data-dir {cfg.data_dir}")
    if Path(cfg.out_dir) != Path(TrainConfig.out_dir):
        parts.append(f"--out-dir {cfg.out_dir}")
    return " ".join([*parts, *extra])


def _checkpoint_path(cfg: TrainConfig, run_dir: Path, which: str) -> Path:
    ckpt_path = run_dir / (BEST_NAME if which == "best" else LAST_NAME)
    if not ckpt_path.exists() and which == "best" and (run_dir / LAST_NAME).exists():
        ckpt_path = run_dir / LAST_NAME  # an interrupted training has no best model yet
    if not ckpt_path.exists():
        raise DUCHError(
            f"no trained model in {run_dir} (looked for {ckpt_path.name}); train it first with the same flags "
            f"without --test: {main_command(cfg)}"
        )
    return ckpt_path


def test_run(cfg: TrainConfig, typed: set[str] | frozenset = frozenset(), which: str = "best") -> dict:
    """``main.py --test``: evaluate the run in its folder with the settings of its config.json."""
    check_config(cfg)
    run_dir = run_dir_of(cfg)
    with OutputLock(run_dir, "run folder"):  # not while a training or another test writes this run
        recover_folder(run_dir, keep=not_run_output)
        _checkpoint_path(cfg, run_dir, which)
        saved = read_run_config(run_dir, "--test")
        cfg = bind_to_run(cfg, set(typed), saved, run_dir, "test")
        check_data_dir(cfg, f"the data_dir of {run_dir / CONFIG_NAME}")
        check_inputs_unchanged(saved, "--test")
        return test(cfg, run_dir=run_dir, which=which)


def test(cfg: TrainConfig, run_dir: Path | None = None, data: RunData | None = None, device=None, which: str = "best",
         warnings: list[str] | None = None) -> dict:
    """Evaluate a trained model on the query/database sets; write metrics.json, codes.npz and plots.

    The last checkpoint's results go to files that say so: metrics_last.json, codes_last.npz, ...
    """
    check_config(cfg)
    run_dir = run_dir or run_dir_of(cfg)
    ckpt_path = _checkpoint_path(cfg, run_dir, which)
    suffix = "" if ckpt_path.name == BEST_NAME else "_last"
    check_writable_dir(run_dir, "run folder")
    logger = setup_logger(run_dir / f"test{suffix}.log")
    device = device or resolve_device(cfg.device)
    payload = load_checkpoint(ckpt_path)
    if int(payload.get("bit", -1)) != cfg.bit:
        raise DUCHError(f"{ckpt_path} holds a {payload.get('bit')}-bit model but the run is set to {cfg.bit} bits; "
                        f"the checkpoint does not belong to this run folder")
    if data is None:
        seed_everything(cfg.seed)
        saved_files = dict(cfg.files)
        data = RunData(cfg, device)
        check_same_files(saved_files, cfg.files, "--test")
        warnings = run_warnings(cfg, data)
        _log_warnings(logger, warnings)
        write_json(run_dir / f"test_config{suffix}.json",
                   config_record(cfg, device, "test", data, warnings, checkpoint=ckpt_path.name))
    if str(payload.get("method", "duch")) != cfg.method:
        raise DUCHError(f"{ckpt_path} holds a {payload.get('method', 'duch')} model but the run is set to "
                        f"--method {cfg.method}; the checkpoint does not belong to this run folder")
    _check_widths(payload, data, ckpt_path)
    from models.methods import model_from_payload

    model = model_from_payload(payload).to(device)
    model.load_state_dict(payload["model"])
    start = time.perf_counter()
    codes = encode_sets(model, data.query, data.db)
    if data.features.labels is not None:
        metrics = evaluate_codes(codes, data.query.labels, data.db.labels)
    else:
        metrics = {"class_level": "skipped"}
        logger.info("class-level metrics skipped: the dataset has no labels (instance-level recall is reported)")
    test_img, test_txt = model.encode(data.test_instance.image, data.test_instance.caption)  # once: recall and npz
    metrics["recall"] = instance_recall(test_img, test_txt, data.test_instance.caption_image)
    metrics["protocol"] = protocol_record(data)
    elapsed = time.perf_counter() - start
    metrics["model"] = {"checkpoint": ckpt_path.name, "epoch": checkpoint_epoch(payload)}
    metrics["n_query"], metrics["n_db"] = len(data.split.query), len(data.split.db)
    metrics["eval_time_s"] = round(elapsed, 4)
    metrics["warnings"] = list(warnings or [])
    write_json(run_dir / f"metrics{suffix}.json", metrics)
    rows = {"q_rows": np.asarray(data.split.query, dtype=np.int64),
            "db_rows": np.asarray(data.split.db, dtype=np.int64)}
    instance = {"test_img": test_img.cpu().numpy().astype(np.int8), "test_txt": test_txt.cpu().numpy().astype(np.int8),
                "test_txt_image": np.asarray(data.test_instance.caption_image, dtype=np.int64),
                "test_rows": np.asarray(data.split.test, dtype=np.int64), "test_txt_rows": data.test_caption_rows}
    class_codes = codes.to_npz(data.query.labels, data.db.labels) if data.features.labels is not None else {}
    with atomic_path(run_dir / f"codes{suffix}.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **class_codes, **rows, **instance)
    from utils.train.plots import plot_losses, plot_p_at_k, plot_pr_curves

    title = cfg.run_name() + (" (last checkpoint)" if suffix else "")
    if "chance" in metrics:
        plot_pr_curves(metrics, run_dir / f"pr_curves{suffix}.png", title)
        plot_p_at_k(metrics, run_dir / f"p_at_k{suffix}.png", title)
    history = read_history(run_dir)
    if history:
        plot_losses(history, run_dir / "losses.png", cfg.run_name(), weights=_loss_weights(cfg))
    logger.info(
        f"test of {ckpt_path} (epoch {metrics['model']['epoch']}; {metrics['n_query']} queries, {metrics['n_db']} "
        f"database items, {elapsed:.2f} s)\n"
        f"{format_results(metrics)}\nresults in {run_dir}" + (f" (files ending in {suffix})" if suffix else "")
    )
    return metrics
