"""Image features: a dataset's images encoded under one transform set, ``image_emb_DS_aug_<set>.h5``.

The encoder is the paper's ResNet18, or another (``--encoder``: a torchvision network or a CLIP-family
checkpoint, configs/encoders.py), whose files carry its tag (``image_emb_DS_aug_<set>.<tag>.h5``) and whose
own preprocessing follows the set's augmentations. Defaults follow the paper (eval mode, ImageNet
normalisation); ``original_quirks`` reproduces the authors' release: its encoding order
(``np.random.seed(42)``, a permutation, consecutive batches of 525 for UCM / 500 for RSICD),
training-mode batch norm and no normalisation. ``images_augment.py`` is the command line of
``encode_images``; the flags are described in docs/scripts.md.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from configs.checks import check_seed
from configs.datasets import DatasetInfo, get_dataset
from configs.encoders import DEFAULT_IMAGE_ENCODER, encoder_tag, image_encoder_kind
from configs.files import IMAGE_EMB_KEY, image_emb_name, source_dataset_json
from models.image_encoder import build_image_backbone, encode_image_files
from utils.data.dataset_json import load_dataset_json, warn_dropped
from utils.data.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    check_images_readable,
    consecutive_batches,
    high_bit_depth_rule,
    is_high_bit_depth,
    original_image_order,
)
from utils.data.transforms import (
    OUTPUT_SIZE,
    PAPER_BLUR,
    PAPER_ROTATION,
    AugParams,
    RowsTransform,
    SeededTransform,
    check_image_aug_set,
    original_each_img_random_choices,
    uses_crop,
)
from utils.errors import DUCHError
from utils.fingerprints import file_stats
from utils.io import check_writable_dir, refuse_overwrite, write_h5
from utils.preprocess import resume
from utils.preprocess.options import ScriptOptions
from utils.runtime import resolve_device, seed_everything, versions

DEFAULT_BATCH_SIZE = 64
PARTIAL_SAVE_EVERY_S = 60.0  # progress of a long run is saved this often (and when it is interrupted)


@dataclass
class ImageFeatureOptions(ScriptOptions):
    """Every setting of one image encoding run (the flags of ``images_augment.py``, same names and defaults)."""

    dataset: str = "ucm"  # a dataset name or the path of a captions JSON
    name: str | None = None  # a dataset file's name in file names (default: its stem)
    img_aug: str = "no_aug"
    crop_size: list = field(default_factory=lambda: [200, 200])
    rot_deg: list = field(default_factory=lambda: [-10, -5])
    blur_val: list = field(default_factory=lambda: [3, 3, 1.1, 1.3])
    jit_str: float = 0.5
    data_dir: str | Path | None = None  # default: the dataset's
    image_dir: str | Path | None = None  # default: <data_dir>/<the dataset's image folder>
    encoder: str = DEFAULT_IMAGE_ENCODER  # configs/encoders.py
    weights: str = "imagenet"
    device: str = "auto"
    batch_size: int | None = None  # default: DEFAULT_BATCH_SIZE, or the original's with original_quirks
    num_workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    seed: int = 42
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    bit_depth: int = 16
    overwrite: bool = False
    original_quirks: bool = False
    progress: bool = True


def encode_images(opts: ImageFeatureOptions) -> Path:
    """Encode the images into their feature file (resuming an interrupted run); returns the file.

    Ctrl-C is one line and exit 130; under torchrun each rank encodes its share and rank 0 writes the file."""
    from utils import distributed

    try:
        out_path = _encode(opts)
        distributed.finish()
        return out_path
    except KeyboardInterrupt:
        print("error: interrupted; no feature file was written", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        distributed.shutdown()


def _part_fingerprint(fingerprint: str, rank: int) -> str:
    return json.dumps({"settings": fingerprint, "rank": rank})


def _load_partial(path: Path, fingerprint: str, num_images: int):
    """(features, filled) saved by an interrupted run (or a rank) with the same settings, or None."""
    saved = resume.load_piece(path, fingerprint, rows=("features", num_images), notes=True)
    if saved is not None and "filled" not in saved:
        print(f"note: {path} is unreadable; starting afresh", file=sys.stderr)
        return None
    return None if saved is None else (saved["features"], saved["filled"])


def _save_partial(path: Path, fingerprint: str, features, filled) -> None:
    resume.save_piece(path, fingerprint, features=features, filled=filled)


def _merge_parts(out_path: Path, settings_fingerprint: str, shard_rows: list[list[int]], width: int, num_images: int,
                 attrs: dict) -> None:
    """Rank 0 writes the ranks' part files into the output, one part in memory at a time, then deletes them."""
    def load(rank: int, part: Path):
        saved = _load_partial(part, _part_fingerprint(settings_fingerprint, rank), len(shard_rows[rank]))
        return None if saved is None or not saved[1].all() else (shard_rows[rank], saved[0])

    resume.merge_parts(out_path, IMAGE_EMB_KEY, (num_images, width), len(shard_rows), attrs, load,
                       "is missing or incomplete")


