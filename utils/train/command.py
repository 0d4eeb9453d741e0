"""main.py's flags bound to run configurations: one run's training, --test or --check-overlap, or the grid of
every (dataset, method, bit) the flags name, with the comparison tables.

Only configs/ and the light utils load here: torch and the data pipeline load inside the functions that
need them, so main.py --help and every check of the flags answer before torch loads.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from configs.datasets import get_dataset, is_dataset_file
from configs.encoders import DEFAULT_IMAGE_ENCODER, text_encoder_of
from configs.train import FLOAT_METHOD, METHODS, TrainConfig, check_config
from utils.errors import DUCHError
from utils.logs import setup_logger
from utils.paths import safe_name

ParserFactory = Callable[..., argparse.ArgumentParser]  # main.py's get_args_parser


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


# flags that are not settings of the run: where to look, what to do, which device runs it
NOT_RUN_SETTINGS = ("test", "resume", "overwrite", "checkpoint", "out_dir", "device", "explicit", "check_overlap",
                    "image_dir", "other_image_dir", "describe")


def _values(value) -> list:
    """A flag's values: a list (several typed) or one value (the default, or a namespace built by hand)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _one(value):
    values = _values(value)
    if len(values) != 1:
        raise DUCHError(f"one value expected here, got {len(values)}: {' '.join(map(str, values))}")
    return values[0]


def _dataset_value(value) -> str:
    """A dataset name (any case) or the path of a captions JSON (kept as typed)."""
    return str(value) if is_dataset_file(str(value)) else str(value).lower()


def config_from_args(args: argparse.Namespace, grid: bool = False, parser: ParserFactory | None = None) -> TrainConfig:
    """The run of one (dataset, method, bit): the flags, and for a baseline its configuration's
    epochs, batch size and validation interval where those flags were not typed. In a grid, --param
    reaches the baselines' runs only. ``parser`` makes main.py's parser (see typed_settings)."""
    dataset = _dataset_value(_one(args.dataset))
    method = str(_one(getattr(args, "method", "duch"))).lower()
    name = getattr(args, "name", None)
    data_dir = args.data_dir or get_dataset(dataset, name).default_data_dir
    split, split_file = parse_split(getattr(args, "split", None))
    schedule, params = {}, {}
    if method in METHODS and method not in ("duch", FLOAT_METHOD):
        from configs.baselines import SCHEDULE_FLAGS, method_params, parse_overrides

        params = parse_overrides(method, method_params(method, dataset), getattr(args, "param", []))
        typed = typed_settings(args, parser)
        schedule = {k: params[k] for k in SCHEDULE_FLAGS if k not in typed}
    elif getattr(args, "param", None) and not grid:
        raise DUCHError("--param sets a baseline's hyperparameters (--method djsrh or jdsh); DUCH has its own flags, "
                        "the float reference none")
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "valid_freq": args.valid_freq, **schedule}
    return TrainConfig(
        dataset=dataset, name=name, split=split, split_file=split_file, labels=getattr(args, "labels", None),
        select=getattr(args, "select", None),
        preset=args.preset.lower(), bit=int(_one(args.bit)), model=args.model.lower(), tag=args.tag,
        method=method, method_params=params,
        epochs=flags["epochs"], batch_size=flags["batch_size"], seed=args.seed, alpha=args.alpha, beta=args.beta,
        gamma=args.gamma, contrastive_weights=tuple(args.contrastive_weights), tau=args.tau,
        valid_freq=flags["valid_freq"],
        original_quirks=args.original_quirks, data_dir=data_dir, out_dir=args.out_dir,
        img_aug_emb=args.img_aug_emb, device=args.device,
        encoder=getattr(args, "encoder", None) or DEFAULT_IMAGE_ENCODER,
        text_encoder=text_encoder_of(getattr(args, "encoder", None), getattr(args, "text_encoder", None)),
    )


def parse_split(values) -> tuple[str | None, str | None]:
    """``--split duch``, ``--split json`` or ``--split file PATH`` -> (protocol, path)."""
    if not values:
        return None, None
    protocol, rest = str(values[0]).lower(), list(values[1:])
    if protocol == "file" and len(rest) == 1:
        return protocol, rest[0]
    if protocol in ("duch", "json") and not rest:
        return protocol, None
    if protocol == "file":
        raise DUCHError("--split file needs the path of a split.json: --split file PATH")
    raise DUCHError(f"--split {' '.join(map(str, values))}: choose duch, json or file PATH")


def typed_settings(args: argparse.Namespace, parser: ParserFactory | None = None) -> set[str]:
    """Config fields the user typed a flag for. A namespace built by hand (no ``explicit``) counts every
    flag that differs from the default of the parser ``parser(add_help=False)`` makes (main.py's)."""
    explicit = getattr(args, "explicit", None)
    if explicit is None:
        if parser is None:
            raise TypeError("typed_settings: a namespace without 'explicit' needs the parser that makes its defaults")
        defaults = vars(parser(add_help=False).parse_args([]))
        explicit = [k for k, v in vars(args).items() if k in defaults and v != defaults[k]]
    return {"method_params" if k == "param" else k for k in explicit if k not in NOT_RUN_SETTINGS}


def _ensure_demo(cfg: TrainConfig) -> None:
    """The offline demo's features, made once (by one process under torchrun)."""
    from utils import distributed
    from utils.demo.pipeline import ensure_demo_features
    from utils.logs import setup_logger

    if distributed.context().is_main:
        logger = setup_logger()
        with distributed.one_process():
            encoders = ensure_demo_features(cfg.data_dir, device=cfg.device)
        if encoders:
            logger.info(f"demo features: images {encoders['image_source']}; captions {encoders['text_source']}")
    distributed.barrier()


