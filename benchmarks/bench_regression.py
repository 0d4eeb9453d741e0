"""This tree against an earlier revision on the same hot-path workloads, alternating in one process tree.

Checks REV out into a temporary git worktree, makes the inputs once with this tree's code (class-structured
codes files, RSICD-shaped synthetic features of the real widths), then runs every workload as a child
process of this one, once per revision per round, the order of the two revisions swapped every round.
Prints the median wall time (and where a workload reports it, its own in-process time) and the peak RSS of
each (VmHWM, read every 20 ms), with the ratio this / REV; a row more than 1.10x slower is marked.

Workloads:
- eval_rsicd: evaluate.py on RSICD-scale codes (1092 queries x 4369 items, 64 bits, 4 directions, curves);
- eval_archive: evaluate.py on --archive-queries x --archive-db codes (default 10,000 x 1,000,000);
- train_epoch: main.py, two DUCH epochs on RSICD-shaped features (the second epoch's own time from
  history.jsonl);
- test: main.py --test of that run (the whole process);
- index: search.py index of that run; query_row: search.py query --row 0 on it;
- start_up: main.py --help (imports and the argument parser).
Run it alone: two timed processes at once on 2 cores slow each other down. A workload that runs past
--timeout is stopped and shown as "> T s".
Usage: python benchmarks/bench_regression.py --against REV [--rounds 3] [--only eval_rsicd test]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOADS = ("start_up", "eval_rsicd", "eval_archive", "train_epoch", "test", "index", "query_row")
SLOWER = 1.10
WARM_UP = """
try:
    from utils.retrieval.counting import compile_numba_kernels
except ImportError:
    from utils.retrieval.metrics import compile_numba_kernels
compile_numba_kernels()
"""


def class_structured(rng, centres, labels, flip):
    codes = centres[labels]
    return np.where(rng.random(codes.shape) < flip, -codes, codes).astype(np.int8)


def write_codes(path: Path, n_q: int, n_db: int, bits: int = 64, classes: int = 31, seed: int = 0) -> Path:
    """A main.py-layout codes file: images flip 15 % of their class centre's bits, captions 20 %."""
    rng = np.random.default_rng(seed)
    centres = np.where(rng.random((classes, bits)) > 0.5, 1, -1).astype(np.int8)  # one per class, both sides
    ql, dl = rng.integers(0, classes, n_q), rng.integers(0, classes, n_db)
    arrays = {"q_labels": ql, "db_labels": dl}
    for side, labels in (("q", ql), ("db", dl)):
        arrays[f"{side}_img"] = class_structured(rng, centres, labels, 0.15)
        arrays[f"{side}_txt"] = class_structured(rng, centres, labels, 0.20)
    np.savez(path, **arrays)
    return path


def make_inputs(work: Path, archive: tuple[int, int], workloads) -> dict:
    from configs.datasets import get_dataset
    from utils.demo.synthetic import make_synthetic_features

    inputs = {}
    if "eval_rsicd" in workloads:
        inputs["rsicd_codes"] = write_codes(work / "codes_rsicd.npz", 1092, 4369)
    if "eval_archive" in workloads:
        inputs["archive_codes"] = write_codes(work / "codes_archive.npz", *archive)
    if {"train_epoch", "test", "index", "query_row"} & set(workloads):
        inputs["rsicd_data"] = work / "rsicd_data"
        make_synthetic_features(get_dataset("rsicd"), inputs["rsicd_data"], n_images=10921)
    return inputs


def _high_water(pid: int) -> int:
    """VmHWM of a running process in bytes (0 once it is gone). Read from /proc because the rusage of a
    child starts from the forking parent's peak, which holds this benchmark's inputs."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(argv, cwd: Path, timeout: float) -> tuple[float | None, int, str]:
    """(wall seconds or None on timeout, peak RSS in bytes, output tail) of one child process."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = start + timeout
    output = b""
    peak = 0
    os.set_blocking(proc.stdout.fileno(), False)
    while True:
        peak = max(peak, _high_water(proc.pid))
        chunk = proc.stdout.read()
        if chunk:
            output = (output + chunk)[-20000:]
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            wall = time.perf_counter() - start
            rest = proc.stdout.read()
            output = (output + (rest or b""))[-20000:]
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"{' '.join(map(str, argv))} in {cwd} failed:\n{output.decode(errors='replace')}")
            return wall, peak, output.decode(errors="replace")
        if time.perf_counter() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, 0, output.decode(errors="replace")
        time.sleep(0.02)


class Tree:
    """One revision's checkout and the run folders its workloads write."""

    def __init__(self, name: str, root: Path, work: Path):
        self.name, self.root, self.out = name, root, work / f"runs_{name}"

    def main_args(self, data: Path, out: Path) -> list[str]:
        return ["main.py", "--dataset", "rsicd", "--data-dir", str(data), "--out-dir", str(out), "--bit", "64",
                "--epochs", "2", "--valid-freq", "3", "--device", "cpu"]