@dataclass
class _Job:
    """What one run encodes, every user-fixable setting checked: the dataset, transform set, files and batches."""

    ds: DatasetInfo
    img_aug: str
    params: object  # utils.data.transforms.AugParams
    quirks: bool
    batch_size: int
    data_dir: Path
    out_path: Path
    json_path: Path
    data: dict
    paths: list
    image_dir: Path | None = None  # every image must resolve inside it when it is read


def _checked_job(opts: ImageFeatureOptions) -> _Job:
    """Everything the user can get wrong, checked before the long work."""
    from utils.data.images import find_images

    ds = get_dataset(opts.dataset, opts.name)
    img_aug = check_image_aug_set(opts.img_aug)
    params = AugParams.checked(opts.crop_size, opts.rot_deg, opts.blur_val, opts.jit_str)
    quirks = bool(opts.original_quirks)
    if quirks and image_encoder_kind(opts.encoder) != "paper":
        raise DUCHError(f"--original-quirks reproduces the original release's ResNet18 encoding (batch statistics, no "
                        f"normalisation); it does not apply to --encoder {opts.encoder}")
    check_seed(opts.seed)
    batch_size = opts.batch_size
    if batch_size is None:  # 0 is an error below, not the default
        batch_size = ds.original_image_batch_size if quirks else DEFAULT_BATCH_SIZE
    if batch_size < 1 or opts.num_workers < 0 or opts.max_image_pixels < 0:
        raise DUCHError("--batch-size must be >= 1, --num-workers >= 0 and --max-image-pixels >= 0")
    if not 9 <= opts.bit_depth <= 16:
        raise DUCHError(f"--bit-depth is the significant bits of 16-bit images: 9..16, got {opts.bit_depth}")
    data_dir = Path(opts.data_dir or ds.default_data_dir)
    image_dir = Path(opts.image_dir) if opts.image_dir else data_dir / ds.image_dir
    out_path = data_dir / image_emb_name(ds, img_aug, params.rot_deg, params.blur_val, params.jit_str, opts.encoder)
    refuse_overwrite(out_path, opts.overwrite)
    json_path = source_dataset_json(ds, data_dir)
    data = load_dataset_json(json_path, hint=f"pass --data-dir to the folder that holds {json_path.name}", ds=ds)
    warn_dropped(data)
    check_writable_dir(data_dir, "data folder")
    paths = find_images(image_dir, data["images"])
    return _Job(ds, img_aug, params, quirks, batch_size, data_dir, out_path, json_path, data, paths, image_dir)


