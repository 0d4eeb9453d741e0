"""The nine image transform sets of the original release (docs/method.md), in one place.

Each set works on a PIL image as the original did (torchvision.transforms.v2 dispatches PIL inputs to
PIL kernels), then resizes to 224x224 and converts to a float tensor in [0, 1], optionally followed
by ImageNet mean/std normalisation (our default; the original release skipped it).

Random transforms draw from torch's global generator; ``utils.data.images.ImageDataset`` seeds it per
image from (seed, image index), which makes every output independent of batch size and workers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from configs.files import IMAGE_AUG_SETS
from utils.errors import DUCHError, did_you_mean

# each_img_random applies one of these, chosen per image
EACH_IMG_RANDOM_CHOICES = ("rotation_cc", "blur_cc", "jitter_cc")

# aug_center and aug_random always use the paper's values, as the original (its config fixes them);
# --rot-deg, --blur-val and --jit-str set only rotation_cc, blur_cc and jitter_cc
PAPER_BLUR = (3, 3, 1.1, 1.3)  # kernel w, kernel h, sigma min, sigma max
PAPER_ROTATION = (-10.0, -5.0)  # degrees
MAX_JITTER_STRENGTH = 2.5  # ColorJitter's hue factor 0.2 s must stay <= 0.5

OUTPUT_SIZE = (224, 224)  # ResNet input; (h, w) so that non-square images still batch
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugParams:
    """The original's augmentation parameters (``--crop-size``, ``--rot-deg``, ``--blur-val``, ``--jit-str``)."""

    crop_size: tuple[int, int] = (200, 200)
    rot_deg: tuple[float, float] = (-10.0, -5.0)
    blur_val: tuple[int, int, float, float] = (3, 3, 1.1, 1.3)  # kernel w, kernel h, sigma min, sigma max
    jit_str: float = 0.5

    @classmethod
    def checked(cls, crop_size: Sequence = (200, 200), rot_deg: Sequence = (-10, -5),
                blur_val: Sequence = (3, 3, 1.1, 1.3), jit_str: float = 0.5) -> "AugParams":
        """Validate user-given values once, with messages that name the flag: finite numbers in range."""
        import math

        for flag, values in (("--crop-size", crop_size), ("--rot-deg", rot_deg), ("--blur-val", blur_val),
                             ("--jit-str", [jit_str])):
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise DUCHError(f"{flag} takes finite numbers, got {' '.join(map(str, values))}")
        if len(crop_size) != 2 or any(int(c) != c or c < 1 for c in crop_size):
            raise DUCHError(f"--crop-size needs two positive integers CROP_H CROP_W, got {list(crop_size)}")
        if len(rot_deg) != 2 or rot_deg[0] > rot_deg[1] or not all(-360 <= r <= 360 for r in rot_deg):
            raise DUCHError(f"--rot-deg needs MIN MAX in degrees (-360..360) with MIN <= MAX, got {list(rot_deg)}")
        if len(blur_val) != 4:
            raise DUCHError(f"--blur-val needs KW KH SMIN SMAX, got {list(blur_val)}")
        kw, kh, smin, smax = blur_val
        if any(int(k) != k or k < 1 or int(k) % 2 == 0 for k in (kw, kh)):
            raise DUCHError(f"--blur-val kernel sizes must be positive odd integers, got {kw} {kh}")
        if not 0 < smin <= smax:
            raise DUCHError(f"--blur-val sigmas need 0 < SMIN <= SMAX, got {smin} {smax}")
        if not 0 <= jit_str <= MAX_JITTER_STRENGTH:
            raise DUCHError(f"--jit-str must lie in [0, {MAX_JITTER_STRENGTH}] (hue jitter 0.2 s <= 0.5), got "
                            f"{jit_str}")
        return cls(
            (int(crop_size[0]), int(crop_size[1])),
            (float(rot_deg[0]), float(rot_deg[1])),
            (int(kw), int(kh), float(smin), float(smax)),
            float(jit_str),
        )


def check_image_aug_set(name: str) -> str:
    if name not in IMAGE_AUG_SETS:
        raise DUCHError(f"unknown image transform set {name!r}{did_you_mean(name, IMAGE_AUG_SETS)}; "
                        f"choose one of: {', '.join(IMAGE_AUG_SETS)}")
    return name


