"""The image encoder: torchvision ResNet18 without its classifier (512-d global-average-pool output)."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from utils.data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageDataset, collate_or_error, consecutive_batches
from utils.errors import DUCHError
from utils.io import sha256_of

IMAGENET_WEIGHTS = "IMAGENET1K_V1"  # torchvision ResNet18_Weights member: the original's pretrained=True
RESNET18_CHECKPOINT = "resnet18-f37072fd.pth"  # the file torchvision downloads and caches for it
FEATURE_DIM = 512


def imagenet_cache_path() -> Path:
    """Where torchvision keeps the ImageNet checkpoint: ``$TORCH_HOME/hub/checkpoints/``."""
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_CHECKPOINT


def _imagenet_state_dict() -> dict:
    from torchvision.models import ResNet18_Weights  # lazy: a heavy import, paid only where it is used (start-up time)

    weights = ResNet18_Weights[IMAGENET_WEIGHTS]
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as err:  # offline (URLError), bad cache file (RuntimeError), disk (OSError), ...
        raise DUCHError(
            f"the ImageNet ResNet18 weights (torchvision ResNet18_Weights.{IMAGENET_WEIGHTS}) are not cached "
            f"and could not be downloaded from {weights.url} ({type(err).__name__}: {err}); put the file at "
            f"{imagenet_cache_path()} (torchvision's cache, $TORCH_HOME/hub/checkpoints/{RESNET18_CHECKPOINT}), "
            f"or pass --weights PATH to a ResNet18 state-dict file, or --weights none for random weights"
        ) from None


def _local_state_dict(path: Path) -> dict:
    import torch  # lazy: a heavy import, paid only where it is used (start-up time)

    if not path.is_file():
        raise DUCHError(
            f"--weights {path}: no such file; use 'imagenet', 'none' or a ResNet18 state-dict .pth file"
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
        state, description = _imagenet_state_dict(), f"torchvision ResNet18_Weights.{IMAGENET_WEIGHTS}"
        source = f"ResNet18_Weights.{IMAGENET_WEIGHTS}"
    else:
        path = Path(weights)
        state = _local_state_dict(path)
        description, source = f"file {path} (sha256 {sha256_of(path)})", str(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k,
             v in state.items() if not k.startswith("fc.")}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[:3]
        raise DUCHError(f"weights {source} do not fit a torchvision ResNet18: {' '.join(first)}") from None
    return model, description


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
        features = np.zeros((num_images, FEATURE_DIM), dtype=np.float32)
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
    """Features (len(paths), 512) of image files, rows in the order of ``paths``: the one encoding entry point.

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
        return np.zeros((0, FEATURE_DIM), np.float32)
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