def _provenance(opts: ImageFeatureOptions, job: _Job, backbone, choices, formats: dict,
                high_bit_depth: int, world_size: int) -> dict:
    """The HDF5 attributes of the feature file: how its rows were made."""
    quirks, params, img_aug, n = job.quirks, job.params, job.img_aug, len(job.paths)
    paper = backbone.kind == "paper"
    own = {} if paper else {"encoder_name": opts.encoder, "encoder_kind": backbone.kind,
                            "encoder_tag": encoder_tag(opts.encoder), "weights_flag": opts.weights,
                            "preprocessing": backbone.preprocessing, "width": backbone.width,
                            **({"encoder_source": backbone.source} if backbone.source else {})}
    return {
        "dataset": job.ds.name,
        "dataset_json": str(job.json_path),
        "num_images": n,
        "encoder": ("torchvision resnet18, fc = Identity (global-average-pool output)" if paper else
                    f"torchvision {opts.encoder}, last linear layer = Identity" if backbone.kind == "torchvision" else
                    f"CLIP-family checkpoint {opts.encoder}: vision tower and projection"),
        **own,
        "weights": backbone.weights,
        "original_quirks": quirks,
        "network_mode": "train (batch-norm batch statistics)" if quirks else "eval",
        "normalization": ("none" if quirks else "imagenet mean/std") if paper else "the encoder's own (preprocessing)",
        "memory_format": "channels_last",
        "batch_size": job.batch_size,
        "encoding_order": (f"original: np.random.seed({opts.seed}); np.random.permutation({n}); "
                           f"consecutive batches of {job.batch_size}") if quirks else "JSON order",
        "img_aug": img_aug,
        "crop_size": list(params.crop_size),
        "rot_deg": list(PAPER_ROTATION if img_aug in ("aug_center", "aug_random") else params.rot_deg),
        "blur_val": list(PAPER_BLUR if img_aug in ("aug_center", "aug_random") else params.blur_val),
        "jit_str": params.jit_str,
        "each_img_random_choice": (f"original: random.seed({opts.seed}), random.choice per image in encoding order"
                                   if choices is not None else "per image from (seed, index)"),
        "resize": list(OUTPUT_SIZE) if paper else "the encoder's own (preprocessing)",
        "seed": opts.seed,
        "image_formats": dict(formats),
        "high_bit_depth_conversion": (high_bit_depth_rule(opts.bit_depth) if high_bit_depth
                                      else "none needed (8-bit images)"),
        "synthetic_dataset": bool(job.ds.synthetic or job.data.get("synthetic", False)),
        "world_size": world_size,
        "versions": versions(),
    }


def _encode(opts: ImageFeatureOptions) -> Path:
    from utils import distributed

    job = _checked_job(opts)
    paths, quirks, out_path = job.paths, job.quirks, job.out_path
    ctx = distributed.init_from_env(opts.device) if distributed.torchrun_world_size() > 1 else distributed.context()
    device = ctx.device if ctx.distributed else resolve_device(opts.device)

    # the order of work: the original's permutation and batches in quirk mode (its training-mode batch
    # norm makes every row depend on its batch mates); JSON order otherwise (eval mode: rows independent)
    order = original_image_order(len(paths), opts.seed) if quirks else np.arange(len(paths))
    batches = consecutive_batches(order, job.batch_size)
    choices = (original_each_img_random_choices(order, opts.seed) if quirks and job.img_aug == "each_img_random"
               else None)
    # under torchrun each rank encodes a contiguous run of these batches: the one-process batches, so the
    # same rows in quirk mode and the same batch shapes (bitwise the same features on CPU) in the default
    shards = [batches[slice(*distributed.shard_bounds(len(batches), ctx.world_size, r))] for r in range(ctx.world_size)]
    shard_rows = [[i for batch in shard for i in batch] for shard in shards]
    rows = shard_rows[ctx.rank]

    formats = check_images_readable([paths[i] for i in rows] if ctx.distributed else paths, opts.max_image_pixels,
                                    opts.bit_depth, crop_size=job.params.crop_size if uses_crop(job.img_aug) else None,
                                    roots=[job.image_dir])
    formats = distributed.sum_counters(formats)
    high_bit_depth = sum(count for fmt, count in formats.items() if is_high_bit_depth(fmt))
    if high_bit_depth and ctx.is_main:
        print(f"note: {high_bit_depth} images are not 8-bit "
              f"({', '.join(sorted(f for f in formats if is_high_bit_depth(f)))}); "
              f"converted to 8 bits as documented: {high_bit_depth_rule(opts.bit_depth)}", file=sys.stderr)

    seed_everything(opts.seed)  # also makes --weights none reproducible
    backbone = build_image_backbone(opts.encoder, opts.weights)
    model, weights_description = backbone.model, backbone.weights
    transform = SeededTransform(job.img_aug, job.params, normalize=not quirks, seed=opts.seed, choices=choices,
                                preprocess=backbone.preprocess)
    attrs = _provenance(opts, job, backbone, choices, formats, high_bit_depth, ctx.world_size)

    # an interrupted run resumes from its saved rows when every setting that shapes them is the same
    fingerprint = json.dumps({k: attrs[k] for k in attrs if k != "versions"} | {  # images' size and mtime included:
        "paths": [str(p) for p in paths], "device_type": device.type,       # an edited image is encoded again
        "inputs": file_stats(paths)}, sort_keys=True, default=str)
    work_paths, work_batches = paths, batches
    partial_path = resume.partial_path(out_path)
    if ctx.distributed:  # this rank's images, with the seeds of their JSON rows; its partial file is its part
        transform = RowsTransform(transform, rows)
        work_paths = [paths[i] for i in rows]
        starts = np.cumsum([0] + [len(batch) for batch in shards[ctx.rank]])
        work_batches = [list(range(a, b)) for a, b in zip(starts[:-1], starts[1:])]
        partial_path = resume.part_path(out_path, ctx.rank, ctx.world_size)
        settings_fingerprint, fingerprint = fingerprint, _part_fingerprint(fingerprint, ctx.rank)
    features, to_encode, started = _encode_resumably(opts, job, model, transform, work_paths, work_batches, device,
                                                     partial_path, fingerprint, ctx)

    if ctx.distributed:
        _save_partial(partial_path, fingerprint, features, np.ones(len(work_paths), dtype=bool))  # this shard is done
        distributed.barrier()
        to_encode = distributed.sum_counters({"images": to_encode})["images"]
        if not ctx.is_main:
            return out_path
        _merge_parts(out_path, settings_fingerprint, shard_rows, features.shape[1], len(paths), attrs)
    else:
        write_h5(out_path, IMAGE_EMB_KEY, features, attrs=attrs)
    partial_path.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    print(f"encoded {to_encode} images in {elapsed:.2f} s ({to_encode / max(elapsed, 1e-9):.2f} images/s"
          f"{f', {ctx.world_size} ranks' if ctx.distributed else ''})")
    print(f"wrote {out_path}: {IMAGE_EMB_KEY} {len(paths)} x {features.shape[1]} float32 "
          f"({job.img_aug}, weights: {weights_description}"
          + (f"; {ctx.world_size} ranks" if ctx.distributed else "") + ")")
    return out_path


