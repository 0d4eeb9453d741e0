"""Encode a dataset's images with ResNet18 (or ``--encoder``) under one transform set: ``image_emb_DS_aug_<set>.h5``.

``--encoder`` names another torchvision network or a CLIP-family checkpoint (docs/encoders.md); its files
carry its tag. Defaults follow the paper (eval mode, ImageNet normalisation); ``--original-quirks`` reproduces the
authors' release: its encoding order (``np.random.seed(42)``, a permutation, consecutive batches of
525 for UCM / 500 for RSICD), training-mode batch norm and no normalisation.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from configs.datasets import DATASETS
from configs.encoders import DEFAULT_IMAGE_ENCODER
from utils.data.images import DEFAULT_MAX_IMAGE_PIXELS
from utils.data.transforms import IMAGE_AUG_SETS
from utils.errors import exit_on_user_error
from utils.preprocess.image_features import DEFAULT_BATCH_SIZE, ImageFeatureOptions, encode_images


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, except where the help text already says what an unset flag means."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Encode a dataset's images with ResNet18 (512-d features) or another encoder under one image "
                    "transform set.",
        formatter_class=_HelpFormatter, add_help=add_help,
    )
    parser.add_argument("--dataset", default="ucm", metavar="DATASET",
                        help=f"dataset: {', '.join(DATASETS)}, or the path of a captions JSON (default: %(default)s)")
    parser.add_argument("--name", default=None,
                        help="a dataset file's name in output file names (default: the JSON's stem)")
    parser.add_argument("--img-aug", default="no_aug", metavar="IMG_AUG_SET",
                        help=f"image transform set, one of: {', '.join(IMAGE_AUG_SETS)}")
    parser.add_argument("--crop-size", nargs=2, type=int, default=[200, 200], metavar=("CROP_H", "CROP_W"),
                        help="crop size of every set with a centre or random crop")
    parser.add_argument("--rot-deg", nargs=2, type=float, default=[-10, -5], metavar=("ROT_DEG_MIN", "ROT_DEG_MAX"),
                        help="random rotation range in degrees, for rotation_cc (and each_img_random); "
                             "aug_center/aug_random always use -10 -5")
    parser.add_argument("--blur-val", nargs=4, type=float, default=[3, 3, 1.1, 1.3],
                        metavar=("KERNEL_W", "KERNEL_H", "SIGMA_MIN", "SIGMA_MAX"),
                        help="gaussian blur, for blur_cc (and each_img_random); aug_center/aug_random always use 3 3 "
                             "1.1 1.3")
    parser.add_argument("--jit-str", type=float, default=0.5, metavar="JITTER_STRENGTH",
                        help="colour jitter strength s, ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), for jitter_cc "
                             "(and each_img_random)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the dataset JSON and the output (default: the dataset's: data, or data/demo)")
    parser.add_argument("--image-dir", default=None,
                        help="image folder, flat or with class subfolders (default: <data-dir>/<the dataset's image "
                             "folder>)")
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER, metavar="NAME",
                        help="resnet18 (the paper's), another torchvision classification model (resnet50, vit_b_16, "
                             "...), or a CLIP-family checkpoint: a Hugging Face hub id (namespace/name) or a local "
                             "folder (docs/encoders.md)")
    parser.add_argument("--weights", default="imagenet",
                        help="torchvision encoders: 'imagenet' (ResNet18_Weights.IMAGENET1K_V1 for resnet18, the "
                             "builder's DEFAULT weights for the others), a weights enum member (IMAGENET1K_V2), a "
                             "state-dict .pth file, or 'none' (random weights: tests and offline demos only)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0, ...")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per batch (default: {DEFAULT_BATCH_SIZE}; with --original-quirks the "
                             "original's 525 for UCM, 500 for RSICD; 150 for the demo)")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="data-loading worker processes (0: load in the main process)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the random transforms, of --weights none and of the original's encoding order")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help="refuse larger images (PIL's decompression-bomb limit); 0: no limit")
    parser.add_argument("--bit-depth", type=int, default=16, metavar="BITS",
                        help="significant bits of 16-bit images, e.g. 12 for 12-bit sensor data stored in 16-bit "
                             "files: they are scaled to 8 bits by 255 / (2^BITS - 1); 8-bit images are unaffected")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--original-quirks", action="store_true",
                        help="reproduce the original release: its encoding order and batches, network in training "
                             "mode (batch-norm batch statistics) and no ImageNet mean/std normalisation")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@exit_on_user_error
def main(args: argparse.Namespace) -> Path:
    return encode_images(ImageFeatureOptions.from_args(args))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
