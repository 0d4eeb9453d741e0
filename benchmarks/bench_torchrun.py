"""Images/s of images_augment.py in one process and under torchrun with N ranks, on this machine, in one run.

Runs the real commands on the demo dataset and reads the script's own "encoded N images in T s" line: the
time from the ranks' common start of encoding to the merged file, so process start-up, imports, model
loading and the rendezvous are left out. One process gets every core as threads (torch's default); torchrun
gives each of its N ranks one thread (its default OMP_NUM_THREADS=1); one process with one thread is the
baseline of N ranks x 1 thread (the scaling), one process with every core as threads what sharding gains
over threading on the same cores. Random ResNet18 weights (--weights none): the encoder costs the same as
with ImageNet weights. Prints measured numbers and the ratio; run it alone (other load skews it).

    python benchmarks/bench_torchrun.py --images-per-class 16 --nproc 2
"""
from __future__ import annotations

import argparse
import os
import re
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


def encoding_rate(command: list[str], env: dict) -> tuple[float, float]:
    """(images/s, wall seconds of the whole command) from one run of images_augment.py."""
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    found = re.search(r"encoded (\d+) images in ([\d.]+) s", proc.stdout)
    if found is None:
        raise SystemExit("no 'encoded N images in T s' line in the output of "
                         f"{' '.join(command)}:\n{proc.stdout[-2000:]}")
    return int(found[1]) / float(found[2]), wall


def main(args: argparse.Namespace) -> None:
    from utils.demo.scenes import make_demo_dataset

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = make_demo_dataset(Path(tmp) / "demo", images_per_class=args.images_per_class)
        n = 6 * args.images_per_class
        script = ["images_augment.py", "--dataset", "demo", "--weights", "none", "--num-workers", "0", "--no-progress",
                  "--batch-size", str(args.batch_size), "--device", "cpu", "--overwrite", "--data-dir", str(data_dir)]
        variants = {
            "1 process, 1 thread": ([sys.executable, *script], {"OMP_NUM_THREADS": "1"}),
            f"1 process, {cores} threads": ([sys.executable, *script], {}),
            f"torchrun, {args.nproc} ranks x 1 thread": (
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                 *script],
                {"OMP_NUM_THREADS": "1"}),
        }
        rates = {}
        for name, (command, extra_env) in variants.items():
            rates[name], wall = encoding_rate(command, {**os.environ, **extra_env, "PYTHONWARNINGS": "ignore"})
            print(f"{name:32s} {n} images: {rates[name]:7.2f} images/s encoding ({wall:6.2f} s for the whole command)")
    single, threaded, ranks = rates.values()
    print(f"ratio torchrun / one process: {ranks / single:.2f}x against 1 thread, {ranks / threaded:.2f}x against "
          f"{cores} threads, on {cores} CPU cores")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
