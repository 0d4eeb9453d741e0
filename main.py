"""DUCH: train (default) or test (--test) deep unsupervised contrastive hashing on feature files."""
from __future__ import annotations

import argparse
import sys

from configs.datasets import DATASETS, get_dataset
from configs.presets import PRESETS
from configs.train import MODELS, TrainConfig, check_config
from utils.errors import DUCHError, exit_on_user_error
from utils.logs import setup_logger
from utils.paths import safe_name


class RunArgumentParser(argparse.ArgumentParser):
    """Also records which flags were typed (``args.explicit``): --test and --resume check those
    against the run's config.json, so a default is never mistaken for a contradiction, and a typed
    value equal to the default still counts."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, rest = super().parse_known_args(args, namespace)
        defaults = {action: action.default for action in self._actions}
        try:
            for action in self._actions:
                action.default = argparse.SUPPRESS
            typed, _ = super().parse_known_args(args, None)
        finally:
            for action, default in defaults.items():
                action.default = default
        parsed.explicit = sorted(vars(typed))
        return parsed, rest


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = RunArgumentParser(description=__doc__, add_help=add_help)
    parser.add_argument("--test", action="store_true",
                        help="evaluate a trained run with the settings in its config.json, instead of training "
                             "(default: off)")
    parser.add_argument("--bit", type=int, default=d.bit, help="hash code length (default: %(default)s)")
    parser.add_argument("--model", default=d.model,
                        help=f"model type, any case: {', '.join(MODELS)} (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help="training epochs; --resume may raise it (default: %(default)s)")
    parser.add_argument("--tag", default=d.tag, help="model tag (for save path) (default: %(default)s)")
    parser.add_argument("--dataset", default=d.dataset,
                        help=f"one of: {', '.join(DATASETS)}, any case (default: %(default)s)")
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


# flags that are not settings of the run: where to look, what to do, which device runs it
NOT_RUN_SETTINGS = ("test", "resume", "overwrite", "checkpoint", "out_dir", "device", "explicit")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    data_dir = args.data_dir or get_dataset(args.dataset).default_data_dir
    return TrainConfig(
        dataset=args.dataset.lower(), preset=args.preset.lower(), bit=args.bit, model=args.model.lower(), tag=args.tag,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, alpha=args.alpha, beta=args.beta,
        gamma=args.gamma, contrastive_weights=tuple(args.contrastive_weights), tau=args.tau, valid_freq=args.valid_freq,
        original_quirks=args.original_quirks, data_dir=data_dir, out_dir=args.out_dir,
        img_aug_emb=args.img_aug_emb, device=args.device,
    )


def typed_settings(args: argparse.Namespace) -> set[str]:
    """Config fields the user typed a flag for. A namespace built by hand (no ``explicit``) counts every
    flag that differs from the parser's default."""
    explicit = getattr(args, "explicit", None)
    if explicit is None:
        defaults = vars(get_args_parser(add_help=False).parse_args([]))
        explicit = [k for k, v in vars(args).items() if k in defaults and v != defaults[k]]
    return {k for k in explicit if k not in NOT_RUN_SETTINGS}


@exit_on_user_error
def main(args: argparse.Namespace) -> dict:
    cfg = config_from_args(args)
    check_config(cfg)  # bad flags are caught before any data is built or read, and before torch loads
    safe_name(cfg.tag, "--tag")  # the tag names the run folder: no separators, no '..', nothing a plot title parses
    typed = typed_settings(args)
    if args.test and (args.resume or args.overwrite):
        raise DUCHError("--test evaluates a trained run; it cannot be combined with "
                        f"--{'resume' if args.resume else 'overwrite'}")
    from utils import distributed
    from utils.train import runner

    if distributed.torchrun_world_size() > 1:  # launched by torchrun: one process per device
        if args.test:
            runner.refuse("--test evaluates in one process: run it with python main.py --test, not torchrun")
        distributed.init_from_env(cfg.device)
    try:
        # (a run's data is in its config)
        if cfg.dataset == "demo" and args.data_dir is None and not (args.test or args.resume):
            from utils.demo.pipeline import ensure_demo_features

            if distributed.context().is_main:
                logger = setup_logger()
                with distributed.one_process():
                    encoders = ensure_demo_features(cfg.data_dir, device=cfg.device)
                if encoders:
                    logger.info(f"demo features: images {encoders['image_source']}; captions {encoders['text_source']}")
            distributed.barrier()
        if args.test:
            return runner.test_run(cfg, typed, which=args.checkpoint)
        metrics = runner.train(cfg, resume=args.resume, overwrite=args.overwrite, typed=typed)
        distributed.barrier()  # the other ranks wait for rank 0's test of the trained model
        return metrics
    except KeyboardInterrupt:  # outside the epochs (which say how to resume): one line, no traceback
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
