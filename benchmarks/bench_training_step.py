"""Where a DUCH training step's time goes, and how close it comes to the machine's GEMM rate.

On RSICD-shaped synthetic features (10,921 images, widths 512 / 768, the DUCH split's training part; other
shapes with --dataset and --images):
- the time of one epoch (median of --epochs), for each variant of the step in VARIANTS, alternating;
- the step split into its parts (hash forward of the four views, discriminator step, hashing loss with
  backward and Adam step) by timers around each part, and the epoch's B update;
- achieved GFLOP/s of the hashing networks' linear layers (forward and backward, counted from the shapes)
  against plain torch fp32 GEMMs of exactly those shapes, timed in the same run: the GEMM ratio.
Usage: python benchmarks/bench_training_step.py [--epochs 3] [--bit 64] [--dataset nwpu --images 31500]
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

from configs.datasets import get_dataset  # noqa: E402
from configs.train import TrainConfig  # noqa: E402
from models.duch import HIDDEN_UNITS  # noqa: E402
from utils.demo.synthetic import make_synthetic_features  # noqa: E402
from utils.train.run_data import RunData  # noqa: E402
from utils.train.trainer import DUCHTrainer, batch_indices  # noqa: E402

VARIANTS = {"views fused": True, "views one by one": False}


def linear_gemms(batch: int, d_in: int, bits: int, hidden: int = HIDDEN_UNITS) -> list[tuple[int, int, int]]:
    """(m, k, n) of every GEMM one view's hashing net does in a training step: forward x W1^T and h W2^T;
    backward grad W2, grad h, grad W1 (the input features need no gradient)."""
    return [(batch, d_in, hidden), (batch, hidden, bits), (bits, batch, hidden), (batch, bits, hidden),
            (hidden, batch, d_in)]


def gemm_seconds(shapes, repeats: int = 20) -> float:
    """Best time of the plain fp32 GEMMs of ``shapes`` done one after the other."""
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for a, b in mats:
            torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


def timed_epoch(trainer: DUCHTrainer, epoch: int) -> tuple[float, dict[str, float]]:
    """One epoch with timers around the parts of each step (the timers cost a few microseconds a step)."""
    parts = dict.fromkeys(("hash forward", "discriminator step", "hashing loss, backward, step", "B update"), 0.0)
    original = trainer._hash_outputs

    def hash_outputs(idx):
        start = time.perf_counter()
        out = original(idx)
        parts["hash forward"] += time.perf_counter() - start
        return out

    trainer._hash_outputs = hash_outputs
    disc_step = trainer.opt_disc.step
    marks = {}

    def disc_step_timed(*a, **k):
        out = disc_step(*a, **k)
        marks["disc_done"] = time.perf_counter()
        return out

    trainer.opt_disc.step = disc_step_timed
    start = time.perf_counter()
    order = torch.randperm(trainer.B.shape[0])
    for idx in batch_indices(order, trainer.cfg.batch_size):
        t0 = time.perf_counter()
        forward_before = parts["hash forward"]
        trainer._train_step(idx)
        t1 = time.perf_counter()
        forward = parts["hash forward"] - forward_before
        parts["discriminator step"] += marks["disc_done"] - t0 - forward
        parts["hashing loss, backward, step"] += t1 - marks["disc_done"]
    t = time.perf_counter()
    trainer._update_codes()
    parts["B update"] += time.perf_counter() - t
    total = time.perf_counter() - start
    del trainer._hash_outputs, trainer.opt_disc.step  # the class's methods again
    return total, parts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bit", type=int, default=64)
    parser.add_argument("--dataset", default="rsicd", help="the shape: its split and widths (default rsicd)")
    parser.add_argument("--images", type=int, default=10921, help="images of the synthetic dataset (default 10921)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_features(get_dataset(args.dataset), Path(tmp), n_images=args.images)
        cfg = TrainConfig(dataset=args.dataset, data_dir=tmp, bit=args.bit, split="duch")  # synthetic: no split fields
        data = RunData(cfg, torch.device("cpu"))
    views = data.train_views
    n_train, d_img, d_txt = views["i1"].shape[0], views["i1"].shape[1], views["t1"].shape[1]
    trainers = {}
    for name, fused in VARIANTS.items():
        torch.manual_seed(0)
        trainers[name] = DUCHTrainer(cfg, views, data.valid_query, data.valid_db, torch.device("cpu"))
        trainers[name].fuse_views = fused
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {n_train} training images, batch "
          f"{cfg.batch_size}, {args.bit} bits, widths {d_img} / {d_txt}")
    times = {name: [] for name in VARIANTS}
    parts_of = {name: [] for name in VARIANTS}
    for epoch in range(args.epochs):
        for name in (list(VARIANTS) if epoch % 2 == 0 else list(VARIANTS)[::-1]):
            total, parts = timed_epoch(trainers[name], epoch)
            times[name].append(total)
            parts_of[name].append(parts)
    steps = len(batch_indices(torch.arange(n_train), cfg.batch_size))
    batches = [len(idx) for idx in batch_indices(torch.arange(n_train), cfg.batch_size)]
    flops = sum(2 * m * k * n for b in batches for d in (d_img, d_txt) for m, k, n in 2 * linear_gemms(b, d, args.bit))
    gemm_s = {}
    for name, fused in VARIANTS.items():  # the GEMM shapes each variant does: both views' rows at once, or one view's
        rows, times_each = (2, 1) if fused else (1, 2)
        shapes = [s for b in batches for d in (d_img, d_txt) for s in times_each * linear_gemms(rows * b, d, args.bit)]
        gemm_s[name] = gemm_seconds(shapes, repeats=3)
    print(f"\nlinear layers of the hashing nets: {flops / 1e9:.1f} GFLOP per epoch ({steps} steps)")
    print("\n| step | epoch (median) | GFLOP/s of the linear layers | the same GEMMs alone (plain torch fp32) "
          "| share of the GEMM rate |")
    print("|---|---|---|---|---|")
    for name in VARIANTS:
        epoch_s = statistics.median(times[name])
        print(f"| {name} | {epoch_s:.3f} s | {flops / epoch_s / 1e9:.1f} | {gemm_s[name]:.3f} s = "
              f"{flops / gemm_s[name] / 1e9:.1f} GFLOP/s | {gemm_s[name] / epoch_s:.0%} |")
    ratio = statistics.median(times["views one by one"]) / statistics.median(times["views fused"])
    print(f"\nviews one by one / views fused: {ratio:.2f}x")
    for name in VARIANTS:
        print(f"\nparts of an epoch, {name} (median):")
        for part in parts_of[name][0]:
            value = statistics.median(p[part] for p in parts_of[name])
            print(f"  {part:32s} {value:.3f} s")


if __name__ == "__main__":
    main()
