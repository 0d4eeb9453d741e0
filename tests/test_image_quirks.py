"""images_augment.py --original-quirks against an independent re-derivation of the original's calls.

The original (docs/method.md): ``random.seed(42); np.random.seed(42)``; ``perm = np.random.permutation(N)``;
a DataLoader over the images in order ``perm`` with ``shuffle=False`` and batch 525 (UCM) / 500 (RSICD);
ResNet18 never put in eval mode; no normalisation; rows put back in JSON order. Its Dataset picks the
transform per image with ``random.choice`` in ``__getitem__``; torchvision 0.9's ``RandomChoice`` (around
the rotation) calls ``random.choice`` again. Everything below re-derives that here, by hand.
"""
from __future__ import annotations

import dataclasses
import json
import random

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import images_augment
from configs import datasets
from configs.files import IMAGE_EMB_KEY
from tests.conftest import count_image_reads
from utils.data.transforms import EACH_IMG_RANDOM_CHOICES, AugParams, SeededTransform, original_each_img_random_choices
from utils.demo.scenes import make_demo_dataset
from utils.io import read_h5

N_IMAGES = 6
BATCH = 2  # the demo's batch fact is patched to 2 so that 6 images make 3 batches


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("quirks"), images_per_class=1)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    from torchvision.models import resnet18

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture
def small_batches(monkeypatch):
    """The dataset fact (not a flag) sets the quirk batch size, as 525 / 500 do for UCM / RSICD."""
    demo = dataclasses.replace(datasets.DATASETS["demo"], original_image_batch_size=BATCH)
    monkeypatch.setitem(datasets.DATASETS, "demo", demo)


def run(data_dir, weights_file, *extra):
    args = images_augment.get_args_parser().parse_args(
        ["--dataset", "demo", "--data-dir", str(data_dir), "--weights", str(weights_file), "--num-workers", "0",
         "--no-progress", "--overwrite", "--original-quirks", *extra])
    out = images_augment.main(args)
    with h5py.File(out, "r") as f:
        attrs = dict(f[IMAGE_EMB_KEY].attrs)
    return read_h5(out, IMAGE_EMB_KEY), attrs


def reference_model(weights_file):
    """torchvision's ResNet18 with the same weights, classifier removed by hand, in training mode."""
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    model.fc = torch.nn.Identity()
    return model.train()