def grid_cells(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Every (dataset, method, bit) the flags name, in that nesting order, without repeats; the float reference
    has no bits: one cell per dataset."""
    datasets = list(dict.fromkeys(_dataset_value(v) for v in _values(args.dataset)))
    methods = list(dict.fromkeys(str(v).lower() for v in _values(getattr(args, "method", "duch"))))
    bits = list(dict.fromkeys(int(v) for v in _values(args.bit)))
    return [(d, m, b) for d in datasets for m in methods for b in (bits[:1] if m == FLOAT_METHOD else bits)]


def cell_args(args: argparse.Namespace, dataset: str, method: str, bit: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "dataset": dataset, "method": method, "bit": bit})


def check_overlap(cfg: TrainConfig, args: argparse.Namespace) -> dict:
    """--check-overlap OTHER: the test images of this dataset's split found in OTHER's image files."""
    from utils.data.overlap import check_overlap as check
    from utils.data.overlap import overlap_line

    ds = get_dataset(cfg.dataset, cfg.name)
    report = check(ds, cfg.data_dir, cfg.split or ds.default_split, args.check_overlap, cfg.seed, cfg.split_file,
                   args.image_dir, args.other_image_dir)
    setup_logger().info(overlap_line(report))
    return report


def describe(cfg: TrainConfig, out: str, overwrite: bool = False) -> dict:
    """--describe OUT.json: the dataset as a run would read it, checked; the report written and printed."""
    from utils.data.describe import describe_dataset, describe_table
    from utils.io import check_output_file, write_json
    from utils.terminal import printable

    path = check_output_file(out, overwrite, "--describe")
    ds = get_dataset(cfg.dataset, cfg.name)
    report = describe_dataset(ds, cfg.data_dir, cfg.split or ds.default_split, cfg.split_file, cfg.labels, cfg.seed)
    write_json(path, report)
    print(printable(describe_table(report), keep="\n"))
    print(f"wrote {path}")
    return report


def _float(cfg: TrainConfig, args: argparse.Namespace, typed: set[str]) -> dict:
    """--method float: the features' own retrieval by cosine similarity (utils/train/float_run.py)."""
    from utils import distributed
    from utils.train.float_run import float_run

    if args.resume:
        raise DUCHError("--method float trains nothing, so there is nothing to --resume; run it again with --overwrite")
    if distributed.torchrun_world_size() > 1:
        raise DUCHError("--method float scores in one process: run it with python main.py, not torchrun")
    if cfg.dataset == "demo" and args.data_dir is None and not args.test:
        _ensure_demo(cfg)
    return float_run(cfg, typed, test=args.test, overwrite=args.overwrite)


def run(args: argparse.Namespace, parser: ParserFactory) -> dict:
    """main.py: the grid of every (dataset, method, bit) the flags name, or one run's training, --test or
    --check-overlap. ``parser`` makes main.py's parser, for a namespace built by hand (see typed_settings)."""
    cells = grid_cells(args)
    if len(cells) > 1 and getattr(args, "describe", None):
        raise DUCHError("--describe reports one dataset: give one --dataset (and drop the extra --method, --bit)")
    if len(cells) > 1:
        if args.test or args.resume or args.overwrite:
            raise DUCHError("a grid (several --dataset, --method or --bit) skips finished runs and resumes interrupted "
                            "ones "
                            "by itself: drop --test, --resume and --overwrite")
        from utils import distributed
        from utils.train.grid import run_grid

        if distributed.torchrun_world_size() > 1:
            raise DUCHError("a grid runs its trainings one after the other in one process: run it with python main.py")
        configs = [config_from_args(cell_args(args, *cell), grid=True, parser=parser) for cell in cells]
        for cfg in configs:  # every cell's flags are checked before the first one trains
            check_config(cfg)
        for cfg in configs:
            if cfg.dataset == "demo" and args.data_dir is None:
                _ensure_demo(cfg)
                break
        return run_grid(configs, typed_settings(args, parser) - {"dataset", "method", "bit"})
    args = cell_args(args, *cells[0])
    cfg = config_from_args(args, parser=parser)
    typed_split = "split" in (getattr(args, "explicit", None) or [])
    if typed_split:
        args.explicit = [*args.explicit, "split_file"]
    check_config(cfg)  # bad flags are caught before any data is built or read, and before torch loads
    safe_name(cfg.tag, "--tag")  # the tag names the run folder: no separators, no '..', nothing a plot title parses
    typed = typed_settings(args, parser)
    if args.test and (args.resume or args.overwrite):
        raise DUCHError("--test evaluates a trained run; it cannot be combined with "
                        f"--{'resume' if args.resume else 'overwrite'}")
    if getattr(args, "check_overlap", None):
        return check_overlap(cfg, args)
    if getattr(args, "describe", None):
        return describe(cfg, args.describe, args.overwrite)
    from utils import distributed

    if cfg.method == FLOAT_METHOD:
        return _float(cfg, args, typed)
    from utils.train import runner

    if distributed.torchrun_world_size() > 1:  # launched by torchrun: one process per device
        if args.test:
            runner.refuse("--test evaluates in one process: run it with python main.py --test, not torchrun")
        distributed.init_from_env(cfg.device)
    try:
        if cfg.dataset == "demo" and args.data_dir is None and not (args.test or args.resume):  # (data in config)
            _ensure_demo(cfg)
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
