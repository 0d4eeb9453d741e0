"""Evaluation speed and memory: the counting engine against the previous dense implementation.

Class-structured synthetic ±1 int8 codes (as in codes.npz): each class has a random centre code; an
item is its class centre with each bit flipped with probability 0.15 (images) or 0.2 (captions).
Prints, for all four directions with mAP@20, mAP@10, P@K and the PR curve:
- the archive-scale run (--queries x --db, default 10,000 x 1,000,000): time and peak memory
  (tracemalloc peak of the evaluation, and the process's peak RSS);
- the RSICD-scale run (1092 x 4369): time per direction, for the engine and for the dense
  implementation (sort of the whole distance matrix, kept below as it was), their ratio, and the
  largest difference between their values;
- the dense implementation at the archive scale too when it fits in --dense-max-gb (it needs about
  45 bytes per query-item pair).
Usage: python benchmarks/bench_evaluation.py [--queries 10000] [--db 1000000] [--bits 64] [--classes 100]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.retrieval.evaluation import DIRECTIONS, Codes, evaluate_codes  # noqa: E402
from utils.retrieval.hamming import as_code_words  # noqa: E402
from utils.retrieval.metrics import P_AT_K_CUTOFFS, resolve_kernel  # noqa: E402

DENSE_BYTES_PER_PAIR = 45


# ---- the dense implementation this engine replaced (the former utils/metrics.py), unchanged ----------------
def dense_hamming_distance(query_codes, db_codes):
    n_bits = query_codes.shape[1]
    return 0.5 * (n_bits - query_codes.float() @ db_codes.float().T)


def dense_relevance(query_labels, db_labels):
    if query_labels.dim() == 1:
        return query_labels[:, None] == db_labels[None, :]
    return (query_labels.float() @ db_labels.float().T) > 0


def dense_ranked_relevance(distance, relevant):
    order = torch.sort(distance, dim=1, stable=True).indices
    return torch.gather(relevant, 1, order)


def dense_map_at_k(ranked, ks):
    ranked = ranked.float()
    n_relevant = ranked.sum(dim=1)
    hits = ranked.cumsum(dim=1)
    ranks = torch.arange(1, ranked.shape[1] + 1, device=ranked.device, dtype=torch.float32)
    precision_at_hit = ranked * hits / ranks
    ks_t = torch.as_tensor(list(ks), device=ranked.device, dtype=torch.float32)
    m = torch.minimum(ks_t[:, None], n_relevant[None, :])
    within = hits[None, :, :] <= m[:, :, None]
    ap_sum = (precision_at_hit[None, :, :] * within).sum(dim=2)
    ap = torch.where(m > 0, ap_sum / m.clamp(min=1), torch.zeros_like(ap_sum))
    return {int(k): float(v) for k, v in zip(ks, ap.mean(dim=1))}


def dense_precision_at_k(ranked, cutoffs=P_AT_K_CUTOFFS):
    n_db = ranked.shape[1]
    ks = sorted({min(int(k), n_db) for k in cutoffs})
    hits = ranked.float().cumsum(dim=1)
    idx = torch.as_tensor([k - 1 for k in ks], device=ranked.device)
    values = (hits[:, idx] / torch.as_tensor(ks, device=ranked.device, dtype=torch.float32)).mean(dim=0)
    return {k: float(v) for k, v in zip(ks, values)}


def dense_radius_precision_recall(distance, relevant, n_bits):
    d = distance.round().long().clamp(0, n_bits)
    n_q = d.shape[0]
    retrieved = torch.zeros(n_q, n_bits + 1, device=d.device)
    retrieved.scatter_add_(1, d, torch.ones_like(d, dtype=torch.float32))
    hit = torch.zeros(n_q, n_bits + 1, device=d.device)
    hit.scatter_add_(1, d, relevant.float())
    retrieved, hit = retrieved.cumsum(dim=1), hit.cumsum(dim=1)
    n_relevant = relevant.float().sum(dim=1, keepdim=True)
    precision = torch.where(retrieved > 0, hit / retrieved.clamp(min=1), torch.zeros_like(hit))
    recall = torch.where(n_relevant > 0, hit / n_relevant.clamp(min=1), torch.zeros_like(hit))
    return precision.mean(dim=0).tolist(), recall.mean(dim=0).tolist()


def dense_retrieval_metrics(query_codes, db_codes, query_labels, db_labels, map_ks=(20, 10)):
    distance = dense_hamming_distance(query_codes, db_codes)
    relevant = dense_relevance(query_labels, db_labels)
    ranked = dense_ranked_relevance(distance, relevant)
    out = {f"map@{k}": v for k, v in dense_map_at_k(ranked, map_ks).items()}
    out["chance"] = float(relevant.float().mean())
    out["p@k"] = {str(k): v for k, v in dense_precision_at_k(ranked).items()}
    out["precision_radius"], out["recall_radius"] = dense_radius_precision_recall(distance, relevant,
                                                                                  query_codes.shape[1])
    return out


# ---- data and measurements ----------------------------------------------------------------------------
def class_structured(n_q, n_db, bits, n_classes, seed=0):
    """Codes (int8 ±1) and class labels of query and database items, both modalities."""
    rng = np.random.default_rng(seed)
    centres = np.where(rng.random((n_classes, bits)) < 0.5, -1, 1).astype(np.int8)

    def items(labels, flip):
        out = np.empty((len(labels), bits), np.int8)
        for s in range(0, len(labels), 100_000):
            block = centres[labels[s : s + 100_000]]
            out[s : s + 100_000] = np.where(rng.random(block.shape, dtype=np.float32) < flip, -block, block)
        return out

    q_labels, db_labels = rng.integers(0, n_classes, n_q), rng.integers(0, n_classes, n_db)
    codes = {
        "q_img": items(q_labels, 0.15), "q_txt": items(q_labels, 0.2),
        "db_img": items(db_labels, 0.15), "db_txt": items(db_labels, 0.2),
    }
    return codes, q_labels, db_labels


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_engine(codes, q_labels, db_labels, memory_gb):
    """Metrics, wall seconds, CPU seconds (all threads) and tracemalloc peak bytes of the four directions."""
    c = Codes(**{k: codes[k] for k in ("q_img", "q_txt", "db_img", "db_txt")})
    tracemalloc.start()
    start, cpu = time.perf_counter(), cpu_seconds()
    metrics = evaluate_codes(c, q_labels, db_labels, memory_gb=memory_gb, progress=False)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return metrics, elapsed, cpu, peak


def run_dense(codes, q_labels, db_labels):
    t = {k: torch.from_numpy(v).float() for k, v in codes.items()}
    ql, dl = torch.from_numpy(q_labels), torch.from_numpy(db_labels)
    start, cpu = time.perf_counter(), cpu_seconds()
    out = {name: dense_retrieval_metrics(t[f"q_{a}"], t[f"db_{b}"], ql, dl) for name, (a, b) in DIRECTIONS.items()}
    return out, time.perf_counter() - start, cpu_seconds() - cpu


def largest_difference(engine, dense):
    diffs = []
    for name, d in dense.items():
        for k in (20, 10):
            diffs.append(abs(engine[f"map@{k}"][name] - d[f"map@{k}"]))
        diffs.append(abs(engine["chance"][name] - d["chance"]))
        diffs += [abs(engine["p@k"][name][k] - v) for k, v in d["p@k"].items()]
        for key in ("precision_radius", "recall_radius"):
            diffs += [abs(a - b) for a, b in zip(engine[key][name], d[key])]
    return max(diffs)


def gb(n_bytes):
    return n_bytes / 2**30


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--db", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--memory-gb", type=float, default=4.0, help="engine's working memory (default: %(default)s)")
    parser.add_argument("--dense-max-gb", type=float, default=2.0,
                        help="run the dense implementation only under this estimate (default: %(default)s)")
    args = parser.parse_args()
    probe = as_code_words(np.ones((1, args.bits), np.int8))
    kernel = resolve_kernel("auto", probe, np.zeros(1, np.int64))
    print(f"{os.cpu_count()} CPUs, numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), kernel {kernel}")

    # RSICD scale: per direction, engine vs dense
    codes, ql, dl = class_structured(1092, 4369, args.bits, 31, seed=1)
    run_engine(codes, ql, dl, args.memory_gb)  # warm-up (compiled kernels load from cache)
    engine, t_engine, c_engine, _ = run_engine(codes, ql, dl, args.memory_gb)
    dense, t_dense, c_dense = run_dense(codes, ql, dl)
    print(f"RSICD scale, 1092 x 4369, {args.bits} bits, 31 classes, mAP@20 + mAP@10 + P@K + PR (wall time; CPU time of "
          "all threads):")
    print(f"  engine: {t_engine / 4 * 1000:8.1f} ms per direction ({t_engine:.3f} s for 4; CPU {c_engine:.3f} s)")
    print(f"  dense:  {t_dense / 4 * 1000:8.1f} ms per direction ({t_dense:.3f} s for 4; CPU {c_dense:.3f} s)")
    print(f"  speed-up {t_dense / t_engine:.1f}x; largest difference of any value "
          f"{largest_difference(engine, dense):.2e}")
    del codes, engine, dense

    # archive scale
    codes, ql, dl = class_structured(args.queries, args.db, args.bits, args.classes)
    input_bytes = sum(v.nbytes for v in codes.values())
    engine, t_engine, c_engine, peak = run_engine(codes, ql, dl, args.memory_gb)
    pairs = 4 * args.queries * args.db
    print(
        f"archive scale, {args.queries} x {args.db}, {args.bits} bits, {args.classes} classes, four directions, "
        f"mAP@20 + mAP@10 + P@K + PR (--memory-gb {args.memory_gb}):"
    )
    print(f"  engine: {t_engine:8.2f} s ({pairs / t_engine / 1e9:.2f} G pairs/s; CPU {c_engine:.1f} s); mAP@20 avg "
          f"{engine['map@20']['avg']:.4f}")
    print(
        f"  peak memory of the evaluation (tracemalloc): {gb(peak):.3f} GB; process peak RSS: "
        f"{gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024):.3f} GB (the int8 input codes alone: "
        f"{gb(input_bytes):.3f} GB)"
    )
    need = DENSE_BYTES_PER_PAIR * args.queries * args.db
    if gb(need) <= args.dense_max_gb:
        dense, t_dense, c_dense = run_dense(codes, ql, dl)
        print(f"  dense:  {t_dense:8.2f} s (CPU {c_dense:.1f} s); speed-up {t_dense / t_engine:.1f}x; largest "
              f"difference {largest_difference(engine, dense):.2e}")
    else:
        print(f"  dense:  not run, it would need about {gb(need):.0f} GB (over --dense-max-gb {args.dense_max_gb})")


if __name__ == "__main__":
    main()
