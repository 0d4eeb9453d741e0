"""The float reference's cosine ranking (utils/retrieval/cosine.py) against a dense sort of every row, in one run.

Both rank by (similarity descending, database index) and give the same mAP@20, mAP@10 and P@K; the one here
finds the largest cut-off's threshold by a partition and orders only those items, the reference argsorts
each whole row. Class-structured random float embeddings at RSICD test scale (1092 queries x 4369 items,
512-d, 30 classes) and at a larger one. Prints seconds, the ratio, and whether the figures agree. Run alone.

    python benchmarks/bench_cosine.py
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1092x4369", "5000x50000"], metavar="QxN")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=30)
    return parser


def dense_reference(q, db, q_labels, db_labels, ks=(20, 10), p_ks=(1, 5, 10, 20, 50, 100)):
    """mAP@K (the list not cut at K) and P@K from a full stable argsort of every similarity row."""
    from utils.retrieval.cosine import unit_rows

    q, db = unit_rows(q), unit_rows(db)
    ap, hits = np.zeros(len(ks)), np.zeros(len(p_ks))
    for start in range(0, len(q), 256):
        sims = q[start:start + 256] @ db.T
        order = np.argsort(-sims, axis=1, kind="stable")
        relevant = db_labels[order] == q_labels[start:start + 256, None]
        for row in relevant:
            ranks = np.flatnonzero(row) + 1
            for i, k in enumerate(ks):
                m = min(k, len(ranks))
                ap[i] += np.mean(np.arange(1, m + 1) / ranks[:m]) if m else 0.0
            cum = np.cumsum(row)
            hits += [cum[min(k, len(row)) - 1] / min(k, len(row)) for k in p_ks]
    return {f"map@{k}": v / len(q) for k, v in zip(ks, ap)} | {f"p@{k}": v / len(q) for k, v in zip(p_ks, hits)}


def main(args: argparse.Namespace) -> None:
    from utils.retrieval.cosine import cosine_metrics

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.classes, args.dim)).astype(np.float32)
    print(f"{'queries x items':>16s} {'partition + count (s)':>22s} {'dense argsort (s)':>18s} {'ratio':>7s}  same")
    for size in args.sizes:
        n_q, n_db = (int(v) for v in size.split("x"))
        q_labels, db_labels = rng.integers(0, args.classes, n_q), rng.integers(0, args.classes, n_db)
        q = centres[q_labels] + 1.5 * rng.normal(size=(n_q, args.dim)).astype(np.float32)
        db = centres[db_labels] + 1.5 * rng.normal(size=(n_db, args.dim)).astype(np.float32)
        start = time.perf_counter()
        ours = cosine_metrics(q, db, q_labels, db_labels)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        theirs = dense_reference(q, db, q_labels, db_labels)
        t_dense = time.perf_counter() - start
        same = all(abs(ours[k] - theirs[k]) < 1e-9 for k in ("map@20", "map@10")) and all(
            abs(ours["p@k"][k.split("@")[1]] - theirs[k]) < 1e-9 for k in theirs if k.startswith("p@"))
        print(f"{size:>16s} {t_ours:22.2f} {t_dense:18.2f} {t_dense / t_ours:6.2f}x  {same}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
