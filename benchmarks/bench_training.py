"""Training and test speed on UCM-shaped (2100 images) and RSICD-shaped (10921 images) generated features.

For each shape: the time of one training epoch (median over --epochs) and of a full ``--test``, run
through main.py on synthetic features of the real widths (512 / 768). Also compares, in the same run,
batch assembly by indexing device tensors (ours) with a per-sample Dataset + DataLoader (the
original's), over one epoch's batches. Usage: python benchmarks/bench_training.py [--epochs 3] [--bit 64]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main as duch_main  # noqa: E402
from configs.datasets import get_dataset  # noqa: E402
from utils.demo.synthetic import make_synthetic_features  # noqa: E402


class PerSampleDataset(torch.utils.data.Dataset):
    def __init__(self, *arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)


def batch_assembly(views: dict, batch_size: int) -> tuple[float, float]:
    n = views["i1"].shape[0]
    start = time.perf_counter()
    order = torch.randperm(n)
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        _ = [v[idx] for v in views.values()]
    t_index = time.perf_counter() - start
    loader = torch.utils.data.DataLoader(PerSampleDataset(*views.values()), batch_size=batch_size, shuffle=True)
    start = time.perf_counter()
    for _ in loader:
        pass
    return t_index, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bit", type=int, default=64)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    for key, n_images in (("ucm", 2100), ("rsicd", 10921)):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            make_synthetic_features(get_dataset(key), data, n_images=n_images)
            argv = ["--dataset", key, "--data-dir", str(data), "--out-dir", str(Path(tmp) / "runs"), "--bit",
                    str(args.bit),
                    "--epochs", str(args.epochs), "--valid-freq", str(args.epochs + 1), "--device", "cpu"]
            duch_main.main(duch_main.get_args_parser().parse_args(argv))
            run_dir = Path(tmp) / "runs" / f"{key}_{args.bit}_test_default"
            history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
            epoch_s = statistics.median(h["time_s"] for h in history)
            start = time.perf_counter()
            metrics = duch_main.main(duch_main.get_args_parser().parse_args([*argv, "--test"]))
            test_s = time.perf_counter() - start
            from configs.train import TrainConfig
            from utils.train.run_data import RunData

            views = RunData(TrainConfig(dataset=key, data_dir=str(data)), torch.device("cpu")).train_views
            t_index, t_loader = batch_assembly(views, 256)
        print(f"\n== {key.upper()}-shaped: {n_images} images, {args.bit} bits ==")
        print(f"one training epoch (median of {args.epochs}): {epoch_s:.2f} s")
        print(f"full --test (load features, encode, all metrics, files, plots): {test_s:.2f} s; metrics alone "
              f"{metrics['eval_time_s']:.2f} s "
              f"({metrics['n_query']} queries x {metrics['n_db']} database items)")
        print(f"batch assembly for one epoch: tensor indexing {t_index * 1e3:.1f} ms, per-sample DataLoader "
              f"{t_loader * 1e3:.1f} ms, "
              f"ratio {t_loader / t_index:.0f}x")


if __name__ == "__main__":
    main()