def workload(name: str, tree: Tree, inputs: dict, round_no: int, timeout: float) -> dict:
    py = sys.executable
    out = tree.out / f"round{round_no}"
    run_dir = out / "rsicd_64_test_default"
    own = None
    if name == "start_up":
        wall, rss, _ = run_child([py, "main.py", "--help"], tree.root, timeout)
    elif name in ("eval_rsicd", "eval_archive"):
        codes = inputs["rsicd_codes" if name == "eval_rsicd" else "archive_codes"]
        wall, rss, text = run_child([py, "evaluate.py", "--codes", str(codes)], tree.root, timeout)
        own = _seconds_in(text)
    elif name == "train_epoch":
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, _ = run_child([py, *tree.main_args(inputs["rsicd_data"], out)], tree.root, timeout)
        if wall is not None:
            history = (run_dir / "history.jsonl").read_text().splitlines()
            own = json.loads(history[-1]).get("time_s")  # the second epoch: the first warms caches up
    elif name == "test":
        wall, rss, _ = run_child([py, *tree.main_args(inputs["rsicd_data"], out), "--test"], tree.root, timeout)
    elif name == "index":
        shutil.rmtree(run_dir / "index", ignore_errors=True)
        wall, rss, _ = run_child([py, "search.py", "index", "--run", str(run_dir), "--no-progress"], tree.root,
                                 timeout)
    elif name == "query_row":
        wall, rss, _ = run_child([py, "search.py", "query", "--index", str(run_dir / "index"), "--row", "0",
                                  "--modality", "image"],
                                 tree.root, timeout)
    else:
        raise ValueError(name)
    return {"wall": wall, "own": own, "rss": rss}


def _seconds_in(text: str) -> float | None:
    """evaluate.py's own scoring time: '<file> (1.23 s)' on its first result line."""
    import re

    found = re.search(r"\.npz \(([0-9.]+) s\)", text)
    return float(found.group(1)) if found else None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def show(value, timeout, unit="s"):
    if value is None:
        return f"> {timeout:.0f} s" if unit == "s" else "-"
    return f"{value:.2f} s" if unit == "s" else f"{value / 2**30:.2f} GB"


def report(results: dict, names, old: str, timeout: float) -> str:
    lines = [f"| workload | figure | {old} | this tree | ratio this/{old} |", "|---|---|---|---|---|"]
    for name in names:
        for figure, unit in (("wall", "s"), ("own", "s"), ("rss", "GB")):
            a, b = median(results[old][name][figure]), median(results["this"][name][figure])
            if figure == "own" and a is None and b is None:
                continue
            if a is not None and b is not None and a > 0:
                ratio = f"{b / a:.2f}x" + (" SLOWER" if figure != "rss" and b / a > SLOWER else "")
            elif a is None and b is not None and unit == "s":
                ratio = f"< {b / timeout:.3f}x"
            else:
                ratio = "-"
            label = {"wall": "process wall", "own": "its own time", "rss": "peak RSS"}[figure]
            lines.append(f"| {name} | {label} | {show(a, timeout, unit)} | {show(b, timeout, unit)} | {ratio} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, metavar="REV", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each workload per revision (default 3)")
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=list(WORKLOADS), metavar="WORKLOAD")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per workload run (default 300)")
    parser.add_argument("--archive-queries", type=int, default=10_000)
    parser.add_argument("--archive-db", type=int, default=1_000_000)
    args = parser.parse_args()
    names = [w for w in WORKLOADS if w in args.only]
    for needs, on in (("test", "train_epoch"), ("index", "train_epoch"), ("query_row", "index")):
        if needs in names and on not in names:
            parser.error(f"{needs} needs {on} in --only")
    rev = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, capture_output=True, text=True)
    if rev.returncode:
        parser.error(f"unknown revision {args.against}: {rev.stderr.strip()}")
    old = rev.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench_regression_") as tmp:
        work = Path(tmp)
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(work / "old"), old], cwd=ROOT,
                       check=True)
        try:
            start = time.perf_counter()
            inputs = make_inputs(work, (args.archive_queries, args.archive_db), names)
            print(f"inputs made in {time.perf_counter() - start:.1f} s in {work}", flush=True)
            trees = {old: Tree(old, work / "old", work), "this": Tree("this", ROOT, work)}
            for tree in trees.values():  # numba's cache is per source path: each checkout compiles once, untimed
                run_child([sys.executable, "-c", WARM_UP], tree.root, args.timeout)
            results = {t: {n: {"wall": [], "own": [], "rss": []} for n in names} for t in trees}
            for round_no in range(args.rounds):
                order = list(trees) if round_no % 2 == 0 else list(trees)[::-1]
                for name in names:
                    for tree_name in order:
                        got = workload(name, trees[tree_name], inputs, round_no, args.timeout)
                        for key, value in got.items():
                            results[tree_name][name][key].append(value)
                        print(f"round {round_no + 1} {name:12s} {tree_name:8s} wall {show(got['wall'], args.timeout)}"
                              + (f", own {got['own']:.2f} s" if got["own"] is not None else ""), flush=True)
            print(f"\nmedians of {args.rounds} rounds; this tree = {ROOT} (uncommitted changes included), "
                  f"{os.cpu_count()} cores\n")
            print(report(results, names, old, args.timeout))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "old")], cwd=ROOT)


if __name__ == "__main__":
    main()
