"""``search.py index``: encode a run's whole dataset (and new images) into packed codes, search structures and
metadata.

An index folder holds, per modality (``images``, ``captions``), one or more segments
(``utils.search.segments``): packed codes ``codes_<m>.npy`` (``utils.retrieval.codes``), continuous
pre-sign outputs ``outputs_<m>.npy`` (float16, for ``--rerank``) and a search structure (a faiss
binary index, or the multi-index tables of ``utils.search.mih``); the per-row metadata of both
modalities in ``metadata.sqlite``; and ``manifest.json`` (written last: an index without it is
unfinished), which records the run, the checkpoint and its sha256, the feature files and their
provenance, the standardisation and the encoders a query needs. New images (``--image-dir``) are
encoded in shards under ``image_dir_features/``, each written atomically, so an interrupted run
resumes. ``--codes`` (``codes_index``) indexes codes made elsewhere; ``--add`` / ``--remove``
(``grow``) change an index without rebuilding it.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from configs import files
from configs.datasets import get_dataset
from configs.presets import BASE_IMAGE_SET
from utils.data.dataset_json import caption_offsets, load_dataset_json
from utils.data.features import FeatureFiles, load_feature_file, resolve_files
from utils.data.images import find_image
from utils.data.labels import class_names_from_filenames, resolve_labels
from utils.data.splits import make_split
from utils.errors import DUCHError
from utils.io import check_writable_dir, read_h5_attrs, read_json
from utils.preprocess import resume
from utils.runtime import resolve_device, versions
from utils.search import writer
from utils.search.archive import MANIFEST_NAME
from utils.search.encoders import (
    FeatureStats,
    ImageEncoderSpec,
    TextEncoderSpec,
    find_image_files,
    hash_outputs,
    pack_outputs,
)
from utils.search.segments import DEFAULT_NPROBE, INDEX_TYPES, MAX_NPROBE

SHARDS_DIR = "image_dir_features"
NEW_IMAGE_SPLIT = "new"


# ----------------------------------------------------------------------------------------------
# the trained run


@dataclass
class TrainedRun:
    """A main.py run folder: its resolved configuration and one of its checkpoints."""

    run_dir: Path
    config: dict
    checkpoint: Path
    which: str

    @classmethod
    def open(cls, run_dir: str | Path, which: str = "best") -> "TrainedRun":
        from utils.train.checkpoints import BEST_NAME, LAST_NAME

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise DUCHError(f"run folder not found: {run_dir}; train one with python main.py (runs are "
                            f"<out-dir>/<dataset>_<bit>_<tag>_<preset>, e.g. checkpoints/demo_32_test_default)")
        config = read_json(run_dir / files.CONFIG_NAME, "run configuration",
                           f"{run_dir} is not a run folder of main.py")
        path = run_dir / (BEST_NAME if which == "best" else LAST_NAME)
        if not path.is_file() and which == "best" and (run_dir / LAST_NAME).is_file():
            path = run_dir / LAST_NAME  # as main.py --test: a run without validation keeps only the last model
        if not path.is_file():
            raise DUCHError(f"no trained model in {run_dir} (looked for {path.name}); finish the training with main.py "
                            "first")
        return cls(run_dir, config, path, which)

    def load_model(self, device, payload: dict | None = None):
        """The networks of the checkpoint (DUCH, DJSRH or JDSH, as it records), in eval mode on ``device``."""
        from models.methods import model_from_payload
        from utils.train.checkpoints import load_checkpoint

        payload = payload or load_checkpoint(self.checkpoint)
        try:
            model = model_from_payload(payload)
            model.load_state_dict(payload["model"])
        except (KeyError, RuntimeError) as err:
            raise DUCHError(f"{self.checkpoint} is not a checkpoint of main.py: "
                            f"{str(err).splitlines()[0]}") from None
        return model.to(device).eval()


# ----------------------------------------------------------------------------------------------
# options


@dataclass
class IndexOptions:
    run_dir: Path
    data_dir: Path | None = None
    out: Path | None = None
    checkpoint: str = "best"
    index_type: str = "auto"
    nlist: int | None = None
    nprobe: int = DEFAULT_NPROBE
    image_dir: Path | None = None
    codes: Path | None = None  # --codes FILE.npz: index these codes instead of a run's
    add: bool = False
    remove: list = field(default_factory=list)
    compact: bool = False
    captions: Path | None = None  # --add --captions FILE: new captions of indexed images
    dataset_image_dir: Path | None = None
    # the image encoder when the image features carry no record of theirs
    weights: str | None = None
    img_aug: str = "center_crop_only"
    crop_size: tuple = (200, 200)
    image_seed: int = 42
    no_normalize: bool = False
    bit_depth: int | None = None
    # the text model when the caption features carry no record of theirs
    text_model: str | None = None
    text_max_length: int = 64
    text_hidden_states: int = 4
    text_operator: str = "sum"
    text_original_quirks: bool = False
    device: str = "auto"
    batch_size: int = 64
    num_workers: int = 0
    shard_size: int = 1024
    overwrite: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise DUCHError(f"unknown --index-type {self.index_type!r}; choose one of: {', '.join(INDEX_TYPES)}")
        for name, value, high in (("batch-size", self.batch_size, 1 << 20), ("shard-size", self.shard_size, 1 << 31),
                                  ("nprobe", self.nprobe, MAX_NPROBE), ("nlist", self.nlist or 1, 1 << 24)):
            if not 1 <= value <= high:
                raise DUCHError(f"--{name} must be 1..{high}, got {value}")
        if self.bit_depth is not None and not 9 <= self.bit_depth <= 16:
            raise DUCHError(f"--bit-depth is the significant bits of 16-bit images: 9..16, got {self.bit_depth}")
        if self.num_workers < 0:
            raise DUCHError(f"--num-workers must be >= 0, got {self.num_workers}")


# ----------------------------------------------------------------------------------------------
# features of the run's dataset


def _feature_paths(cfg: dict, ds, data_dir: Path | None):
    if data_dir is not None:
        if not data_dir.is_dir():
            raise DUCHError(f"--data-dir {data_dir}: no such folder")
        return resolve_files(ds, data_dir, cfg["preset"], cfg.get("img_aug_emb"), cfg.get("encoder"),
                             cfg.get("text_encoder"))
    recorded = cfg.get("files") or {}
    if not recorded:
        return resolve_files(ds, cfg.get("data_dir", ds.default_data_dir), cfg["preset"], cfg.get("img_aug_emb"),
                             cfg.get("encoder"), cfg.get("text_encoder"))
    return FeatureFiles(**{k: Path(v) for k, v in recorded.items() if k in FeatureFiles.__dataclass_fields__})


def check_run_inputs(cfg: dict, paths: FeatureFiles, run_dir: Path) -> None:
    """The feature files the index reads are the ones the run was trained on (its config.json's fingerprints),
    as ``main.py --test`` requires: codes of a changed file would not be the run's."""
    from utils.fingerprints import changed_inputs

    read = ("image", "caption")  # the index reads the base image and caption files only
    recorded = {key: record for key, record in (cfg.get("inputs") or {}).items() if key in read}
    changed = changed_inputs(recorded, {key: getattr(paths, key) for key in read})
    if changed:
        raise DUCHError(f"search.py index of {run_dir}: input files changed since the run was trained "
                        f"({'; '.join(changed)}); its codes would not be the run's: retrain it (main.py --overwrite), "
                        f"or restore the files it was trained on")


def _load_raw(path: Path, key: str, n_images: int, width: int, hint: str, what: str,
              n_captions: int | None = None) -> np.ndarray:
    """One feature file as stored (not yet standardised), checked against the dataset and the checkpoint."""
    if not path.is_file():
        raise DUCHError(f"{what} file not found: {path} (recorded in the run's config.json); pass --data-dir to "
                        f"the folder that holds it, or make it with: {hint}")
    return load_feature_file(path, key, n_images, hint, what, width=width,
                             width_reason=f"the checkpoint was trained on width {width}", n_captions=n_captions)


def _class_names(data: dict, labels: np.ndarray | None, names: list[str] | None = None) -> list[str | None]:
    images = data["images"]
    if labels is None:
        return [None] * len(images)
    if labels.ndim == 2:  # multi-label (--labels CSV): the names of each image's labels
        return [";".join(names[c] for c in np.flatnonzero(row)) for row in labels]
    if names:
        return [names[c] for c in labels.tolist()]
    if all("classname" in im for im in images):
        return [str(im["classname"]) for im in images]
    classes = data.get("classes")
    if isinstance(classes, dict) and all(str(c) in classes for c in labels.tolist()):
        return [str(classes[str(c)]) for c in labels.tolist()]
    if all("classcode" in im for im in images):
        return [str(c) for c in labels.tolist()]
    return class_names_from_filenames([im["filename"] for im in images])


def _split_of(run_dir: Path, n_images: int, seed: int) -> tuple[list[str], set[int]]:
    """Split name of every image and the caption rows the split uses, from split.json (or recomputed)."""
    path = run_dir / files.SPLIT_NAME
    if path.is_file():
        split = read_json(path, "split")
    else:
        split = make_split(n_images, seed).to_json()
    names = [""] * n_images
    for name in ("train", "val", "query", "db"):
        for j in split.get(name, []):
            if 0 <= j < n_images:
                names[j] = name
    used = {int(r) for key in ("train_captions", "query_captions", "db_captions") for r in split.get(key, [])}
    return names, used


def _dataset_image_paths(data: dict, image_dir: Path) -> list[str | None]:
    import os

    from utils.paths import contained

    out = []
    folder_real = os.path.realpath(image_dir)
    for im in data["images"]:
        # a name leading outside is refused, not skipped
        contained(image_dir, im["filename"], "dataset JSON filename", folder_real)
        try:
            found = find_image(image_dir, im["filename"], im.get("classname"), folder_real, im.get("filepath"))
            out.append(str(found.resolve()))
        except DUCHError:
            out.append(None)
    return out


def _metadata(data: dict, labels: np.ndarray | None, classes: list[str | None], splits: list[str], used: set[int],
              image_paths: list[str | None]) -> tuple[list[dict], list[dict]]:
    from utils.data.dataset_json import caption_offsets

    offsets = caption_offsets(data)
    images, captions = [], []
    for j, im in enumerate(data["images"]):
        texts = [str(s.get("raw", "")) for s in im["sentences"]]
        code = int(labels[j]) if labels is not None and labels.ndim == 1 else None
        base = {"filename": im["filename"], "class": classes[j], "class_code": code, "split": splits[j],
                "path": image_paths[j]}
        images.append({"row": j, **base, "captions": texts})
        for i, text in enumerate(texts):
            r = int(offsets[j]) + i
            captions.append({"row": r, "image_row": j, "sentence": i, **base, "caption": text,
                             "split_caption": r in used})
    return images, captions


# ----------------------------------------------------------------------------------------------
# new images (--image-dir), in resumable shards


def image_encoder_spec(attrs: dict, opts: IndexOptions) -> ImageEncoderSpec | None:
    """The recorded recipe of the image features; flags only when there is no record (or --weights is given)."""
    if opts.weights:
        spec = ImageEncoderSpec.from_flags(opts.weights, opts.img_aug, opts.crop_size, opts.image_seed,
                                           not opts.no_normalize)
    else:
        spec = ImageEncoderSpec.from_attrs(attrs)
    if spec is not None and opts.bit_depth is not None:
        spec = dataclasses.replace(spec, bit_depth=opts.bit_depth)
    return spec


def check_text_model_exists(name: str) -> None:
    """--text-model is a folder that exists, or a hub name already in the local cache (nothing is downloaded
    at index time): a mistyped name is refused now, not at the first text query."""
    if Path(name).is_dir():
        return
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub names: NAME or ORG/NAME
    if not looks_like_path:
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(name, local_files_only=True)
            return
        except (OSError, ValueError):
            pass
    raise DUCHError(f"--text-model {name}: no such folder, nor a model in the local Hugging Face cache; name the "
                    f"folder or model the caption features were made with")


def text_encoder_spec(attrs: dict, opts: IndexOptions) -> TextEncoderSpec | None:
    recorded = TextEncoderSpec.from_attrs(attrs)
    if recorded is not None and not opts.text_model:
        return recorded
    if not opts.text_model:
        return None
    check_text_model_exists(opts.text_model)
    return TextEncoderSpec(model=opts.text_model, max_length=opts.text_max_length,
                           hidden_states=opts.text_hidden_states,
                           operator=opts.text_operator, original_quirks=opts.text_original_quirks,
                           source="flags (--text-model ...)")


def encode_shard(spec: ImageEncoderSpec, encoder, paths: list[Path], device, opts: "IndexOptions") -> np.ndarray:
    """One shard's raw features (a seam for the interruption test)."""
    return spec.encode(encoder, paths, device, opts.batch_size, opts.num_workers)


def encode_image_dir(image_dir: Path, spec: ImageEncoderSpec, out_dir: Path, device,
                     opts: IndexOptions, paths: list[Path] | None = None,
                     shard_dir: Path | None = None) -> tuple[list[Path], np.ndarray | None]:
    """Raw features of every image below ``image_dir`` (or of ``paths`` there), shard by shard, in ``shard_dir``
    (default ``out_dir/image_dir_features``); finished shards are kept and reused.

    Under torchrun the shards still to encode are dealt to the ranks in contiguous runs; rank 0 returns the
    features of all of them, the other ranks None.
    """
    from tqdm import tqdm

    from utils import distributed

    ctx = distributed.context()

    paths = find_image_files(image_dir) if paths is None else paths
    if not paths:
        raise DUCHError(f"no images (tif, tiff, png, jpg) found under {image_dir}")
    spec.check_readable(paths)  # a bad file stops before the long work, named
    shard_dir = shard_dir or out_dir / SHARDS_DIR
    from utils.fingerprints import changed_files, file_stats

    plan = {"image_dir": str(image_dir.resolve()), "files": [p.relative_to(image_dir).as_posix() for p in paths],
            "encoder": spec.to_json(), "shard_size": opts.shard_size,
            "inputs": {p.relative_to(image_dir).as_posix(): v for p, v in zip(paths, file_stats(paths).values())}}
    shards = resume.ShardFolder(shard_dir, len(paths), opts.shard_size, spec.width)
    other_plan = shards.plan_differs(plan)
    if other_plan and not opts.overwrite:
        old = read_json(shard_dir / resume.PLAN_NAME, "shard plan")
        same_rest = isinstance(old, dict) and {k: v for k, v in old.items() if k != "inputs"} == \
            {k: v for k, v in plan.items() if k != "inputs"}
        if same_rest and isinstance(old.get("inputs"), dict):
            changed = changed_files(old["inputs"], plan["inputs"])
            raise DUCHError(f"{shard_dir} caches features of images that changed since ({changed}); "
                            f"pass --overwrite to encode them again")
        raise DUCHError(f"{shard_dir} holds features of another image set, encoder or shard size; pass --overwrite "
                        f"to discard them, or choose another --out")
    distributed.barrier()  # every rank has read the old plan before rank 0 replaces it
    if ctx.is_main:
        shards.start(plan, discard=other_plan)
    distributed.barrier()

    todo = shards.todo()
    todo = todo[slice(*distributed.shard_bounds(len(todo), ctx.world_size, ctx.rank))]  # all of them for one process
    done_images = len(paths) - sum(len(shards.rows(i)) for i in todo)
    if todo:
        encoder = spec.build(device)
        with tqdm(total=len(paths), initial=done_images, unit="img", desc="encode --image-dir",
                  disable=not opts.progress) as bar:
            try:
                for i in todo:
                    chunk = [paths[r] for r in shards.rows(i)]
                    shards.save(i, encode_shard(spec, encoder, chunk, device, opts))
                    bar.update(len(chunk))
            except KeyboardInterrupt:
                finished = len(shards.starts) - len(shards.todo())
                print(f"\ninterrupted: {finished} of {len(shards.starts)} shards of {image_dir} are saved in "
                      f"{shard_dir}; run the same command again to resume", file=sys.stderr)
                raise SystemExit(130) from None
    distributed.barrier()
    if not ctx.is_main:
        return paths, None
    features = shards.load_all()
    if not np.isfinite(features).all():
        raise DUCHError(f"the features of some images under {image_dir} are NaN or inf; check those files")
    return paths, features


# ----------------------------------------------------------------------------------------------
# the whole build


def _usable_image_spec(spec: ImageEncoderSpec | None, path: Path, width: int,
                       opts: IndexOptions) -> ImageEncoderSpec | None:
    """The recipe new images are encoded with, or None when the features' width rules it out (refused when
    --image-dir or --weights needs it)."""
    if opts.image_dir is not None and spec is None:
        raise DUCHError(f"the image features {path} carry no record of their encoder, so --image-dir cannot "
                        "encode new images the same way; name it with --weights (imagenet, none or a .pth file) and "
                        "--img-aug (the transform set the features were made with, e.g. center_crop_only)")
    if spec is not None and width != spec.width:
        if opts.image_dir is not None or opts.weights:
            raise DUCHError(f"the image features {path} are {width} wide, not the {spec.width} of their encoder "
                            f"({spec.encoder}): new images cannot be encoded like them")
        return None
    return spec


def index_folder(opts: IndexOptions) -> Path:
    if opts.out:
        return Path(opts.out)
    if opts.run_dir is None:
        raise DUCHError("--codes needs --out INDEX_DIR (the folder to write the index in)")
    return Path(opts.run_dir) / "index"


def build_index(opts: IndexOptions, action=None) -> dict:
    """Build the index folder of a run; returns the manifest. ``action(opts, out)``: what runs under the lock
    instead (``--codes``, ``--add``, ``--remove``: utils.search.codes_index, utils.search.grow).

    One writer at a time (a lock beside the folder); an --overwrite first removes the old manifest, so an
    interrupted rebuild leaves an unfinished index, never the old manifest beside new files; the new
    manifest, written last, records the size and sha256 of every file, checked when the index is opened."""
    from utils import distributed
    from utils.locks import OutputLock

    opts.check()
    if action is None:
        TrainedRun.open(opts.run_dir, opts.checkpoint)  # a mistyped --run is named before any folder is made
    out = index_folder(opts)
    lock = OutputLock(out, "index folder") if distributed.context().is_main else None
    if lock is not None:
        lock.acquire()
    try:
        return _build_index(opts) if action is None else action(opts, out)
    finally:
        if lock is not None:
            lock.release()


def _build_index(opts: IndexOptions) -> dict:
    import faiss  # lazy: a heavy import, paid only where it is used (start-up time)
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    from utils.train.checkpoints import checkpoint_epoch, load_checkpoint_digest

    opts.check()
    run = TrainedRun.open(opts.run_dir, opts.checkpoint)
    cfg = run.config
    out = index_folder(opts)
    writer.refuse_existing(out, opts.overwrite)
    check_writable_dir(out, "index folder")
    ds = get_dataset(cfg["dataset"], cfg.get("name"))
    paths = _feature_paths(cfg, ds, Path(opts.data_dir) if opts.data_dir else None)
    data = load_dataset_json(paths.dataset_json,
                             hint=f"pass --data-dir to the folder that holds {Path(paths.dataset_json).name}")
    n = len(data["images"])
    n_captions = int(caption_offsets(data)[-1])
    check_run_inputs(cfg, paths, run.run_dir)
    payload, checkpoint_sha256 = load_checkpoint_digest(run.checkpoint)
    bits = int(payload.get("bit", cfg.get("bit", 0)))
    image_raw = _load_raw(paths.image, files.IMAGE_EMB_KEY, n, int(payload["image_dim"]),
                          files.image_emb_command(ds, BASE_IMAGE_SET), "image feature")
    caption_raw = _load_raw(paths.caption, files.CAPTION_EMB_KEY, n, int(payload["caption_dim"]),
                            files.caption_emb_command(ds), "caption feature", n_captions=n_captions)
    image_attrs = read_h5_attrs(paths.image, files.IMAGE_EMB_KEY)
    caption_attrs = read_h5_attrs(paths.caption, files.CAPTION_EMB_KEY)
    image_stats, caption_stats = FeatureStats.of(image_raw), FeatureStats.of(caption_raw)
    image_spec = _usable_image_spec(image_encoder_spec(image_attrs, opts), paths.image, image_raw.shape[1], opts)
    text_spec = text_encoder_spec(caption_attrs, opts)

    from utils import distributed

    ctx = distributed.context()
    device = ctx.device if ctx.distributed else resolve_device(opts.device)
    model = run.load_model(device, payload)
    resolved = resolve_labels(data, ds, paths.dataset_json, cfg.get("labels"))
    labels = resolved.values
    classes = _class_names(data, labels, resolved.names)
    splits, used = _split_of(run.run_dir, n, int(cfg.get("seed", 42)))
    image_dir = (Path(opts.dataset_image_dir) if opts.dataset_image_dir
                 else Path(paths.image).parent / ds.image_dir)
    image_paths = _dataset_image_paths(data, image_dir)
    meta_images, meta_captions = _metadata(data, labels, classes, splits, used, image_paths)
    missing = sum(p is None for p in image_paths)
    if missing:
        print(f"warning: {missing} of {n} dataset images not found under {image_dir}; their results show no thumbnail "
              f"(pass --dataset-image-dir to the image folder)", file=sys.stderr)

    image_features = image_stats.apply(image_raw)
    new_paths: list[Path] = []
    if opts.image_dir is not None:
        new_paths, new_raw = encode_image_dir(Path(opts.image_dir), image_spec, out, device, opts)
    if not ctx.is_main:  # under torchrun the other ranks only encode --image-dir shards: rank 0 builds the index
        return {}
    if opts.image_dir is not None:
        image_features = np.concatenate([image_features, image_stats.apply(new_raw)])
        root = Path(opts.image_dir)
        meta_images += [{"row": n + m, "filename": p.relative_to(root).as_posix(), "class": None, "class_code": None,
                         "split": NEW_IMAGE_SPLIT, "path": str(p.resolve()), "captions": []}
                        for m, p in enumerate(new_paths)]
    outputs = {
        "images": hash_outputs(model.image_net, image_features, device),
        "captions": hash_outputs(model.text_net, caption_stats.apply(caption_raw), device),
    }
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # from here the folder is unfinished until the new manifest
    codes = {m: pack_outputs(outputs[m]) for m in outputs}
    segments = writer.write_first_segments(out, codes, outputs, opts.index_type, opts.nlist, opts.nprobe)
    metadata = writer.write_fresh_metadata(out, {"images": meta_images, "captions": meta_captions})
    manifest = {
        "bit": bits,
        "bytes_per_code": int((bits + 7) // 8),
        "run": {"dir": str(run.run_dir), "config": cfg},
        "checkpoint": {"which": opts.checkpoint, "path": str(run.checkpoint.resolve()),
                       "sha256": checkpoint_sha256,  # of the bytes the model was loaded from
                       "relative_to_index": os.path.relpath(run.checkpoint.resolve(), out.resolve()),
                       "epoch": checkpoint_epoch(payload)},
        "dataset": {"key": ds.key, "json": str(paths.dataset_json), "images": n, "captions": n_captions,
                    "image_dir": str(image_dir), "images_found": n - missing},
        "features": {
            "image": {"path": str(paths.image), "rows": int(image_raw.shape[0]), "width": int(image_raw.shape[1]),
                      "standardisation": image_stats.to_json(), "provenance": image_attrs},
            "caption": {"path": str(paths.caption), "rows": int(caption_raw.shape[0]),
                        "width": int(caption_raw.shape[1]),
                        "standardisation": caption_stats.to_json(), "provenance": caption_attrs},
        },
        "encoders": {"image": image_spec.to_json() if image_spec else None,
                     "text": text_spec.to_json() if text_spec else None},
        "image_dir": None if opts.image_dir is None else {
            "path": str(Path(opts.image_dir).resolve()), "images": len(new_paths), "first_row": n,
            "shards": SHARDS_DIR, "shard_size": opts.shard_size},
        "segments": segments,
        "metadata": metadata,
        "counts": {"dataset_images": n, "new_images": len(new_paths)},
        "device": str(device),
        "versions": {**versions(), "faiss": faiss.__version__, "torch_threads": torch.get_num_threads()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    writer.commit(out, manifest)
    return manifest
