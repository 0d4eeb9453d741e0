"""Image encoders: the paper's torchvision ResNet18 without its classifier (512-d global-average-pool output),
any other torchvision classification network without its last linear layer, or the vision tower of a
CLIP-family checkpoint (models/clip_encoder.py); and the one loop that encodes image files with them."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs.encoders import DEFAULT_IMAGE_ENCODER, image_encoder_kind
from utils.data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageDataset, collate_or_error, consecutive_batches
from utils.errors import DUCHError, did_you_mean
from utils.io import sha256_of

IMAGENET_WEIGHTS = "IMAGENET1K_V1"  # torchvision ResNet18_Weights member: the original's pretrained=True
RESNET18_CHECKPOINT = "resnet18-f37072fd.pth"  # the file torchvision downloads and caches for it
FEATURE_DIM = 512


def imagenet_cache_path(file_name: str = RESNET18_CHECKPOINT) -> Path:
    """Where torchvision keeps an ImageNet checkpoint (default: ResNet18's): ``$TORCH_HOME/hub/checkpoints/``."""
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def _imagenet_state_dict(weights=None) -> dict:
    """The state dict of a torchvision weights enum member (default: ResNet18's IMAGENET1K_V1), from torchvision's
    cache or downloaded; a failure is one error naming the file and where to put it."""
    if weights is None:
        from torchvision.models import ResNet18_Weights  # lazy: a heavy import (start-up time)

        weights = ResNet18_Weights[IMAGENET_WEIGHTS]
    file_name = weights.url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as err:  # offline (URLError), bad cache file (RuntimeError), disk (OSError), ...
        raise DUCHError(
            f"the ImageNet weights (torchvision {weights}) are not cached and could not be downloaded from "
            f"{weights.url} ({type(err).__name__}: {err}); put the file at {imagenet_cache_path(file_name)} "
            f"(torchvision's cache, $TORCH_HOME/hub/checkpoints/{file_name}), or pass --weights PATH to a state-dict "
            f"file, or --weights none for random weights"
        ) from None


def _local_state_dict(path: Path) -> dict:
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    if not path.is_file():
        raise DUCHError(
            f"--weights {path}: no such file; use 'imagenet', 'none' or a state-dict .pth file of the encoder"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one holding more than tensors
        raise DUCHError(f"cannot load weights file {path} as a state dict: {err}") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DUCHError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def build_image_encoder(weights: str = "imagenet"):
    """ResNet18 with ``fc = Identity``, and a description of its weights for provenance.

    ``weights``: ``imagenet`` (torchvision's ImageNet weights, from its cache or downloaded),
    ``none`` (random initialisation from torch's current seed: for tests and offline demos), or a path
    to a ResNet18 state-dict file (``fc.*`` entries are ignored).
    """
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)
    from torchvision.models import resnet18  # lazy: a heavy import, paid only where it is used (start-up time)

    # weights to load: nothing to initialise at random only to overwrite, so the model is built on the meta
    # device and the loaded tensors are assigned
    with torch.device("meta") if weights != "none" else contextlib.nullcontext():
        model = resnet18(weights=None)
    model.fc = torch.nn.Identity()
    if weights == "none":
        warnings.warn(
            "--weights none: the ResNet18 encoder has RANDOM weights; its features are not ImageNet features "
            "(fine for tests and the offline demo, not for results)", UserWarning, stacklevel=2,
        )
        return model, "none (random initialisation)"
    if weights == "imagenet":
        from torchvision.models import ResNet18_Weights  # lazy: a heavy import (start-up time)

        member = ResNet18_Weights[IMAGENET_WEIGHTS]
    else:
        member = None
    return model, _load_weights(model, weights, member, "fc", "a torchvision ResNet18")


def _load_weights(model, weights: str, member, classifier: str, label: str) -> str:
    """Load into ``model`` (built on the meta device, its classifier replaced) the weights of a torchvision enum
    ``member``, or else of the state-dict file ``weights``; returns their description for provenance. The
    ``classifier``'s entries are left out (and a ``module.`` prefix); every other tensor must fit, all of them."""
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    if member is not None:
        state, description, source = _imagenet_state_dict(member), f"torchvision {member}", str(member)
    else:
        path = Path(weights)
        state = _local_state_dict(path)
        description, source = f"file {path} (sha256 {sha256_of(path)})", str(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k,
             v in state.items() if not k.startswith(f"{classifier}.")}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[:3]
        raise DUCHError(f"weights {source} do not fit {label}: {' '.join(first)}") from None
    return description


def _drop_last_linear(model, name: str) -> tuple[str, int]:
    """Replace the network's last linear layer (its classifier) by Identity; returns that layer's name and input
    width, the width of the features left."""
    import torch

    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise DUCHError(f"--encoder {name}: the network has no linear classifier to remove, so its feature layer is "
                        "unknown; choose another torchvision classification model")
    path, layer = linears[-1]
    parent = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    setattr(parent, path.rpartition(".")[2], torch.nn.Identity())
    return path, int(layer.in_features)


def build_torchvision_encoder(name: str, weights: str = "imagenet"):
    """A torchvision classification network without its last linear layer: (model with ``feature_width``,
    weights description, its preprocessing transform (PIL image -> normalised tensor) and a description of it).

    ``weights``: ``imagenet`` (the builder's DEFAULT weights enum member), a member's name (``IMAGENET1K_V2``),
    ``none`` (random) or a state-dict file. The preprocessing (resize, centre crop, mean and std, interpolation)
    is the weights enum's own ``transforms()``, also for random or file weights."""
    import torch
    from torchvision import models

    known = models.list_models(module=models)
    if name not in known:
        raise DUCHError(f"--encoder {name!r}: not a torchvision classification model{did_you_mean(name, known)} "
                        "(a CLIP-family checkpoint is given by hub id, namespace/name, or by folder)")
    enum = models.get_model_weights(name)
    if weights in ("imagenet", "default"):
        chosen = enum.DEFAULT
    elif weights in enum.__members__:
        chosen = enum[weights]
    else:
        chosen = None
    with torch.device("meta") if weights != "none" else contextlib.nullcontext():
        model = models.get_model(name, weights=None)
    classifier, width = _drop_last_linear(model, name)
    meta = chosen or enum.DEFAULT
    preprocess = meta.transforms()
    described = (f"resize {list(preprocess.resize_size)} ({preprocess.interpolation.value}), centre crop "
                 f"{list(preprocess.crop_size)}, mean {list(preprocess.mean)}, std {list(preprocess.std)} (torchvision "
                 f"{meta})")
    if weights == "none":
        warnings.warn(f"--weights none: the {name} encoder has RANDOM weights; its features are not ImageNet features "
                      "(fine for tests and offline demos, not for results)", UserWarning, stacklevel=2)
        model.feature_width = width
        return model, "none (random initialisation)", preprocess, described
    description = _load_weights(model, weights, chosen, classifier, f"torchvision {name}")
    model.feature_width = width
    return model, description, preprocess, described


@dataclass
class ImageBackbone:
    """One image encoder ready to run: the network (with ``feature_width``), what its weights are, and the
    preprocessing that follows the augmentation set (None: the paper's resize to 224 x 224 and ImageNet
    normalisation, utils.data.transforms)."""

    encoder: str  # the --encoder name
    kind: str  # paper, torchvision or checkpoint (configs.encoders.image_encoder_kind)
    model: object
    weights: str  # description, for provenance
    preprocess: object = None
    preprocessing: str = ""
    source: str | None = None  # a checkpoint's resolved folder (or its hub id)

    @property
    def width(self) -> int:
        return int(self.model.feature_width)


def build_image_backbone(encoder: str = DEFAULT_IMAGE_ENCODER, weights: str = "imagenet") -> ImageBackbone:
    """The encoder ``images_augment.py --encoder`` names (configs/encoders.py), weights loaded."""
    kind = image_encoder_kind(encoder)
    if kind == "paper":
        model, description = build_image_encoder(weights)
        model.feature_width = FEATURE_DIM
        return ImageBackbone(encoder, kind, model, description)
    if kind == "torchvision":
        model, description, preprocess, described = build_torchvision_encoder(encoder, weights)
        return ImageBackbone(encoder, kind, model, description, preprocess, described)
    if weights != "imagenet":
        raise DUCHError(f"--weights {weights}: a CLIP-family checkpoint ({encoder}) brings its own weights; "
                        "--weights chooses those of torchvision encoders")
    from models.clip_encoder import ClipPreprocess, image_tower, load_clip_checkpoint

    checkpoint = load_clip_checkpoint(encoder, images=True, text=False)
    if checkpoint.random_weights:
        warnings.warn(f"--encoder {encoder}: the checkpoint has RANDOM weights (its config.json says so); its features "
                      "are not those of a pretrained model (fine for tests and offline demos, not for results)",
                      UserWarning, stacklevel=2)
    processor = checkpoint.image_processor
    return ImageBackbone(encoder, kind, image_tower(checkpoint),
                         f"{checkpoint.describe('vision')} ({checkpoint.source})"
                         + (" (random weights)" if checkpoint.random_weights else ""),
                         ClipPreprocess(processor), f"the checkpoint's {type(processor).__name__}: "
                         f"{processor_summary(processor)}", checkpoint.source)


def processor_summary(processor) -> str:
    """What an image processor does, from its settings (for the feature file's provenance)."""
    keys = ("size", "crop_size", "do_center_crop", "resample", "do_rescale", "rescale_factor", "do_normalize",
            "image_mean", "image_std")
    parts = []
    for key in keys:
        value = getattr(processor, key, None)
        if value is None:
            continue
        if not isinstance(value, (str, int, float, bool, list, tuple)):  # a size dict of the processor
            fields = dict(value.items()) if hasattr(value, "items") else dict(vars(value))
            value = {k: v for k, v in fields.items() if v is not None}
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def encode_images(model, loader, device, num_images: int, train_mode: bool = False,
                  channels_last: bool = False, progress: bool = True, features: np.ndarray | None = None,
                  filled: np.ndarray | None = None, on_batch=None) -> np.ndarray:
    """Run ``model`` over a loader of (images, JSON indices) batches; rows come back in JSON order.

    ``train_mode`` reproduces the original release (batch-norm batch statistics, so a row depends on
    its batch mates). A batch that is a string is an error message from ``utils.data.images.collate_or_error``.
    ``features``/``filled`` continue an interrupted run (rows already encoded); ``on_batch(features,
    filled)`` is called after every batch, e.g. to save progress.
    """
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)
    from tqdm import tqdm

    model = model.to(device)
    model.train(train_mode)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if features is None:
        features = np.zeros((num_images, getattr(model, "feature_width", FEATURE_DIM)), dtype=np.float32)
    if filled is None:
        filled = np.zeros(num_images, dtype=bool)
    # train mode updates batch-norm buffers in place, which plain no_grad allows everywhere
    context = torch.no_grad() if train_mode else torch.inference_mode()
    with context, tqdm(total=num_images, initial=int(filled.sum()), unit="img", desc="encoding images",
                       disable=not progress) as bar:
        for batch in loader:
            if isinstance(batch, str):
                raise DUCHError(batch)
            images, indices = batch
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            idx = indices.numpy()
            features[idx] = model(images).float().cpu().numpy()
            filled[idx] = True
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(features, filled)
    if not filled.all():  # a loader that skipped images would silently misalign rows
        raise RuntimeError(f"{int((~filled).sum())} images were not encoded")
    return features


