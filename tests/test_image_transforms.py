"""The image transform sets of docs/method.md, checked by what they do to images built for the purpose.

Every expectation is written out from docs/method.md (order of operations, crop size, blur kernel and sigma range,
rotation range, jitter factors) and measured on the output, not read back from the code under test.
"""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import images_augment
from configs.files import IMAGE_EMB_KEY
from models.image_encoder import build_image_encoder, encode_image_files
from utils.data.transforms import EACH_IMG_RANDOM_CHOICES, AugParams, SeededTransform, build_transform
from utils.demo.scenes import make_demo_dataset
from utils.io import read_h5

DRAWS = 16  # images (indices) per randomness check


def apply(name, image, index=0, **params) -> np.ndarray:
    """Transform set ``name`` without normalisation, as an (H, W, 3) array in [0, 1]."""
    transform = SeededTransform(name, AugParams.checked(**params), normalize=False, seed=42)
    return transform(image, index).permute(1, 2, 0).numpy()


def uniform(value=255, size=256) -> Image.Image:
    return Image.new("RGB", (size, size), (value, value, value))


# ---------------------------------------------------------------------------------------------- order


@pytest.mark.parametrize("name,steps", [
    ("no_aug", []),
    ("center_crop_only", ["CenterCrop"]),
    ("random_crop_only", ["RandomCrop"]),
    ("aug_center", ["GaussianBlur", "RandomRotation", "CenterCrop"]),
    ("aug_random", ["GaussianBlur", "RandomRotation", "RandomCrop"]),
    ("rotation_cc", ["RandomRotation", "CenterCrop"]),
    ("blur_cc", ["GaussianBlur", "CenterCrop"]),
    ("jitter_cc", ["ColorJitter", "CenterCrop"]),
])
def test_steps_of_every_set_in_the_spec_order(name, steps):
    transform = build_transform(name, AugParams(), normalize=True)
    names = [type(step).__name__ for step in transform.transforms]
    assert names == steps + ["Resize", "ToImage", "ToDtype", "Normalize"]
    assert [type(s).__name__ for s in build_transform(name, normalize=False).transforms][-1] == "ToDtype"


@pytest.mark.parametrize("name", ["rotation_cc", "aug_center"])  # aug_random: a random crop may reach the fill
def test_rotation_comes_before_the_crop(name):
    # a uniform 256x256 image rotated by <= 10 degrees has fill pixels only outside its central 221x221:
    # a 200x200 crop taken after the rotation holds none; a crop taken first would show them in its corners
    for index in range(4):
        assert apply(name, uniform(), index).min() == 1.0
    cropped_first = uniform().crop((28, 28, 228, 228)).rotate(-7.5).resize((224, 224), Image.BILINEAR)
    assert np.asarray(cropped_first).min() == 0  # the check has power


def band_angle(out: np.ndarray) -> float:
    """Angle (degrees, counter-clockwise) of a horizontal white band after the transform."""
    gray = out.mean(axis=2)
    ys = np.arange(gray.shape[0])[:, None]
    cols = slice(40, gray.shape[1] - 40)
    centroid = (gray[:, cols] * ys).sum(0) / gray[:, cols].sum(0)
    slope = np.polyfit(np.arange(gray.shape[1])[cols], centroid, 1)[0]
    return math.degrees(math.atan(-slope))


def band_image() -> Image.Image:
    pixels = np.zeros((256, 256, 3), np.uint8)
    pixels[120:136] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("name,rot_deg,expected", [
    ("rotation_cc", (-10, -5), (-10, -5)),
    ("rotation_cc", (20, 30), (20, 30)),
    ("aug_center", (20, 30), (-10, -5)),  # aug_center and aug_random always use the paper's range
    ("aug_random", (20, 30), (-10, -5)),
])
def test_rotation_range(name, rot_deg, expected):
    angles = [band_angle(apply(name, band_image(), k, rot_deg=rot_deg)) for k in range(DRAWS)]
    assert expected[0] - 0.4 <= min(angles) and max(angles) <= expected[1] + 0.4, angles
    assert max(angles) - min(angles) > 0.4 * (expected[1] - expected[0])  # drawn from the range, not fixed


# ---------------------------------------------------------------------------------------------- crops


def pattern(width=256, height=256) -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_centre_crop_size_and_place():
    image = pattern(256, 240)
    out = apply("center_crop_only", image, crop_size=(100, 120))  # CROP_H CROP_W
    top, left = round((240 - 100) / 2), round((256 - 120) / 2)
    expected = image.crop((left, top, left + 120, top + 100)).resize((224, 224), Image.BILINEAR)
    np.testing.assert_array_equal((out * 255).round().astype(np.uint8), np.asarray(expected))


def test_random_crop_is_a_window_of_the_crop_size():
    image = pattern(206, 206)
    windows = {(x, y): np.asarray(image.crop((x, y, x + 200, y + 200)).resize((224, 224), Image.BILINEAR))
               for x in range(7) for y in range(7)}
    found = []
    for index in range(6):
        out = (apply("random_crop_only", image, index) * 255).round().astype(np.uint8)
        found += [xy for xy, window in windows.items() if np.array_equal(window, out)]
    assert len(found) == 6 and len(set(found)) > 1  # each a 200x200 window, not always the same one


# ---------------------------------------------------------------------------------------------- blur


