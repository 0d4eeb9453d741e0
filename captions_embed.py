"""Embed the dataset captions (raw and every augmented set in the JSON) into HDF5 feature files.

    python captions_embed.py --dataset ucm
    python captions_embed.py --dataset ucm --model /path/to/bert-base-uncased --original-quirks
    python captions_embed.py --dataset ucm --encoder openai/clip-vit-base-patch32

Writes ``caption_emb_DS_aug.h5`` (raw captions) and ``caption_emb_DS_aug_<set>.h5`` for each of
``aug_rb``, ``aug_bt_prob``, ``aug_bt_chain`` present, key ``caption_emb``, shape (5N, width),
row ``5*j + i`` = sentence i of image j (docs/formats.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from configs.datasets import DATASETS
from configs.encoders import DEFAULT_TEXT_ENCODER
from models.text_encoder import DEFAULT_HIDDEN_STATES, DEFAULT_MAX_LENGTH, DEFAULT_TEXT_MODEL, OPERATORS
from utils.errors import exit_on_user_error
from utils.preprocess.caption_features import DEFAULT_BATCH_SIZE, CaptionFeatureOptions, embed_caption_sets

PURPOSE = "Embed the dataset captions (raw and every augmented set) into caption_emb_<DS>_aug*.h5 feature files."


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=PURPOSE, add_help=add_help)
    parser.add_argument("--dataset", default="ucm", metavar="DATASET",
                        help=f"dataset: {', '.join(DATASETS)}, or the path of a captions JSON (default: %(default)s)")
    parser.add_argument("--name", default=None,
                        help="a dataset file's name in output file names (default: the JSON's stem)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the dataset JSON and the feature files (default: the dataset's, e.g. data)")
    parser.add_argument("--encoder", default=DEFAULT_TEXT_ENCODER, metavar="NAME",
                        help="bert: the paper's pooling (the flags below), or a CLIP-family checkpoint, a hub id "
                             "namespace/name or a local folder, whose text tower embeds the captions (docs/encoders.md)"
                             " (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_TEXT_MODEL,
                        help="with --encoder bert: Hugging Face model name or local folder (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH,
                        help="tokens per caption, longer ones truncated (default: %(default)s)")
    parser.add_argument("--hidden-states", type=int, default=DEFAULT_HIDDEN_STATES,
                        help="how many of the last hidden states to combine (default: %(default)s)")
    parser.add_argument("--operator", default="sum", choices=OPERATORS,
                        help="combine the hidden states by sum, or concat along features (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="captions per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0, ... (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute every caption set (without it, sets whose file exists are kept)")
    parser.add_argument("--original-quirks", action="store_true",
                        help="QUIRK of the original release: pad every caption to --max-length and average "
                             "over all positions, padding included (default mode: mean over real tokens only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@exit_on_user_error
def main(args: argparse.Namespace) -> dict[str, Path]:
    """Embed every caption set whose file is missing (all of them with --overwrite); returns {sentence key: file}.

    Ctrl-C anywhere is one line and exit 130; the sets already written stay, the next run does the rest."""
    return embed_caption_sets(CaptionFeatureOptions.from_args(args))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