def encode_image_files(model, transform, paths, device="cpu", batch_size: int = 64, num_workers: int = 0, *,
                       batches=None, train_mode: bool = False, channels_last: bool = True, progress: bool = False,
                       max_pixels: int | None = None, bit_depth: int = 16, features: np.ndarray | None = None,
                       filled: np.ndarray | None = None, on_batch=None, roots=None) -> np.ndarray:
    """Features (len(paths), width) of image files, rows in the order of ``paths``: the one encoding entry point.

    ``model``: from ``build_image_encoder``; ``transform``: a ``utils.data.transforms.SeededTransform``
    (or any (PIL image, index) -> tensor). ``batches``: lists of indices into ``paths`` encoded together
    (default: consecutive batches of ``batch_size``); it matters only with ``train_mode``.
    ``max_pixels``, ``bit_depth``, ``roots``: see ``utils.data.images.load_image``. ``features``/``filled``/
    ``on_batch``: see ``encode_images``; batches already filled are skipped.
    """
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    device = torch.device(device)
    n = len(paths)
    if n == 0:
        return np.zeros((0, getattr(model, "feature_width", FEATURE_DIM)), np.float32)
    if batches is None:
        batches = consecutive_batches(range(n), batch_size)
    if filled is not None:
        batches = [b for b in batches if not filled[b].all()]
    dataset = ImageDataset(paths, transform, DEFAULT_MAX_IMAGE_PIXELS if max_pixels is None else max_pixels, bit_depth,
                           roots)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate_or_error,
        pin_memory=device.type == "cuda",
    )
    # channels_last: 1.4x faster on CPU (benchmarks/bench_image_encoder.py), same features to float rounding
    return encode_images(model, loader, device, n, train_mode=train_mode, channels_last=channels_last,
                         progress=progress, features=features, filled=filled, on_batch=on_batch)
