"""Images/s of images_augment.py in one process and under torchrun with N ranks, on this machine, in one run.

Each variant runs the real command twice, on the demo dataset at two sizes (S and 2S images), and its
throughput is S / (time(2S) - time(S)): process start-up, imports and the rendezvous cancel out. One process
gets every core as threads (torch's default); torchrun gives each of its N ranks one thread (its default
OMP_NUM_THREADS=1), so the ratio says what sharding gains over threading on the same cores. Random ResNet18
weights (--weights none): the encoder's cost is the same as with ImageNet weights. Prints measured numbers
and the ratio; run it alone (other load skews it).

    python benchmarks/bench_torchrun.py --images-per-class 8 --nproc 2
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=8, help="S = 6 x this (the demo has 6 classes)")
    parser.add_argument("--nproc", type=int, default=2, help="torchrun ranks (default: 2)")
    parser.add_argument("--batch-size", type=int, default=16)
    return parser


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def main(args: argparse.Namespace) -> None:
    from utils.demo_data import make_demo_dataset

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for factor in (1, 2):
            sizes[factor] = make_demo_dataset(Path(tmp) / f"x{factor}", images_per_class=factor * args.images_per_class)
        n = 6 * args.images_per_class
        script = ["images_augment.py", "--dataset", "demo", "--weights", "none", "--num-workers", "0", "--no-progress",
                  "--batch-size", str(args.batch_size), "--device", "cpu", "--overwrite"]
        variants = {
            f"1 process, {cores} threads": ([sys.executable, *script], {}),
            f"torchrun, {args.nproc} ranks x 1 thread": (
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}", *script],
                {"OMP_NUM_THREADS": "1"}),
        }
        rates = {}
        for name, (command, extra_env) in variants.items():
            env = {**os.environ, **extra_env, "PYTHONWARNINGS": "ignore"}
            times = {factor: timed([*command, "--data-dir", str(data_dir)], env) for factor, data_dir in sizes.items()}
            rates[name] = n / max(times[2] - times[1], 1e-9)
            print(f"{name:32s} {n} images in {times[1]:6.2f} s, {2 * n} in {times[2]:6.2f} s: {rates[name]:7.2f} images/s "
                  f"(start-up excluded)")
    one, many = rates.values()
    print(f"ratio torchrun / one process: {many / one:.2f}x on {cores} CPU cores")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
