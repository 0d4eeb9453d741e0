"""Epoch time of DUCH, DJSRH and JDSH at UCM shape (2100 images) and RSICD shape (10921 images).

Synthetic class-structured features of the real widths (512 / 768, utils/demo/synthetic.py), each method
with its own batch size and networks (DUCH 256, the baselines 32 as the authors ran them); the median
over --epochs of one training epoch, validation excluded.
Usage: python benchmarks/bench_baselines.py [--epochs 3] [--bit 64] [--device auto] [--datasets ucm rsicd]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.baselines import method_params  # noqa: E402
from configs.datasets import get_dataset  # noqa: E402
from configs.train import METHODS, TrainConfig  # noqa: E402
from utils.demo.synthetic import make_synthetic_features  # noqa: E402
from utils.runtime import resolve_device, seed_everything  # noqa: E402
from utils.train.run_data import RunData  # noqa: E402

SHAPES = {"ucm": 2100, "rsicd": 10921}


def trainer_of(method: str, dataset: str, data_dir: Path, bit: int, device):
    params = {} if method == "duch" else method_params(method, dataset)
    cfg = TrainConfig(dataset=dataset, data_dir=str(data_dir), bit=bit, method=method, method_params=params,
                      batch_size=params.get("batch_size", TrainConfig.batch_size))
    seed_everything(cfg.seed)
    data = RunData(cfg, device)
    if method == "duch":
        from utils.train.trainer import DUCHTrainer as Trainer
    else:
        from utils.train.trainer_baselines import BaselineTrainer as Trainer
    trainer = Trainer(cfg, data.train_views, data.query, data.db, device)
    trainer.show_progress = False
    return trainer, len(data.split.train)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bit", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--datasets", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; {args.bit} bits")
    for key in args.datasets:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            make_synthetic_features(get_dataset(key), data_dir, n_images=SHAPES[key])
            print(f"\n== {key.upper()}-shaped: {SHAPES[key]} images ==")
            for method in args.methods:
                trainer, n_train = trainer_of(method, key, data_dir, args.bit, device)
                times = []
                for epoch in range(args.epochs):
                    start = time.perf_counter()
                    trainer.train_epoch(epoch)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
                print(f"{method:6s} batch {trainer.cfg.batch_size:4d}, {n_train} training pairs: one epoch "
                      f"{statistics.median(times):.3f} s (median of {args.epochs}; first {times[0]:.3f} s)")


if __name__ == "__main__":
    main()