def _augmentations(name: str, p: AugParams) -> list:
    """The set-specific PIL-stage transforms, in the original's order (augment, then crop)."""
    from torchvision.transforms import v2

    def blur(kw, kh, smin, smax):
        return v2.GaussianBlur(kernel_size=(int(kw), int(kh)), sigma=(smin, smax))

    center, rand = v2.CenterCrop(p.crop_size), v2.RandomCrop(p.crop_size)
    s = p.jit_str
    return {
        "no_aug": [],
        "center_crop_only": [center],
        "random_crop_only": [rand],
        "aug_center": [blur(*PAPER_BLUR), v2.RandomRotation(degrees=PAPER_ROTATION), center],
        "aug_random": [blur(*PAPER_BLUR), v2.RandomRotation(degrees=PAPER_ROTATION), rand],
        "rotation_cc": [v2.RandomRotation(degrees=p.rot_deg), center],
        "blur_cc": [blur(*p.blur_val), center],
        "jitter_cc": [v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), center],
    }[name]


def uses_crop(name: str) -> bool:
    """Whether transform set ``name`` crops to ``--crop-size`` (each_img_random picks among sets that do)."""
    return name != "no_aug"


def build_transform(name: str, params: AugParams = AugParams(), normalize: bool = True,
                    preprocess: Callable | None = None) -> Callable:
    """PIL image -> float tensor (3, 224, 224) for transform set ``name`` (not ``each_img_random``).

    ``preprocess``: an encoder's own preprocessing (PIL image -> tensor: its resize, crop and normalisation),
    applied after the set's augmentations in place of the paper's resize and ImageNet normalisation."""
    import torch
    from torchvision.transforms import v2

    check_image_aug_set(name)
    if name == "each_img_random":
        raise ValueError("each_img_random picks a set per image: use SeededTransform")
    if preprocess is not None:
        return v2.Compose(_augmentations(name, params) + [preprocess])
    steps = _augmentations(name, params) + [
        v2.Resize(OUTPUT_SIZE, antialias=True),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ]
    if normalize:
        steps.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return v2.Compose(steps)


def original_each_img_random_choices(order: Iterable[int], seed: int) -> dict[int, str]:
    """The set the original release gives each image under ``each_img_random``: {JSON index: set}.

    The original calls ``random.choice(sets)`` per image after ``random.seed(42)``, in its encoding
    order ``order`` (docs/method.md). With torchvision 0.9 (its requirements.txt), ``rotation_cc``'s
    rotation sits in a ``RandomChoice`` of one transform, whose ``random.choice`` takes one more draw
    from the same generator: that draw shifts every later choice, so it is made here too.
    """
    rng = random.Random(seed)  # the same stream as random.seed(seed)
    chosen = {}
    for index in order:
        name = rng.choice(EACH_IMG_RANDOM_CHOICES)
        if name == "rotation_cc":
            rng.choice([None])  # torchvision 0.9 RandomChoice([RandomRotation(...)])
        chosen[int(index)] = name
    return chosen


class SeededTransform:
    """Transform set ``name`` applied to image ``index`` with randomness seeded from (seed, index).

    ``each_img_random`` picks its set per image from the same seed, or from ``choices`` ({index: set},
    e.g. ``original_each_img_random_choices``). ``preprocess``: an encoder's own preprocessing (see
    ``build_transform``). Torch's global generator is forked, so the caller's
    random state is left as it was.
    """

    def __init__(self, name: str, params: AugParams = AugParams(), normalize: bool = True, seed: int = 42,
                 choices: Mapping[int, str] | None = None, preprocess: Callable | None = None):
        check_image_aug_set(name)
        self.name, self.seed = name, seed
        self.choices = dict(choices) if choices is not None else None
        names = EACH_IMG_RANDOM_CHOICES if name == "each_img_random" else (name,)
        self.transforms = {n: build_transform(n, params, normalize, preprocess) for n in names}

    def set_for(self, index: int) -> tuple[str, int]:
        """(transform set, torch seed) used for image ``index``."""
        import numpy as np

        torch_seed, choice = np.random.SeedSequence([self.seed, index]).generate_state(2)
        name = self.name
        if name == "each_img_random":
            name = self.choices[index] if self.choices is not None else EACH_IMG_RANDOM_CHOICES[int(choice) % 3]
        return name, int(torch_seed)

    def __call__(self, image, index: int):
        import torch

        name, torch_seed = self.set_for(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            return self.transforms[name](image)


class RowsTransform:
    """``transform`` of JSON row ``rows[i]`` for the i-th image of a subset: a rank's shard under torchrun
    encodes its own image list with the seeds of the rows the images have in the whole dataset."""

    def __init__(self, transform: Callable, rows: Sequence[int]):
        self.transform, self.rows = transform, [int(r) for r in rows]

    def __call__(self, image, index: int):
        return self.transform(image, self.rows[index])
