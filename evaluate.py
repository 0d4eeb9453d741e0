"""Score hash codes with DUCH's metrics: mAP@K, P@K and precision/recall per Hamming radius.

Takes main.py's codes.npz (q_img, q_txt, db_img, db_txt, q_labels, db_labels: four directions and
their mean) or a single-modality file (q, db, q_labels, db_labels: one direction). Codes are ±1 (any
dtype), 0/1, or packed uint8 rows with --bits; labels are class codes (1-D) or multi-hot rows (2-D).
Prints the mAP table with chance level; --out writes metrics.json in main.py's layout.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from utils.errors import DUCHError, exit_on_user_error
from utils.io import write_json
from utils.logs import setup_logger
from utils.retrieval.evaluation import evaluate_file, format_map_table
from utils.retrieval.metrics import DEFAULT_MEMORY_GB, MAP_KS


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", required=True, metavar="FILE.npz", help="codes file to score")
    parser.add_argument("--out", default=None, metavar="metrics.json",
                        help="write the metrics here (default: print the table only)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--map-k", type=int, nargs="+", default=list(MAP_KS), metavar="K",
                        help="K of mAP@K (default: %(default)s)")
    parser.add_argument("--no-curves", action="store_true",
                        help="mAP only: skip P@K and the precision/recall per radius")
    parser.add_argument("--memory-gb", type=float, default=DEFAULT_MEMORY_GB,
                        help="working memory of the scoring (default: %(default)s)")
    parser.add_argument("--bits", type=int, default=None,
                        help="code length of packed uint8 codes (default: codes are unpacked, one value per bit)")
    return parser


@exit_on_user_error
def main(args: argparse.Namespace) -> dict:
    if args.bits is not None and args.bits < 1:
        raise DUCHError(f"--bits must be at least 1, got {args.bits}")
    from utils.io import check_output_file

    out = Path(args.out) if args.out else None
    if out is not None:  # a folder, a missing folder or an existing file is named before any scoring
        if out.is_file() and not args.overwrite:
            raise DUCHError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
        check_output_file(out, overwrite=True, flag="--out")
    logger = setup_logger()
    start = time.perf_counter()
    metrics = evaluate_file(args.codes, map_ks=args.map_k, with_curves=not args.no_curves, memory_gb=args.memory_gb,
                            bits=args.bits)
    elapsed = time.perf_counter() - start
    metrics["codes"] = str(args.codes)
    metrics["eval_time_s"] = round(elapsed, 4)
    if out is not None:
        write_json(out, metrics)
    logger.info(f"{args.codes} ({elapsed:.2f} s)\n{format_map_table(metrics)}" + (f"\nmetrics in {out}" if out else ""))
    return metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
