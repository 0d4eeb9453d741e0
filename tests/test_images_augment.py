"""images_augment.py end to end on a tiny generated dataset, with random (offline) ResNet18 weights."""
from __future__ import annotations

import json
import shutil
import urllib.error
import warnings

import h5py
import numpy as np
import pytest
import torch

import images_augment
from configs.datasets import get_dataset
from configs.files import IMAGE_EMB_KEY, image_emb_name
from models.image_encoder import RESNET18_CHECKPOINT, build_image_encoder
from utils.data.transforms import IMAGE_AUG_SETS, AugParams, SeededTransform, build_transform
from utils.demo.scenes import make_demo_dataset
from utils.errors import DUCHError
from utils.io import read_h5

DEMO = get_dataset("demo")
N_IMAGES = 6  # one per demo class


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), images_per_class=1)


def run(data_dir, *extra, weights="none"):
    """Call the script's main as the demo pipeline does; returns (output path, features, attrs)."""
    args = images_augment.get_args_parser().parse_args(
        ["--dataset", "demo", "--data-dir", str(data_dir), "--weights", str(weights),
         "--num-workers", "0", "--no-progress", *extra]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the --weights none warning
        out = images_augment.main(args)
    with h5py.File(out, "r") as f:
        attrs = dict(f[IMAGE_EMB_KEY].attrs)
    return out, read_h5(out, IMAGE_EMB_KEY), attrs


def run_error(capsys, data_dir, *extra, **kwargs) -> str:
    """Run expecting a user error: exit status 2 and one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exc:
        run(data_dir, *extra, **kwargs)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def base(data_dir):
    """The default set (no_aug), eval mode, random weights from seed 42."""
    return run(data_dir)


def copy_dataset(data_dir, tmp_path):
    return shutil.copytree(data_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("*.h5"))


# ---------------------------------------------------------------------------------------------- output


def test_default_output_file(base, data_dir):
    out, features, attrs = base
    assert out == data_dir / "image_emb_DEMO_aug_no_aug.h5"  # the original's name
    with h5py.File(out, "r") as f:
        assert list(f.keys()) == [IMAGE_EMB_KEY]
        assert f[IMAGE_EMB_KEY].dtype == np.float32
    assert features.shape == (N_IMAGES, 512)
    assert np.isfinite(features).all()
    assert len(np.unique(features.round(4), axis=0)) == N_IMAGES  # every image has its own row
    assert attrs["weights"].startswith("none") and attrs["img_aug"] == "no_aug"
    assert not attrs["original_quirks"] and attrs["normalization"] == "imagenet mean/std"
    assert attrs["seed"] == 42 and attrs["batch_size"] == 64 and attrs["synthetic_dataset"]
    assert attrs["encoding_order"] == "JSON order" and json.loads(attrs["image_formats"]) == {"RGB": N_IMAGES}


def test_parameterised_set_name_and_params(data_dir):
    out, features, attrs = run(data_dir, "--img-aug", "rotation_cc", "--rot-deg", "-20", "-10",
                               "--crop-size", "180", "180")
    assert out.name == "image_emb_DEMO_aug_rotation_cc_-20_-10.h5"
    assert out.name == image_emb_name(DEMO, "rotation_cc", (-20.0, -10.0))
    assert features.shape == (N_IMAGES, 512) and np.isfinite(features).all()
    assert json.loads(attrs["rot_deg"]) == [-20, -10] and json.loads(attrs["crop_size"]) == [180, 180]


def test_each_img_random_deterministic_across_workers_and_batches(data_dir, tmp_path):
    out, first, _ = run(data_dir, "--img-aug", "each_img_random")
    assert out.name == "image_emb_DEMO_aug_each_img_random.h5"
    # same seed, other batch size and worker processes: the same bytes (transforms seeded per image)
    _, again, _ = run(copy_dataset(data_dir, tmp_path), "--img-aug", "each_img_random",
                      "--batch-size", "2", "--num-workers", "2")
    np.testing.assert_array_equal(first, again)


def test_original_quirks_differ_from_eval_mode(base, data_dir, tmp_path):
    _, features, attrs = run(copy_dataset(data_dir, tmp_path), "--original-quirks")
    assert features.shape == (N_IMAGES, 512) and np.isfinite(features).all()
    assert not np.allclose(features, base[1], atol=1e-3)
    assert attrs["original_quirks"] and attrs["normalization"] == "none"
    assert attrs["batch_size"] == DEMO.original_image_batch_size
    assert attrs["encoding_order"].startswith("original: np.random.seed(42); np.random.permutation(6)")


def test_local_weights_file_matches_the_same_weights(base, data_dir, tmp_path):
    # a full ResNet18 state dict (fc included) drawn from the same seed as --weights none
    torch.manual_seed(42)
    from torchvision.models import resnet18

    weights = tmp_path / "resnet18_random.pth"
    torch.save(resnet18(weights=None).state_dict(), weights)
    _, features, attrs = run(copy_dataset(data_dir, tmp_path), weights=weights)
    np.testing.assert_array_equal(features, base[1])
    assert str(weights) in attrs["weights"] and "sha256" in attrs["weights"]


def test_class_folder_layout(base, data_dir, tmp_path):
    other = copy_dataset(data_dir, tmp_path)
    by_class = tmp_path / "by_class"
    for entry in json.loads((data_dir / "DEMO.json").read_text())["images"]:
        (by_class / entry["classname"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / "images" / entry["filename"], by_class / entry["classname"] / entry["filename"])
    _, features, _ = run(other, "--image-dir", str(by_class))
    np.testing.assert_array_equal(features, base[1])


# ---------------------------------------------------------------------------------------------- errors


def test_refuses_to_overwrite(base, data_dir, capsys):
    out = base[0]
    before = out.stat().st_mtime_ns
    err = run_error(capsys, data_dir)
    assert str(out) in err and "--overwrite" in err
    assert out.stat().st_mtime_ns == before


def test_unknown_set_lists_valid_ones(data_dir, capsys):
    err = run_error(capsys, data_dir, "--img-aug", "mirror")
    assert "mirror" in err and all(name in err for name in IMAGE_AUG_SETS) and "did you mean" not in err
    err = run_error(capsys, data_dir, "--img-aug", "rotation-cc")
    assert "did you mean 'rotation_cc'?" in err


def test_missing_json(tmp_path, capsys):
    err = run_error(capsys, tmp_path)
    assert str(tmp_path / "DEMO.json") in err


def test_missing_image(data_dir, tmp_path, capsys):
    other = copy_dataset(data_dir, tmp_path)
    (other / "images" / "3.png").unlink()
    err = run_error(capsys, other)
    assert "3.png" in err and str(other / "images") in err


def test_unreadable_image(data_dir, tmp_path, capsys):
    other = copy_dataset(data_dir, tmp_path)
    (other / "images" / "2.png").write_bytes(b"not a png")
    err = run_error(capsys, other)
    assert str(other / "images" / "2.png") in err and "cannot read" in err


def test_bad_caption_count(data_dir, tmp_path, capsys):
    other = copy_dataset(data_dir, tmp_path)
    data = json.loads((other / "DEMO.json").read_text())
    data["images"][1]["sentences"].pop()
    (other / "DEMO.json").write_text(json.dumps(data))
    err = run_error(capsys, other)
    assert "DEMO.json" in err and "4 captions" in err


def test_bad_parameters(data_dir, capsys):
    assert "--blur-val" in run_error(capsys, data_dir, "--img-aug", "blur_cc", "--blur-val", "4", "3", "1", "2")
    assert "--rot-deg" in run_error(capsys, data_dir, "--img-aug", "rotation_cc", "--rot-deg", "5", "-5")
    # every number is range-checked at the door, not per image
    for flag, values, message in (("--rot-deg", ("nan", "1"), "--rot-deg takes finite numbers"),
                                  ("--rot-deg", ("-1000", "1"), "-360..360"),
                                  ("--blur-val", ("3", "3", "nan", "1"), "--blur-val takes finite numbers"),
                                  ("--jit-str", ("nan",), "--jit-str takes finite numbers")):
        assert message in run_error(capsys, data_dir, "--img-aug", "rotation_cc", flag, *values)


def test_imagenet_weights_missing_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DUCHError) as exc:
        build_image_encoder("imagenet")
    message = str(exc.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / RESNET18_CHECKPOINT) in message
    assert "--weights PATH" in message and "--weights none" in message and "IMAGENET1K_V1" in message


UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return {}


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return _record_unpickling, ()


def test_cached_imagenet_weights_are_loaded_without_pickle(monkeypatch, tmp_path):
    from models.image_encoder import imagenet_cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    imagenet_cache_path().parent.mkdir(parents=True)
    torch.save({"fc.weight": _RunsCodeWhenUnpickled()}, imagenet_cache_path())
    with pytest.raises(DUCHError, match="UnpicklingError"):
        build_image_encoder("imagenet")
    assert not UNPICKLED  # weights_only: the file's code never ran


def test_bad_weights_files(tmp_path):
    with pytest.raises(DUCHError, match="no such file"):
        build_image_encoder(str(tmp_path / "absent.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(DUCHError, match="do not fit a torchvision ResNet18"):
        build_image_encoder(str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 10)
    with pytest.raises(DUCHError, match="cannot load weights file"):
        build_image_encoder(str(garbage))


def test_random_weights_are_warned_about():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        build_image_encoder("none")


# ---------------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("name", IMAGE_AUG_SETS)
def test_every_transform_set(name):
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 240, 3), dtype=np.uint8))
    transform = SeededTransform(name, AugParams(), normalize=False, seed=42)
    first = transform(image, 0)
    assert first.shape == (3, 224, 224) and first.dtype == torch.float32
    assert 0 <= float(first.min()) and float(first.max()) <= 1
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert torch.equal(transform(image, 0), first)  # seeded per (seed, index) ...
    assert torch.equal(torch.get_rng_state(), state)  # ... without touching the caller's generator
    random_sets = {"random_crop_only", "aug_center", "aug_random", "rotation_cc", "blur_cc", "jitter_cc",
                   "each_img_random"}
    if name in random_sets:  # other images, or another seed, get other draws
        assert any(not torch.equal(transform(image, k), first) for k in range(1, 4))
        reseeded = SeededTransform(name, AugParams(), normalize=False, seed=7)
        assert any(not torch.equal(reseeded(image, k), transform(image, k)) for k in range(3))
    else:
        assert torch.equal(transform(image, 5), first)


def test_center_crop_and_each_img_random_choice():
    from PIL import Image

    pixels = np.zeros((256, 256, 3), np.uint8)
    pixels[:28] = 255  # a white band that a 200x200 center crop cuts away
    image = Image.fromarray(pixels)
    assert float(build_transform("center_crop_only", normalize=False)(image).max()) == 0
    assert float(build_transform("no_aug", normalize=False)(image).max()) == 1
    chooser = SeededTransform("each_img_random", seed=42)
    chosen = {chooser.set_for(k)[0] for k in range(30)}
    assert chosen == {"rotation_cc", "blur_cc", "jitter_cc"}


def test_truncated_image_in_a_worker(data_dir, tmp_path, capsys):
    # the header reads, the pixels do not: the error surfaces from a worker process as one clear line
    other = copy_dataset(data_dir, tmp_path)
    path = other / "images" / "4.png"
    path.write_bytes(path.read_bytes()[:2000])
    err = run_error(capsys, other, "--num-workers", "2", "--batch-size", "2")
    assert str(path) in err and "cannot read" in err
