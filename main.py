"""DUCH: train (default) or test (--test) deep unsupervised contrastive hashing on feature files."""
from __future__ import annotations

import argparse

from configs.datasets import DATASETS
from configs.presets import PRESETS
from configs.train import TrainConfig
from utils.errors import exit_on_user_error


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, add_help=add_help)
    parser.add_argument("--test", action="store_true", help="run test")
    parser.add_argument("--bit", type=int, default=d.bit, help="hash code length (default: %(default)s)")
    parser.add_argument("--model", default=d.model, help="model type (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument("--tag", default=d.tag, help="model tag (for save path) (default: %(default)s)")
    parser.add_argument("--dataset", default=d.dataset, help=f"one of: {', '.join(DATASETS)} (default: %(default)s)")
    parser.add_argument("--preset", default=d.preset, help=f"data preset, one of: {', '.join(PRESETS)} (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=d.alpha, help="alpha hyperparameter (La) (default: %(default)s)")
    parser.add_argument("--beta", type=float, default=d.beta, help="beta hyperparameter (Lq) (default: %(default)s)")
    parser.add_argument("--gamma", type=float, default=d.gamma, help="gamma hyperparameter (Lbb) (default: %(default)s)")
    parser.add_argument(
        "--contrastive-weights", type=float, nargs=3, default=list(d.contrastive_weights),
        metavar=("INTER", "INTRA_IMG", "INTRA_TXT"), help="contrastive loss component weights (default: 1 1 1)",
    )
    parser.add_argument("--img-aug-emb", default=None, help="overrides augmented image embeddings file (u-curve)")
    parser.add_argument("--data-dir", default=None, help="folder of the JSON and feature files (default: data, or data/demo for demo)")
    parser.add_argument("--out-dir", default=d.out_dir, help="folder of the run folders (default: %(default)s)")
    parser.add_argument("--device", default=d.device, help="auto (cuda if available, else cpu), cpu, cuda, cuda:N (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the split, caption choice and training (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    parser.add_argument("--valid-freq", type=int, default=d.valid_freq, help="validate every N epochs, and at the last (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training from its last epoch")
    parser.add_argument("--overwrite", action="store_true", help="start a training over in an existing run folder")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="model evaluated by --test (default: %(default)s)")
    parser.add_argument(
        "--original-quirks", action="store_true",
        help="reproduce the original release exactly: augmented captions never used (txt2 = txt1), adversarial loss on captions",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from configs.datasets import get_dataset

    data_dir = args.data_dir or get_dataset(args.dataset).default_data_dir
    return TrainConfig(
        dataset=args.dataset.lower(), preset=args.preset, bit=args.bit, model=args.model, tag=args.tag,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, alpha=args.alpha, beta=args.beta,
        gamma=args.gamma, contrastive_weights=tuple(args.contrastive_weights), valid_freq=args.valid_freq,
        original_quirks=args.original_quirks, data_dir=data_dir, out_dir=args.out_dir,
        img_aug_emb=args.img_aug_emb, device=args.device,
    )


@exit_on_user_error
def main(args: argparse.Namespace) -> dict:
    from utils import runner

    cfg = config_from_args(args)
    runner.check_config(cfg)  # bad flags are caught before any data is built or read
    if cfg.dataset == "demo" and args.data_dir is None:
        from utils.demo import ensure_demo_features
        from utils.logs import setup_logger

        logger = setup_logger()
        encoders = ensure_demo_features(cfg.data_dir, device=cfg.device)
        if encoders:
            logger.info(f"demo features: images {encoders['image_source']}; captions {encoders['text_source']}")
    if args.test:
        return runner.test(cfg, which=args.checkpoint)
    return runner.train(cfg, resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
