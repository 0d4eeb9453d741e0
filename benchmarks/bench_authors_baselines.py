"""Our DJSRH / JDSH against the DUCH authors' own baseline code (comrados/jdsh), on identical features.

For each method and seed, one run at a time (never two torch processes at once): the authors' code on a
patched copy of their repository (device placement and worker count only; their configuration with
SEED = the seed, NUM_EPOCH and EVAL_INTERVAL = --epochs), then ``main.py --method M --seed S`` on the same
files. Prints the average mAP@20 (mean of I->T, T->I, I->I, T->T, the last epoch) of every run, the mean over
seeds of each side, and the difference.

    python benchmarks/bench_authors_baselines.py --jdsh-git GITDIR --features DIR --work EMPTY_DIR \\
        [--methods jdsh djsrh] [--seeds 42 43 44] [--epochs 300] [--bit 64]

GITDIR: the git directory of a comrados/jdsh snapshot. DIR: UCM-named files (UCM.json, augmented_UCM.json,
image_emb_UCM_aug_center_crop_only.h5, image_emb_UCM_aug_aug_center.h5, caption_emb_UCM_aug.h5,
caption_emb_UCM_aug_rb.h5); ``--synthetic NOISE`` writes the project's synthetic UCM-shaped files there first.
Their code imports seaborn, scipy and pandas (docs/baselines.md).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATURE_FILES = ("UCM.json", "augmented_UCM.json", "image_emb_UCM_aug_center_crop_only.h5",
                 "image_emb_UCM_aug_aug_center.h5", "caption_emb_UCM_aug.h5", "caption_emb_UCM_aug_rb.h5")
# device placement and worker count: the only changes made to their code
CPU_RULES = ((r"torch\.cuda\.set_device\([^)]*\)", "pass"), (r"storage\.cuda\(\)", "storage"),
             (r"\.cuda\(\)", ".cpu()"), (r"num_workers=self\.cfg\.NUM_WORKERS", "num_workers=0"))
VALID_LINE = re.compile(r"Valid: mAP@20, avg: ([0-9.]+)")


def export_snapshot(git_dir: Path, out: Path) -> None:
    """Their repository's text files at HEAD, with the CPU rules applied to the Python files."""
    names = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "--name-only", "HEAD"],
                           check=True, capture_output=True, text=True).stdout.split()
    for name in names:
        if name.startswith("logs/") or name.endswith(".h5"):
            continue
        blob = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"HEAD:{name}"], capture_output=True)
        if blob.returncode:
            continue
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = blob.stdout
        if name.endswith(".py"):
            src = text.decode()
            for pattern, replacement in CPU_RULES:
                src = re.sub(pattern, replacement, src)
            text = src.encode()
        path.write_bytes(text)
    for folder in ("logs", "plots", "dataset"):
        (out / folder).mkdir(exist_ok=True)


def run_theirs(snapshot: Path, features: Path, method: str, seed: int, epochs: int, bit: int) -> float:
    for name in FEATURE_FILES:
        shutil.copy(features / name, snapshot / "dataset" / name)
    config = snapshot / "config" / f"{method.upper()}_UCM.json"
    cfg = json.loads(config.read_text())
    cfg.update(SEED=seed, NUM_EPOCH=epochs, EVAL_INTERVAL=epochs)
    config.write_text(json.dumps(cfg, indent=2))
    env = dict(os.environ, MPLBACKEND="Agg")
    deps = snapshot.parent / "_pydeps"
    if deps.is_dir():
        env["PYTHONPATH"] = str(deps)
    log = snapshot / f"run_{method}_{seed}.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "main.py", "--model", method.upper(), "--dataset", "UCM", "--bit", str(bit),
                        "--tag", "default"], cwd=snapshot, stdout=f, stderr=subprocess.STDOUT, env=env, check=True)
    found = VALID_LINE.findall(log.read_text())
    if not found:
        raise SystemExit(f"no 'Valid: mAP@20' line in {log}")
    return float(found[-1])


def run_ours(features: Path, out_dir: Path, method: str, seed: int, epochs: int, bit: int) -> float:
    subprocess.run([sys.executable, str(ROOT / "main.py"), "--dataset", "ucm", "--data-dir", str(features),
                    "--method", method, "--bit", str(bit), "--seed", str(seed), "--epochs", str(epochs),
                    "--valid-freq", str(epochs), "--tag", f"seed{seed}", "--out-dir", str(out_dir),
                    "--device", "cpu"], check=True, capture_output=True)
    metrics = json.loads((out_dir / f"{method}_ucm_{bit}_seed{seed}_default" / "metrics.json").read_text())
    return float(metrics["map@20"]["avg"])


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jdsh-git", required=True, help="git directory of a comrados/jdsh snapshot")
    p.add_argument("--features", required=True, help="folder of the six UCM-named files")
    p.add_argument("--work", required=True, help="an empty folder for their copy and our runs")
    p.add_argument("--synthetic", type=float, default=None, metavar="NOISE",
                   help="first write synthetic UCM-shaped files with this noise level into --features")
    p.add_argument("--methods", nargs="+", default=["jdsh", "djsrh"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--bit", type=int, default=64)
    return p


def main(args) -> None:
    features, work = Path(args.features), Path(args.work)
    if args.synthetic is not None:
        sys.path.insert(0, str(ROOT))
        from configs.datasets import get_dataset
        from utils.demo.synthetic import make_synthetic_features

        made = make_synthetic_features(get_dataset("ucm"), features, 2100, 21, seed=0, noise=args.synthetic)
        shutil.copy(made, features / "UCM.json")
    work.mkdir(parents=True, exist_ok=True)
    snapshot = work / "jdsh"
    if not snapshot.exists():
        export_snapshot(Path(args.jdsh_git), snapshot)
    rows = []
    for method in args.methods:
        for seed in args.seeds:
            start = time.perf_counter()
            theirs = run_theirs(snapshot, features, method, seed, args.epochs, args.bit)
            middle = time.perf_counter()
            ours = run_ours(features, work / "ours", method, seed, args.epochs, args.bit)
            rows.append((method, seed, theirs, ours))
            print(f"{method} seed {seed}: theirs {theirs:.3f} ({middle - start:.0f} s), ours {ours:.3f} "
                  f"({time.perf_counter() - middle:.0f} s)", flush=True)
    print(f"\naverage mAP@20 (I->T, T->I, I->I, T->T), {args.bit} bits, {args.epochs} epochs, last epoch")
    print("| method | seeds | authors' code | ours | ours - theirs |\n|---|---|---:|---:|---:|")
    for method in args.methods:
        mine = [r for r in rows if r[0] == method]
        theirs = sum(r[2] for r in mine) / len(mine)
        ours = sum(r[3] for r in mine) / len(mine)
        seeds = " ".join(f"{r[1]}: {r[2]:.3f}/{r[3]:.3f}" for r in mine)
        print(f"| {method} | {seeds} | {theirs:.3f} | {ours:.3f} | {ours - theirs:+.3f} |")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
