"""Augment the captions of a dataset JSON: rule-based, or back-translation with MarianMT.

    python captions_augment.py --dataset ucm --txt-aug rule-based
    python captions_augment.py --dataset ucm --txt-aug backtranslation-prob --mt-model-dir models/
    python captions_augment.py --dataset ucm --txt-aug backtranslation-chain --mt-model-dir models/

Writes ``<data-dir>/augmented_<DS>.json`` with ``aug_rb`` / ``aug_bt_prob`` / ``aug_bt_chain`` per sentence.
"""
import argparse

from configs.datasets import DATASETS, get_dataset
from configs.files import CAPTION_AUG_KEYS
from utils.backtranslation import DEFAULT_BT_CHAIN, DEFAULT_BT_LANGS
from utils.errors import DUCHError, exit_on_user_error
from utils.rule_based_augment import (
    BERTSCORE_LAYER, BERTSCORE_MODEL, DEFAULT_LEXICON, GLOVE_MIN_SIM, PAPER_BERTSCORE_THRESHOLD, ROUTES,
)


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description="Caption augmentation", add_help=add_help)
    parser.add_argument("--dataset", default="ucm", choices=list(DATASETS), help="dataset")
    parser.add_argument("--txt-aug", default="rule-based", choices=list(CAPTION_AUG_KEYS), help="augmentation type")
    parser.add_argument("--data-dir", default=None, help="folder of the dataset JSON (default: the dataset's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0, ...")
    parser.add_argument("--batch-size", default=32, type=int, help="sentences per translation / scoring batch")
    parser.add_argument("--seed", default=42, type=int)
    parser.add_argument("--overwrite", action="store_true", help="recompute a key already in the augmented JSON")

    rb = parser.add_argument_group("rule-based")
    rb.add_argument("--route", default="auto", choices=ROUTES,
                    help="glove: the paper (GloVe + NLTK tagger + BERTScore); lexicon: shipped offline lexicon; "
                         "auto: glove when all its resources exist, else lexicon")
    rb.add_argument("--lexicon", default=str(DEFAULT_LEXICON), help="synonym lexicon JSON (lexicon route)")
    rb.add_argument("--glove", default=None, help="local GloVe vectors file (glove-wiki-gigaword-200, text format)")
    rb.add_argument("--glove-min-sim", default=GLOVE_MIN_SIM, type=float, help="minimum cosine of a neighbour")
    rb.add_argument("--glove-topk", default=10, type=int, help="neighbours considered per word")
    rb.add_argument("--bertscore-model", default=BERTSCORE_MODEL,
                    help="BERTScore model, hub name or local folder (a local folder is also used by the lexicon route)")
    rb.add_argument("--bertscore-layer", default=BERTSCORE_LAYER, type=int, help="hidden layer used by BERTScore")
    rb.add_argument("--bertscore-threshold", default=None, type=float,
                    help=f"keep a replacement only if its BERTScore F1 reaches this (paper: {PAPER_BERTSCORE_THRESHOLD})")

    bt = parser.add_argument_group("back-translation")
    bt.add_argument("--bt-langs", nargs="+", default=[f"{k}:{v:g}" for k, v in DEFAULT_BT_LANGS.items()],
                    help="pivot languages with weights, LANG:WEIGHT (backtranslation-prob)")
    bt.add_argument("--bt-chain", nargs="+", default=list(DEFAULT_BT_CHAIN),
                    help="pivot chain, en -> ... -> en (backtranslation-chain)")
    bt.add_argument("--mt-model-dir", default=None,
                    help="folder holding opus-mt-<src>-<tgt> model folders (looked up before the hub)")
    bt.add_argument("--cache-dir", default=None, help="translation cache folder (default: <data-dir>/.cache)")
    bt.add_argument("--flush-every", default=10, type=int, help="write the translation cache every N batches")
    bt.add_argument("--max-new-tokens", default=128, type=int, help="longest translation, in tokens")
    bt.add_argument("--num-beams", default=None, type=int, help="beam size (default: the model's own setting)")
    return parser


@exit_on_user_error
def main(args):
    from utils.caption_augment import augment_dataset

    ds = get_dataset(args.dataset)
    for flag in ("batch_size", "flush_every", "max_new_tokens", "glove_topk"):
        if getattr(args, flag) < 1:
            raise DUCHError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.data_dir is None:
        args.data_dir = ds.default_data_dir
    return augment_dataset(args, ds)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
