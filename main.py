"""DUCH: train (default) or test (--test) deep unsupervised contrastive hashing on feature files.

--method djsrh / jdsh trains a baseline of the paper's tables in the same harness; several --method,
--bit or --dataset values run the grid of every combination and write the comparison tables.
"""
from __future__ import annotations

import argparse

from configs.datasets import DATASETS
from configs.encoders import DEFAULT_IMAGE_ENCODER
from configs.presets import PRESETS
from configs.train import METHODS, MODELS, SELECT_METRICS, TrainConfig
from utils.errors import exit_on_user_error
from utils.train.command import RunArgumentParser, run


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = RunArgumentParser(description=__doc__, add_help=add_help)
    parser.add_argument("--test", action="store_true",
                        help="evaluate a trained run with the settings in its config.json, instead of training "
                             "(default: off)")
    parser.add_argument("--bit", type=int, nargs="+", default=d.bit,
                        help="hash code length; several run the grid (default: %(default)s)")
    parser.add_argument("--method", nargs="+", default=d.method, type=str.lower,
                        help=f"training method, any case: {', '.join(METHODS)}; several run the grid "
                             "(default: %(default)s)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a baseline's hyperparameter (configs/baselines.py), e.g. --param reweight=true; "
                             "repeatable (default: the method's configuration)")
    parser.add_argument("--model", default=d.model,
                        help=f"model type, any case: {', '.join(MODELS)} (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help="training epochs; --resume may raise it "
                             "(default: %(default)s; a baseline's: its configuration's)")
    parser.add_argument("--tag", default=d.tag, help="model tag (for save path) (default: %(default)s)")
    parser.add_argument("--dataset", nargs="+", default=d.dataset,
                        help=f"one of: {', '.join(DATASETS)}, any case, or the path of a captions JSON; several "
                             f"run the grid (default: %(default)s)")
    parser.add_argument("--name", default=None, help="a dataset file's name in file names (default: the JSON's stem)")
    parser.add_argument("--split", nargs="+", default=None, metavar="PROTOCOL",
                        help="duch (the original's seed-42 split; default for ucm, rsicd, demo), json (the JSON's "
                             "train/val/test; default for the others) or file PATH (a split.json of a run)")
    parser.add_argument("--check-overlap", default=None, metavar="OTHER",
                        help="report which test images also occur (same file content) in another dataset (a name or "
                             "captions JSON), or with 'self' in this dataset's train and val images, then stop "
                             "(default: off)")
    parser.add_argument("--image-dir", default=None,
                        help="with --check-overlap: this dataset's image folder (default: the dataset's)")
    parser.add_argument("--other-image-dir", default=None,
                        help="with --check-overlap: the other dataset's image folder (default: the dataset's)")
    parser.add_argument("--labels", default=None, metavar="CSV",
                        help="filename,label[;label...] rows; wins over the JSON's classes and the file names; 'none': "
                             "no labels, instance-level recall only (default: the dataset's rule, docs/datasets.md)")
    parser.add_argument("--select", default=None, type=str.lower, choices=SELECT_METRICS,
                        help="the validation score that keeps the best model: map (mAP@20, mean of 4 directions) or mr "
                             "(tie-aware mean recall) (default: map where the dataset has labels, mr where not)")
    parser.add_argument("--describe", default=None, metavar="OUT.json",
                        help="read and check everything a run would use from the dataset (no feature files), write "
                             "the counts, split, labels and warnings to OUT.json and print them; trains nothing "
                             "(default: off)")
    parser.add_argument("--preset", default=d.preset,
                        help=f"data preset, any case, one of: {', '.join(PRESETS)} (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=d.alpha, help="alpha hyperparameter (La) (default: %(default)s)")
    parser.add_argument("--beta", type=float, default=d.beta, help="beta hyperparameter (Lq) (default: %(default)s)")
    parser.add_argument("--gamma", type=float, default=d.gamma,
                        help="gamma hyperparameter (Lbb) (default: %(default)s)")
    parser.add_argument(
        "--contrastive-weights", type=float, nargs=3, default=list(d.contrastive_weights),
        metavar=("INTER", "INTRA_IMG", "INTRA_TXT"), help="contrastive loss component weights (default: 1 1 1)",
    )
    parser.add_argument("--tau", type=float, default=d.tau,
                        help="NT-Xent temperature of the contrastive loss; 1 is the original's formula (default: "
                             "%(default)s)")
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER, metavar="NAME",
                        help="the encoder of the feature files to read, as images_augment.py --encoder took it: "
                             "resnet18 (the paper's), a torchvision name, or a CLIP-family checkpoint, which also "
                             "names the caption features (docs/encoders.md) (default: %(default)s)")
    parser.add_argument("--text-encoder", default=None, metavar="NAME",
                        help="the encoder of the caption feature files, as captions_embed.py --encoder took it: bert "
                             "(the paper's) or a CLIP-family checkpoint (default: --encoder when it is a checkpoint, "
                             "else bert)")
    parser.add_argument("--img-aug-emb", default=None,
                        help="overrides the augmented image feature file: a path, or a name in --data-dir (default: "
                             "the preset's)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the JSON and feature files (default: data, or data/demo for demo)")
    parser.add_argument("--out-dir", default=d.out_dir, help="folder of the run folders (default: %(default)s)")
    parser.add_argument("--device", default=d.device,
                        help="auto (cuda if available, else cpu), cpu, cuda, cuda:N (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of the split, caption choice and training (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="training batch size (default: %(default)s)")
    parser.add_argument("--valid-freq", type=int, default=d.valid_freq,
                        help="validate every N epochs, and at the last (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted training with the settings in its config.json (default: off)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a training over in an existing run folder (default: off)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="model evaluated by --test; 'last' writes metrics_last.json, codes_last.npz, ... "
                             "(default: %(default)s)")
    parser.add_argument(
        "--original-quirks", action="store_true",
        help="reproduce the original release exactly: augmented captions never used (txt2 = txt1), adversarial loss on "
             "captions (default: off)",
    )
    return parser


@exit_on_user_error
def main(args: argparse.Namespace) -> dict:
    return run(args, get_args_parser)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
