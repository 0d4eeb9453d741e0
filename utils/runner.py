"""Train and test runs of main.py: the run folder, its files, and the order of the work."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from configs.datasets import get_dataset
from configs.presets import get_preset
from configs.train import MODELS, TrainConfig
from utils.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint, save_checkpoint
from utils.errors import DUCHError
from utils.retrieval.evaluation import EvalSet, encode_sets, evaluate_codes, format_map_table
from utils.features import Features, load_features, resolve_files
from utils.io import atomic_path, check_writable_dir, write_json, write_text
from utils.logs import setup_logger
from utils.runtime import resolve_device, seed_everything, versions
from utils.splits import Split, make_split
from utils.training import DUCHTrainer, run_epochs

HISTORY_NAME = "history.jsonl"


def check_config(cfg: TrainConfig) -> None:
    """Catch bad settings at the door, before any file is read."""
    get_dataset(cfg.dataset)
    get_preset(cfg.preset)
    if cfg.model not in MODELS:
        raise DUCHError(f"unknown model {cfg.model!r}; choose one of: {', '.join(MODELS)}")
    for name, value, low in (("bit", cfg.bit, 1), ("epochs", cfg.epochs, 1), ("batch-size", cfg.batch_size, 2), ("valid-freq", cfg.valid_freq, 1)):
        if value < low:
            raise DUCHError(f"--{name} must be at least {low}, got {value}")
    if len(cfg.contrastive_weights) != 3:
        raise DUCHError("--contrastive-weights takes three numbers: INTER INTRA_IMG INTRA_TXT")


class RunData:
    """Features, split and the device tensors of one run."""

    def __init__(self, cfg: TrainConfig, device):
        ds = get_dataset(cfg.dataset)
        self.paths = resolve_files(ds, cfg.data_dir, cfg.preset, cfg.img_aug_emb)
        cfg.files = self.paths.to_json()
        self.features: Features = load_features(ds, self.paths, cfg.preset, cfg.original_quirks)
        self.split: Split = make_split(len(self.features.labels), cfg.seed)
        f, s = self.features, self.split

        def tensor(x):
            return torch.as_tensor(np.ascontiguousarray(x), device=device)

        self.train_views = {
            "i1": tensor(f.image[s.train]),
            "i2": tensor(f.image_aug[s.train]),
            "t1": tensor(f.caption[s.train_captions]),
        }
        self.train_views["t2"] = self.train_views["t1"] if f.caption_aug is None else tensor(f.caption_aug[s.train_captions])
        self.query = EvalSet(tensor(f.image[s.query]), tensor(f.caption[s.query_captions]), tensor(f.labels[s.query]))
        self.db = EvalSet(tensor(f.image[s.db]), tensor(f.caption[s.db_captions]), tensor(f.labels[s.db]))


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / cfg.run_name()


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / HISTORY_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_history(run_dir: Path, history: list[dict]) -> None:
    write_text(run_dir / HISTORY_NAME, "".join(json.dumps(r) + "\n" for r in history))


def _config_record(cfg: TrainConfig, device, mode: str) -> dict:
    return {**cfg.to_json(), "resolved_device": str(device), "mode": mode, "versions": versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Train, keep best and last checkpoints, then evaluate the best model. Returns the metrics."""
    check_config(cfg)
    run_dir = check_writable_dir(run_dir_of(cfg), "run folder")
    last_path = run_dir / LAST_NAME
    if last_path.exists() and not (resume or overwrite):
        raise DUCHError(f"{run_dir} already holds a trained run; pass --resume to continue it, --overwrite to start over, or choose another --tag")
    if resume and not last_path.exists():
        raise DUCHError(f"--resume: no {LAST_NAME} in {run_dir} to continue from")
    logger = setup_logger(run_dir / "train.log")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    data = RunData(cfg, device)
    trainer = DUCHTrainer(cfg, data.train_views, data.query, data.db, device)
    history: list[dict] = []
    if resume:
        state = load_checkpoint(last_path)  # on the CPU: RNG states must stay CPU tensors
        _check_resumable(cfg, state.get("config", {}), last_path)
        trainer.load_state(state)
        history = [r for r in read_history(run_dir) if r["epoch"] <= trainer.epoch]
        logger.info(f"resuming {run_dir} after epoch {trainer.epoch + 1} of {cfg.epochs}")
    write_json(run_dir / "config.json", _config_record(cfg, device, "train"))
    write_json(run_dir / "split.json", data.split.to_json(), indent=None)
    s = data.split
    logger.info(
        f"DUCH {cfg.dataset} {cfg.bit} bits, preset {cfg.preset}, {'original-release quirks' if cfg.original_quirks else 'paper method'}, "
        f"device {device}; train {len(s.train)} / query {len(s.query)} / database {len(s.db)} images"
    )

    def on_epoch_end(epoch: int, record: dict) -> None:
        history.append(record)
        if "valid" in record:
            score = record["valid"][f"map@{cfg.map_k}"]["avg"]
            logger.info(f"epoch {epoch + 1}: validation mAP@{cfg.map_k} avg {score:.4f}\n{format_map_table(record['valid'])}")
            if score > trainer.best_score:
                trainer.best_score, trainer.best_epoch = score, epoch
                save_checkpoint(run_dir / BEST_NAME, trainer.model_payload())
        write_history(run_dir, history)
        save_checkpoint(last_path, trainer.state_payload())

    try:
        run_epochs(trainer, on_epoch_end)
    except KeyboardInterrupt:
        logger.info(f"interrupted; {trainer.epoch + 1} epochs are saved in {last_path}; continue with the same command and --resume")
        raise SystemExit(130) from None
    times = [r["time_s"] for r in history]
    logger.info(f"training done: {len(history)} epochs, median {np.median(times):.3f} s per epoch; best epoch {trainer.best_epoch + 1}")
    return test(cfg, run_dir=run_dir, data=data, device=device)