def center_crop_input(path) -> torch.Tensor:
    """center_crop_only without normalisation, by hand with PIL: 200x200 centre crop, 224x224 bilinear, /255."""
    image = Image.open(path).convert("RGB")
    left, top = (image.width - 200) // 2, (image.height - 200) // 2
    image = image.crop((left, top, left + 200, top + 200)).resize((224, 224), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def image_paths(data_dir):
    images = json.loads((data_dir / "DEMO.json").read_text())["images"]
    return [data_dir / "images" / entry["filename"] for entry in images]


def original_perm(n):
    np.random.seed(42)
    return np.random.permutation(n)


@pytest.fixture(scope="module")
def center_crop_run(data_dir, weights_file):
    """center_crop_only in quirk mode with the demo's batch fact patched to BATCH."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(datasets.DATASETS, "demo",
                      dataclasses.replace(datasets.DATASETS["demo"], original_image_batch_size=BATCH))
        return run(data_dir, weights_file, "--img-aug", "center_crop_only")


def test_original_batches_decide_every_row(data_dir, weights_file, center_crop_run):
    features, attrs = center_crop_run
    assert attrs["batch_size"] == BATCH and attrs["network_mode"].startswith("train")
    assert attrs["normalization"] == "none"
    perm = original_perm(N_IMAGES)
    inputs = torch.stack([center_crop_input(p) for p in image_paths(data_dir)])
    model = reference_model(weights_file)
    with torch.no_grad():
        for start in range(0, N_IMAGES, BATCH):  # consecutive batches of perm, no shuffling
            rows = perm[start:start + BATCH]
            expected = model(inputs[rows]).numpy()
            np.testing.assert_allclose(features[rows], expected, rtol=1e-4, atol=1e-4)
        # the test has power: other batch mates (JSON-order batches) give other rows
        json_order = model(inputs[2:4]).numpy()  # perm = [0 1 5 2 4 3]: 2 and 3 are not batch mates
    assert perm.tolist() == [0, 1, 5, 2, 4, 3]
    assert np.abs(features[2:4] - json_order).max() > 1e-2


def test_original_batch_sizes_are_dataset_facts():
    assert datasets.get_dataset("ucm").original_image_batch_size == 525
    assert datasets.get_dataset("rsicd").original_image_batch_size == 500


def original_choices_by_emulation(n: int) -> dict[int, str]:
    """The original's calls, emulated with the global ``random`` module as its Dataset made them."""

    class RandomChoice09:  # torchvision 0.9.1 transforms.RandomChoice.__call__
        def __init__(self, transforms):
            self.transforms = transforms

        def __call__(self, img):
            t = random.choice(self.transforms)
            return t(img)

    applied = []

    def set_named(name, *steps):
        def apply(img):
            for step in steps:
                img = step(img)
            applied.append(name)
            return img
        return apply

    identity = lambda img: img  # noqa: E731 (torch-only draws: blur, jitter, crop are irrelevant here)
    sets = [set_named("rotation_cc", RandomChoice09([identity]), identity),  # config order of 'each_img_random'
            set_named("blur_cc", identity, identity),
            set_named("jitter_cc", identity, identity)]
    random.seed(42)
    np.random.seed(42)
    order = np.random.permutation(n)
    for idx in order:  # DataLoader(shuffle=False, num_workers=0) calls __getitem__ in this order
        transform = random.choice(sets)
        transform(None)
    return {int(i): name for i, name in zip(order, applied)}


def test_each_img_random_choices_match_the_originals_calls():
    n = 40
    expected = original_choices_by_emulation(n)
    assert original_each_img_random_choices(original_perm(n), seed=42) == expected
    assert set(expected.values()) == set(EACH_IMG_RANDOM_CHOICES)
    # the extra draw of torchvision 0.9's RandomChoice matters: without it the choices differ
    random.seed(42)
    naive = {int(i): random.choice(EACH_IMG_RANDOM_CHOICES) for i in original_perm(n)}
    assert naive != expected


def test_each_img_random_quirk_run_uses_those_choices(data_dir, weights_file, small_batches):
    features, attrs = run(data_dir, weights_file, "--img-aug", "each_img_random")
    assert attrs["each_img_random_choice"].startswith("original: random.seed(42)")
    choices = original_choices_by_emulation(N_IMAGES)
    params = AugParams()
    paths = image_paths(data_dir)
    # each image under its re-derived set (the set's own transform, same per-image torch seed)
    inputs = torch.stack([
        SeededTransform(choices[i], params, normalize=False, seed=42)(Image.open(p).convert("RGB"), i)
        for i, p in enumerate(paths)])
    model = reference_model(weights_file)
    perm = original_perm(N_IMAGES)
    with torch.no_grad():
        for start in range(0, N_IMAGES, BATCH):
            rows = perm[start:start + BATCH]
            np.testing.assert_allclose(features[rows], model(inputs[rows]).numpy(), rtol=1e-4, atol=1e-4)


def test_interrupted_quirk_run_resumes_with_the_same_batches(data_dir, weights_file, center_crop_run, small_batches,
                                                             tmp_path):
    import shutil

    clean = center_crop_run[0]
    other = shutil.copytree(data_dir, tmp_path / "other", ignore=shutil.ignore_patterns("*.h5", ".*"))
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exc:
        count_image_reads(patch, interrupt_on=3)  # in the second batch
        run(other, weights_file, "--img-aug", "center_crop_only")
    assert exc.value.code == 130
    resumed, _ = run(other, weights_file, "--img-aug", "center_crop_only")
    np.testing.assert_allclose(resumed, clean, rtol=1e-6, atol=1e-6)  # batches [5 2] and [4 3] as before
