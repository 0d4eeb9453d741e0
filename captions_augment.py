"""Augment the captions of a dataset JSON: rule-based (the paper's GloVe + BERTScore rule), or back-translation.

    python captions_augment.py --dataset ucm --txt-aug rule-based
    python captions_augment.py --dataset ucm --txt-aug backtranslation-prob --mt-model-dir models/
    python captions_augment.py --dataset ucm --txt-aug backtranslation-chain --mt-model-dir models/

Writes ``<data-dir>/augmented_<DS>.json`` with ``aug_rb`` / ``aug_bt_prob`` / ``aug_bt_chain`` per sentence.
"""
import argparse

from configs.datasets import DATASETS
from configs.files import CAPTION_AUG_KEYS
from utils.errors import exit_on_user_error
from utils.preprocess.backtranslation import DEFAULT_BT_CHAIN, DEFAULT_BT_LANGS
from utils.preprocess.caption_augment import CaptionAugmentOptions, augment_captions
from utils.preprocess.rule_based import (
    BERTSCORE_MODEL,
    DEFAULT_LEXICON,
    GLOVE_MIN_SIM,
    GLOVE_TOPN,
    PAPER_BERTSCORE_THRESHOLD,
    ROUTES,
)

PURPOSE = "Augment dataset captions (rule-based or back-translation) into augmented_<DS>.json."


def get_args_parser(add_help=True):
    parser = argparse.ArgumentParser(description=PURPOSE, add_help=add_help)
    parser.add_argument("--dataset", default="ucm", metavar="DATASET_NAME",
                        help=f"dataset: {', '.join(DATASETS)} (default: %(default)s)")
    parser.add_argument("--txt-aug", default="rule-based", metavar="TXT_AUG_TYPE",
                        help=f"augmentation type: {', '.join(CAPTION_AUG_KEYS)} (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="folder of the dataset JSON (default: the dataset's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0, ... (default: %(default)s)")
    parser.add_argument("--batch-size", default=32, type=int,
                        help="sentences per translation batch (default: %(default)s)")
    parser.add_argument("--seed", default=42, type=int, help="seed of every random draw (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="recompute a key already in the augmented JSON")
    parser.add_argument("--original-quirks", action="store_true",
                        help="QUIRK of the original release: backtranslation-prob outputs cut to the longest raw "
                             "caption's length, backtranslation-chain outputs not lower-cased")

    rb = parser.add_argument_group("rule-based")
    rb.add_argument("--route", default="auto",
                    help=f"{', '.join(ROUTES)}. glove: the paper's (gensim GloVe, NLTK tagger, bert-score); "
                         "lexicon: the shipped offline lexicon; auto: glove when its resources are present or "
                         "downloadable, else lexicon, with a warning (default: %(default)s)")
    rb.add_argument("--lexicon", default=str(DEFAULT_LEXICON),
                    help="synonym lexicon JSON (lexicon route) (default: %(default)s)")
    rb.add_argument("--glove", default=None,
                    help="GloVe / word2vec vectors file (glove-wiki-gigaword-200; default: gensim-data's cache, "
                         "else gensim.downloader)")
    rb.add_argument("--glove-min-sim", default=GLOVE_MIN_SIM, type=float,
                    help="minimum cosine of a neighbour (default: %(default)s)")
    rb.add_argument("--glove-topk", default=GLOVE_TOPN, type=int,
                    help="neighbours considered per word (default: %(default)s)")
    rb.add_argument("--bertscore-model", default=BERTSCORE_MODEL,
                    help="BERTScore model, hub name or local folder (default: %(default)s)")
    rb.add_argument("--bertscore-layer", default=None, type=int,
                    help="hidden layer used by BERTScore (default: bert_score's layer for the model, "
                         "17 for roberta-large)")
    rb.add_argument("--bertscore-baseline", default=None,
                    help="BERTScore rescale baseline file (default: the one bert_score ships for the model name)")
    rb.add_argument("--bertscore-threshold", default=None, type=float,
                    help=f"thresholded mode: a random candidate among those with F1 > T (paper: "
                         f"{PAPER_BERTSCORE_THRESHOLD}) (default: none, the best F1)")

    bt = parser.add_argument_group("back-translation")
    bt.add_argument("--bt-langs", nargs="+", default=[f"{k}:{v:g}" for k, v in DEFAULT_BT_LANGS.items()],
                    help="pivot languages with weights, LANG:WEIGHT (backtranslation-prob) (default: %(default)s)")
    bt.add_argument("--bt-chain", nargs="+", default=list(DEFAULT_BT_CHAIN),
                    help="pivot chain, en -> ... -> en (backtranslation-chain) (default: %(default)s)")
    bt.add_argument("--mt-model-dir", default=None,
                    help="folder holding opus-mt-<src>-<tgt> model folders (looked up before the hub)")
    bt.add_argument("--cache-dir", default=None, help="translation cache folder (default: <data-dir>/.cache)")
    bt.add_argument("--flush-every", default=10, type=int,
                    help="write the translation cache every N batches (default: %(default)s)")
    bt.add_argument("--max-new-tokens", default=128, type=int,
                    help="longest translation, in tokens (default: %(default)s)")
    bt.add_argument("--num-beams", default=None, type=int, help="beam size (default: the model's own setting)")
    return parser


@exit_on_user_error
def main(args):
    return augment_captions(CaptionAugmentOptions.from_args(args))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