def _encode_resumably(opts: ImageFeatureOptions, job: _Job, model, transform, work_paths: list, work_batches: list,
                      device, partial_path: Path, fingerprint: str, ctx):
    """(features, images encoded now, start time): this process's rows, resumed from its partial (or part) file,
    which is saved every PARTIAL_SAVE_EVERY_S and when the encoding stops early."""
    from utils import distributed

    resumed = _load_partial(partial_path, fingerprint, len(work_paths))
    features, filled = resumed if resumed else (None, None)
    if resumed:
        rank = f"rank {ctx.rank}: " if ctx.distributed else ""
        print(f"{rank}resuming: {int(filled.sum())} of {len(work_paths)} images already encoded in {partial_path}",
              file=sys.stderr)
        # batch-norm buffers change in train mode, but only batch statistics shape the outputs
    state = {"features": features, "filled": filled, "saved_at": time.monotonic()}
    to_encode = len(work_paths) - (int(filled.sum()) if filled is not None else 0)
    distributed.barrier()  # the ranks start encoding together: the time below is the job's
    started = time.perf_counter()

    def on_batch(features, filled):
        state["features"], state["filled"] = features, filled
        if time.monotonic() - state["saved_at"] >= PARTIAL_SAVE_EVERY_S:
            _save_partial(partial_path, fingerprint, features, filled)
            state["saved_at"] = time.monotonic()

    try:
        features = encode_image_files(
            model, transform, work_paths, device, num_workers=opts.num_workers, batches=work_batches,
            train_mode=job.quirks, channels_last=True, progress=opts.progress and ctx.is_main,
            max_pixels=opts.max_image_pixels, bit_depth=opts.bit_depth, features=features, filled=filled,
            on_batch=on_batch, roots=[job.image_dir],
        )
    except BaseException as err:  # Ctrl-C or a bad image: keep what was encoded, for the rerun
        done = 0 if state["filled"] is None else int(state["filled"].sum())
        if done:
            _save_partial(partial_path, fingerprint, state["features"], state["filled"])
        if isinstance(err, KeyboardInterrupt):
            kept = f"{done} of {len(job.paths)} images are saved in {partial_path}; " if done else ""
            print(f"error: interrupted; {job.out_path} was not written; {kept}rerun the same command to resume",
                  file=sys.stderr)
            raise SystemExit(130) from None
        raise
    return features, to_encode, started
