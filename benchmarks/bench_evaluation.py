"""Evaluation speed: the vectorised metrics against the literature's per-query loop, at RSICD scale.

Prints measured seconds for mAP@20 + mAP@10 over the four directions and the ratio; checks that both
give the same numbers. Usage: python benchmarks/bench_evaluation.py [--bits 64] [--queries 1092] [--db 4369]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.evaluation import Codes, evaluate_codes  # noqa: E402
from utils.metrics import hamming_distance  # noqa: E402


def loop_map_k(q, d, ql, dl, k):
    """The per-query loop of the original release (stable sort for equal results)."""
    total = 0.0
    for i in range(q.shape[0]):
        gnd = (ql[i] == dl).float()
        tsum = int(gnd.sum())
        if tsum == 0:
            continue
        order = torch.sort(hamming_distance(q[i : i + 1], d)[0], stable=True).indices
        gnd = gnd[order]
        m = min(k, tsum)
        count = torch.arange(1, m + 1, dtype=torch.float32)
        positions = torch.nonzero(gnd)[:m].squeeze(1).float() + 1.0
        total += float(torch.mean(count / positions))
    return total / q.shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1092)
    parser.add_argument("--db", type=int, default=4369)
    parser.add_argument("--classes", type=int, default=31)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)

    def codes(n):
        return torch.where(torch.rand(n, args.bits, generator=g) > 0.5, 1.0, -1.0)

    c = Codes(codes(args.queries), codes(args.queries), codes(args.db), codes(args.db))
    ql, dl = torch.randint(0, args.classes, (args.queries,), generator=g), torch.randint(0, args.classes, (args.db,), generator=g)
    start = time.perf_counter()
    fast = evaluate_codes(c, ql, dl, with_curves=False)
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    full = evaluate_codes(c, ql, dl, with_curves=True)
    t_full = time.perf_counter() - start
    pairs = {"i2t": (c.q_img, c.db_txt), "t2i": (c.q_txt, c.db_img), "i2i": (c.q_img, c.db_img), "t2t": (c.q_txt, c.db_txt)}
    start = time.perf_counter()
    slow = {k: {name: loop_map_k(q, d, ql, dl, k) for name, (q, d) in pairs.items()} for k in (20, 10)}
    t_loop = time.perf_counter() - start
    diff = max(abs(fast[f"map@{k}"][n] - slow[k][n]) for k in (20, 10) for n in pairs)
    print(f"{args.queries} queries x {args.db} database items, {args.bits} bits, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"vectorised mAP@20+@10, 4 directions:      {t_fast:8.3f} s")
    print(f"vectorised, all metrics (P@K, radius, PR): {t_full:8.3f} s")
    print(f"per-query loop mAP@20+@10, 4 directions:  {t_loop:8.3f} s")
    print(f"speed-up of the vectorised mAP: {t_loop / t_fast:.1f}x; largest mAP difference {diff:.2e}")
    assert full["map@20"] == fast["map@20"]


if __name__ == "__main__":
    main()
