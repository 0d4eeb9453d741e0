"""Encode a dataset's images with ResNet18 under one transform set: ``image_emb_DS_aug[_<set>].h5``.

Defaults follow the paper (eval mode, ImageNet normalisation); ``--original-quirks`` reproduces the
authors' release (training-mode batch norm over shuffled batches of 525, no normalisation).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from configs.datasets import DATASETS, get_dataset
from configs.files import IMAGE_EMB_KEY, dataset_json_name, image_emb_name
from utils.errors import DUCHError, exit_on_user_error

DEFAULT_BATCH_SIZE = 64
ORIGINAL_BATCH_SIZE = 525  # the original's shuffled batches, which its training-mode batch norm depends on


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    from utils.image_transforms import IMAGE_AUG_SETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    parser.add_argument("--dataset", default="ucm", metavar="DATASET_NAME", help=f"one of: {', '.join(DATASETS)}")
    parser.add_argument("--img-aug", default="no_aug", metavar="IMG_AUG_SET",
                        help=f"image transform set, one of: {', '.join(IMAGE_AUG_SETS)}")
    parser.add_argument("--crop-size", nargs=2, type=int, default=[200, 200], metavar=("CROP_H", "CROP_W"),
                        help="crop size for the center and random crops")
    parser.add_argument("--rot-deg", nargs=2, type=float, default=[-10, -5], metavar=("ROT_DEG_MIN", "ROT_DEG_MAX"),
                        help="random rotation range in degrees")
    parser.add_argument("--blur-val", nargs=4, type=float, default=[3, 3, 1.1, 1.3],
                        metavar=("KERNEL_W", "KERNEL_H", "SIGMA_MIN", "SIGMA_MAX"), help="gaussian blur parameters")
    parser.add_argument("--jit-str", type=float, default=0.5, metavar="JITTER_STRENGTH", help="color jitter strength")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the dataset JSON and the output (default: the dataset's, e.g. data)")
    parser.add_argument("--image-dir", default=None,
                        help="image folder, flat or with class subfolders (default: <data-dir>/<dataset image folder>)")
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (torchvision ResNet18_Weights.IMAGENET1K_V1), a ResNet18 state-dict "
                             ".pth file, or 'none' (random weights: tests and offline demos only)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0, ...")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per batch (default {DEFAULT_BATCH_SIZE}, or {ORIGINAL_BATCH_SIZE} "
                             "with --original-quirks)")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="data-loading worker processes (0: load in the main process)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the random transforms and of --weights none")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--original-quirks", action="store_true",
                        help="reproduce the original release: network in training mode (batch-norm batch "
                             "statistics over shuffled batches) and no ImageNet mean/std normalisation")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@exit_on_user_error
def main(args: argparse.Namespace) -> Path:
    import torch

    from models.image_encoder import build_image_encoder, encode_images
    from utils.dataset_json import load_dataset_json
    from utils.image_transforms import OUTPUT_SIZE, AugParams, SeededTransform, check_image_aug_set
    from utils.images import ImageDataset, check_images_readable, collate_or_error, find_images
    from utils.io import check_writable_dir, refuse_overwrite, write_h5
    from utils.runtime import resolve_device, seed_everything, versions

    # everything the user can get wrong is checked before the long work
    ds = get_dataset(args.dataset)
    img_aug = check_image_aug_set(args.img_aug)
    params = AugParams.checked(args.crop_size, args.rot_deg, args.blur_val, args.jit_str)
    batch_size = args.batch_size or (ORIGINAL_BATCH_SIZE if args.original_quirks else DEFAULT_BATCH_SIZE)
    if batch_size < 1 or args.num_workers < 0:
        raise DUCHError("--batch-size must be >= 1 and --num-workers >= 0")
    data_dir = Path(args.data_dir or ds.default_data_dir)
    image_dir = Path(args.image_dir) if args.image_dir else data_dir / ds.image_dir
    out_path = data_dir / image_emb_name(ds, img_aug, params.rot_deg, params.blur_val, params.jit_str)
    refuse_overwrite(out_path, args.overwrite)
    check_writable_dir(data_dir, "data folder")
    json_path = data_dir / dataset_json_name(ds)
    data = load_dataset_json(json_path, hint=f"pass --data-dir to the folder that holds {json_path.name}")
    paths = find_images(image_dir, data["images"])
    check_images_readable(paths)
    device = resolve_device(args.device)

    seed_everything(args.seed)  # also makes --weights none reproducible
    model, weights_description = build_image_encoder(args.weights)
    normalize = not args.original_quirks
    dataset = ImageDataset(paths, SeededTransform(img_aug, params, normalize=normalize, seed=args.seed))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=args.original_quirks,  # batch composition matters only with batch statistics
        generator=torch.Generator().manual_seed(args.seed),
        num_workers=args.num_workers,
        collate_fn=collate_or_error,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    # channels_last: 1.4x faster on CPU (benchmarks/bench_image_encoder.py), same features to float rounding
    features = encode_images(model, loader, device, len(paths), train_mode=args.original_quirks,
                             channels_last=True, progress=not args.no_progress)

    write_h5(out_path, IMAGE_EMB_KEY, features, attrs={
        "dataset": ds.name,
        "dataset_json": str(json_path),
        "num_images": len(paths),
        "encoder": "torchvision resnet18, fc = Identity (global-average-pool output)",
        "weights": weights_description,
        "original_quirks": bool(args.original_quirks),
        "network_mode": "train (batch-norm batch statistics)" if args.original_quirks else "eval",
        "normalization": "imagenet mean/std" if normalize else "none",
        "memory_format": "channels_last",
        "batch_size": batch_size,
        "shuffled_batches": bool(args.original_quirks),
        "img_aug": img_aug,
        "crop_size": list(params.crop_size),
        "rot_deg": list(params.rot_deg),
        "blur_val": list(params.blur_val),
        "jit_str": params.jit_str,
        "resize": list(OUTPUT_SIZE),
        "seed": args.seed,
        "synthetic_dataset": bool(ds.synthetic or data.get("synthetic", False)),
        "versions": versions(),
    })
    print(f"wrote {out_path}: {IMAGE_EMB_KEY} {features.shape[0]} x {features.shape[1]} float32 "
          f"({img_aug}, weights: {weights_description})")
    return out_path


if __name__ == "__main__":
    main(get_args_parser().parse_args())
