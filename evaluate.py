"""Score hash codes with DUCH's metrics: mAP@K, P@K and precision/recall per Hamming radius.

Takes main.py's codes.npz (q_img, q_txt, db_img, db_txt, q_labels, db_labels: four directions and
their mean) or a single-modality file (q, db, q_labels, db_labels: one direction). Codes are ±1 (any
dtype), 0/1, or packed uint8 rows with --bits; labels are class codes (1-D) or multi-hot rows (2-D).
A codes file with test_img, test_txt and test_txt_image (the test images' codes, the codes of all their
captions, and the row in test_img of each caption's image) is also scored, or only scored, with
instance-level recall R@1/5/10 and mR, I->T and T->I, ties by index and tie-aware (docs/datasets.md).
Prints the mAP table with chance level; --out writes metrics.json in main.py's layout.

--compare RUN_DIR... writes the comparison of finished runs of main.py (any methods, bits, seeds): a table
per dataset (methods x bits, mAP@20 I->T / T->I and the mean of four directions, the paper's numbers
beside; mean ± std and n over seeds) as Markdown and CSV, and PR / P@K figures per bit length.
"""
from __future__ import annotations

import argparse

from utils.errors import DUCHError, exit_on_user_error
from utils.retrieval.evaluation import score_codes_file
from utils.retrieval.metrics import DEFAULT_MEMORY_GB, MAP_KS


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", default=None, metavar="FILE.npz", help="codes file to score (or --compare)")
    parser.add_argument("--compare", nargs="+", default=None, metavar="RUN_DIR",
                        help="compare finished run folders of main.py instead: tables and figures in --compare-dir")
    parser.add_argument("--compare-dir", default=".", metavar="DIR",
                        help="with --compare: folder of compare_<dataset>.md/.csv and compare_<dataset>_<bit>.png "
                             "(default: the current folder)")
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
    if (args.codes is None) == (args.compare is None):
        raise DUCHError("pass --codes FILE.npz to score a codes file, or --compare RUN_DIR... to compare runs (one)")
    if args.compare is not None:
        from utils.train.compare import compare_runs

        return compare_runs(args.compare, args.compare_dir)
    return score_codes_file(args.codes, out=args.out, overwrite=args.overwrite, map_ks=args.map_k,
                            with_curves=not args.no_curves, memory_gb=args.memory_gb, bits=args.bits)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