def _check_resumable(cfg: TrainConfig, saved: dict, path: Path) -> None:
    changed = [k for k in TrainConfig.RESUME_KEYS if k in saved and _norm(saved[k]) != _norm(getattr(cfg, k))]
    if changed:
        detail = ", ".join(f"{k}: {saved[k]} -> {getattr(cfg, k)}" for k in changed)
        raise DUCHError(f"--resume: {path} was trained with other settings ({detail}); use the same flags or another --tag")


def _norm(value):
    return json.loads(json.dumps(value))


def test(cfg: TrainConfig, run_dir: Path | None = None, data: RunData | None = None, device=None, which: str = "best") -> dict:
    """Evaluate a trained model on the query/database sets; write metrics.json, codes.npz and plots."""
    check_config(cfg)
    run_dir = run_dir or run_dir_of(cfg)
    ckpt_path = run_dir / (BEST_NAME if which == "best" else LAST_NAME)
    if not ckpt_path.exists() and which == "best" and (run_dir / LAST_NAME).exists():
        ckpt_path = run_dir / LAST_NAME
    if not ckpt_path.exists():
        raise DUCHError(
            f"no trained model in {run_dir} (looked for {ckpt_path.name}); train it first with the same flags "
            f"without --test: python main.py --dataset {cfg.dataset} --preset {cfg.preset} --bit {cfg.bit} --tag {cfg.tag}"
        )
    check_writable_dir(run_dir, "run folder")
    logger = setup_logger(run_dir / "test.log")
    device = device or resolve_device(cfg.device)
    payload = load_checkpoint(ckpt_path)
    if int(payload.get("bit", -1)) != cfg.bit:
        raise DUCHError(f"{ckpt_path} holds a {payload.get('bit')}-bit model but --bit is {cfg.bit}; pass --bit {payload.get('bit')}")
    if data is None:
        seed_everything(cfg.seed)
        data = RunData(cfg, device)
        write_json(run_dir / "test_config.json", _config_record(cfg, device, "test"))
    dims = (data.query.image.shape[1], data.query.caption.shape[1])
    if (payload["image_dim"], payload["caption_dim"]) != dims:
        raise DUCHError(
            f"{ckpt_path} was trained on features of width {payload['image_dim']}/{payload['caption_dim']} "
            f"(image/caption) but the feature files have {dims[0]}/{dims[1]}"
        )
    from models.duch import DUCH

    model = DUCH(*dims, cfg.bit).to(device)
    model.load_state_dict(payload["model"])
    start = time.perf_counter()
    codes = encode_sets(model, data.query, data.db)
    metrics = evaluate_codes(codes, data.query.labels, data.db.labels)
    elapsed = time.perf_counter() - start
    metrics["model"] = {"checkpoint": ckpt_path.name, "epoch": int(payload.get("epoch", -1)) + 1}
    metrics["n_query"], metrics["n_db"], metrics["eval_time_s"] = len(data.split.query), len(data.split.db), round(elapsed, 4)
    write_json(run_dir / "metrics.json", metrics)
    with atomic_path(run_dir / "codes.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **codes.to_npz(data.query.labels, data.db.labels))
    from utils.plots import plot_losses, plot_p_at_k, plot_pr_curves

    plot_pr_curves(metrics, run_dir / "pr_curves.png", cfg.run_name())
    plot_p_at_k(metrics, run_dir / "p_at_k.png", cfg.run_name())
    history = read_history(run_dir)
    if history:
        plot_losses(history, run_dir / "losses.png", cfg.run_name())
    logger.info(
        f"test of {ckpt_path} ({metrics['n_query']} queries, {metrics['n_db']} database items, {elapsed:.2f} s)\n"
        f"{format_map_table(metrics)}\nresults in {run_dir}"
    )
    return metrics