def impulse(size=224) -> Image.Image:
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[size // 2, size // 2] = 255
    return Image.fromarray(pixels)


def blurred(index, **params) -> np.ndarray:
    # crop = image size, resize 224 -> 224: the output is the blur alone
    return apply("blur_cc", impulse(), index, crop_size=(224, 224), **params)[..., 0]


def test_blur_kernel_and_sigma_range():
    sigmas = []
    for index in range(DRAWS):
        out = blurred(index)
        rows, cols = np.nonzero(out)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (111, 113, 111, 113)  # 3x3 kernel
        ratio = out[112, 113] / out[112, 112]  # neighbour / centre = exp(-1 / (2 sigma^2))
        sigmas.append(math.sqrt(-1 / (2 * math.log(ratio))))
    assert 1.1 - 0.04 <= min(sigmas) and max(sigmas) <= 1.3 + 0.04, sigmas
    assert max(sigmas) - min(sigmas) > 0.08


def test_blur_kernel_is_width_then_height():
    out = blurred(0, blur_val=(5, 3, 1.1, 1.3))
    rows, cols = np.nonzero(out)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (3, 5)


# ---------------------------------------------------------------------------------------------- jitter


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_jitter_brightness_factor_range(strength):
    # on a uniform grey image contrast, saturation and hue change nothing: the value is 128 * brightness,
    # brightness drawn from [1 - 0.8 s, 1 + 0.8 s]
    factors = []
    for index in range(64):
        out = apply("jitter_cc", uniform(128, size=208), index, jit_str=strength)
        assert np.ptp(out) == 0
        factors.append(out[0, 0, 0] * 255 / 128)
    low, high = 1 - 0.8 * strength, 1 + 0.8 * strength
    assert low - 0.01 <= min(factors) and max(factors) <= high + 0.01
    assert min(factors) < low + 0.15 * (high - low) and max(factors) > high - 0.15 * (high - low)


def test_jitter_factors_of_spec():
    jitter = build_transform("jitter_cc", AugParams(jit_str=0.5)).transforms[0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation) == ((0.6, 1.4),) * 3
    assert jitter.hue == pytest.approx((-0.1, 0.1))


def test_paper_values_for_aug_center_and_aug_random_whatever_the_flags():
    params = AugParams.checked(rot_deg=(-30, -20), blur_val=(5, 5, 2, 3), jit_str=1.0)
    for name in ("aug_center", "aug_random"):
        blur, rotation = build_transform(name, params).transforms[:2]
        assert list(blur.kernel_size) == [3, 3] and list(blur.sigma) == pytest.approx([1.1, 1.3])
        assert list(rotation.degrees) == [-10, -5]
    blur = build_transform("blur_cc", params).transforms[0]
    assert list(blur.kernel_size) == [5, 5] and list(blur.sigma) == [2, 3]


# ---------------------------------------------------------------------------------------------- each_img_random


def test_each_img_random_applies_one_of_the_three_sets():
    image = pattern()
    each = SeededTransform("each_img_random", normalize=False, seed=42)
    seen = set()
    for index in range(12):
        name, _ = each.set_for(index)
        seen.add(name)
        single = SeededTransform(name, normalize=False, seed=42)
        assert torch.equal(each(image, index), single(image, index))
    assert seen == set(EACH_IMG_RANDOM_CHOICES)


# ---------------------------------------------------------------------------------------------- encoder


def test_features_equal_an_independent_resnet18_forward(tmp_path):
    from torchvision.models import resnet18

    data_dir = make_demo_dataset(tmp_path / "demo", images_per_class=1)
    torch.manual_seed(11)
    reference = resnet18(weights=None).eval()
    weights = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), weights)
    args = images_augment.get_args_parser().parse_args(
        ["--dataset", "demo", "--data-dir", str(data_dir), "--weights", str(weights), "--num-workers", "0",
         "--no-progress", "--img-aug", "center_crop_only"])
    out = images_augment.main(args)
    features = read_h5(out, IMAGE_EMB_KEY)
    with h5py.File(out, "r") as f:
        assert f[IMAGE_EMB_KEY].attrs["network_mode"] == "eval"

    # image 2 by hand: centre crop 200, bilinear resize to 224, /255, ImageNet mean/std, ResNet18 trunk, GAP
    filename = json.loads((data_dir / "DEMO.json").read_text())["images"][2]["filename"]
    image = Image.open(data_dir / "images" / filename).convert("RGB")
    image = image.crop((28, 28, 228, 228)).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    m = reference
    with torch.no_grad():
        h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        h = m.layer4(m.layer3(m.layer2(m.layer1(h))))
        expected = h.mean(dim=(2, 3))[0].numpy()
    np.testing.assert_allclose(features[2], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(features[1], expected, atol=1e-3)

    # the importable entry point (search.py encodes new images with it) gives the same rows
    paths = [data_dir / "images" / e["filename"] for e in json.loads((data_dir / "DEMO.json").read_text())["images"]]
    model, _ = build_image_encoder(str(weights))
    again = encode_image_files(model, SeededTransform("center_crop_only", normalize=True, seed=42), paths[1:3],
                               "cpu", batch_size=1)
    np.testing.assert_allclose(again, features[1:3], rtol=1e-5, atol=1e-6)
    assert encode_image_files(model, None, [], "cpu").shape == (0, 512)
