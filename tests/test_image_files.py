"""images_augment.py: file names as the original writes them, high-bit-depth images, large images,
Ctrl-C and resuming, and its messages."""
from __future__ import annotations

import json
import shutil
import struct
import warnings

import h5py
import numpy as np
import pytest
from PIL import Image

import images_augment
from configs import files
from configs.datasets import get_dataset
from tests.conftest import count_image_reads
from utils.data.images import ImageDataset, load_image
from utils.demo.scenes import make_demo_dataset
from utils.errors import DUCHError
from utils.io import read_h5

UCM, DEMO = get_dataset("ucm"), get_dataset("demo")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), images_per_class=1)


def copy(demo_dir, tmp_path, name="copy"):
    return shutil.copytree(demo_dir, tmp_path / name, ignore=shutil.ignore_patterns("*.h5", ".*"))


def parse(data_dir, *extra):
    return images_augment.get_args_parser().parse_args(
        ["--dataset", "demo", "--data-dir", str(data_dir), "--weights", "none", "--num-workers", "0",
         "--no-progress", *extra])


def run(data_dir, *extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # --weights none
        out = images_augment.main(parse(data_dir, *extra))
    with h5py.File(out, "r") as f:
        attrs = dict(f[files.IMAGE_EMB_KEY].attrs)
    return out, read_h5(out, files.IMAGE_EMB_KEY), attrs


def run_error(capsys, data_dir, *extra, code=2) -> str:
    with pytest.raises(SystemExit) as exc:
        run(data_dir, *extra)
    assert exc.value.code == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------- names


def original_name(ds_name, img_aug, ard=(-10, -5), abv=(3.0, 3.0, 1.1, 1.3), ajs=(0.5,)):
    """The original's config_img_aug.py expressions, with its argparse types (rot int, blur and jitter float)."""
    if img_aug == "rotation_cc":
        return "image_emb_{}_aug_{}_{}_{}.h5".format(ds_name, img_aug, ard[0], ard[1])
    if img_aug == "blur_cc":
        return "image_emb_{}_aug_{}_{}_{}.h5".format(ds_name, img_aug, "_".join([str(int(i)) for i in abv[:2]]),
                                                     "_".join([str(i) for i in abv[2:]]))
    if img_aug == "jitter_cc":
        return "image_emb_{}_aug_{}_{}.h5".format(ds_name, img_aug, ajs[0])
    return "image_emb_{}_aug_{}.h5".format(ds_name, img_aug)


@pytest.mark.parametrize("img_aug,rot,blur,jit", [
    ("no_aug", None, None, None),
    ("center_crop_only", None, None, None),
    ("each_img_random", None, None, None),
    ("rotation_cc", [-20, -10], None, None),
    ("rotation_cc", [5, 10], None, None),
    ("blur_cc", None, [3, 3, 1.1, 1.3], None),
    ("blur_cc", None, [5, 3, 1, 2], None),
    ("jitter_cc", None, None, 1),
    ("jitter_cc", None, None, 0.5),
])
def test_names_are_the_originals(img_aug, rot, blur, jit):
    argv = ["--img-aug", img_aug]
    argv += ["--rot-deg", *map(str, rot)] if rot else []
    argv += ["--blur-val", *map(str, blur)] if blur else []
    argv += ["--jit-str", str(jit)] if jit is not None else []
    args = images_augment.get_args_parser().parse_args(argv)
    ours = files.image_emb_name(UCM, img_aug, args.rot_deg, args.blur_val, args.jit_str)
    theirs = original_name("UCM", img_aug, [int(r) for r in rot or (-10, -5)],
                           [float(b) for b in blur or (3, 3, 1.1, 1.3)], [float(jit if jit is not None else 0.5)])
    assert ours == theirs
    # the command a missing file's message gives writes exactly that file
    hint = files.image_emb_command_for_file(UCM, ours).split()
    again = images_augment.get_args_parser().parse_args(hint[2:])
    assert files.image_emb_name(UCM, again.img_aug, again.rot_deg, again.blur_val, again.jit_str) == ours


def test_examples_of_spec_section_1():
    assert files.image_emb_name(UCM) == "image_emb_UCM_aug_no_aug.h5"
    assert files.image_emb_name(UCM, "jitter_cc", jit_str=1) == "image_emb_UCM_aug_jitter_cc_1.0.h5"
    assert files.image_emb_name(UCM, "blur_cc", blur_val=(3, 3, 1.1, 1.3)) == "image_emb_UCM_aug_blur_cc_3_3_1.1_1.3.h5"
    assert files.image_emb_name(UCM, "rotation_cc", rot_deg=(-10.0, -5.0)) == "image_emb_UCM_aug_rotation_cc_-10_-5.h5"


def test_reader_accepts_the_other_names(tmp_path):
    assert files.find_image_emb(tmp_path, UCM).name == "image_emb_UCM_aug_no_aug.h5"  # nothing there: the written name
    (tmp_path / "image_emb_UCM_aug.h5").touch()  # the name in the original's config
    assert files.find_image_emb(tmp_path, UCM).name == "image_emb_UCM_aug.h5"
    (tmp_path / "image_emb_UCM_aug_no_aug.h5").touch()
    assert files.find_image_emb(tmp_path, UCM).name == "image_emb_UCM_aug_no_aug.h5"
    (tmp_path / "image_emb_UCM_aug_jitter_cc_1.h5").touch()  # written by earlier versions of this project
    assert files.find_image_emb(tmp_path, UCM, "jitter_cc", jit_str=1.0).name == "image_emb_UCM_aug_jitter_cc_1.h5"


def test_img_aug_emb_hint_names_the_command_for_that_file():
    assert files.image_emb_command_for_file(UCM, "data/image_emb_UCM_aug_rotation_cc_-20_-10.h5") == \
        "python images_augment.py --dataset ucm --img-aug rotation_cc --rot-deg -20 -10"
    assert files.image_emb_command_for_file(UCM, "image_emb_UCM_aug_jitter_cc_1.0.h5").endswith("--jit-str 1.0")
    other = files.image_emb_command_for_file(UCM, "/x/my_features.h5")
    assert "my_features.h5" in other and "--img-aug-emb" in other and "--img-aug <set>" in other
    assert "--img-aug-emb" in files.image_emb_command_for_file(UCM, "image_emb_UCM_aug_mirror.h5")


def test_script_writes_the_original_names(demo_dir, tmp_path):
    out, features, _ = run(copy(demo_dir, tmp_path), "--img-aug", "jitter_cc", "--jit-str", "1")
    assert out.name == "image_emb_DEMO_aug_jitter_cc_1.0.h5" and features.shape == (6, 512)


# ---------------------------------------------------------------------------------------------- paper values


def test_aug_center_ignores_the_rotation_and_blur_flags(demo_dir, tmp_path):
    out, paper, attrs = run(copy(demo_dir, tmp_path, "a"), "--img-aug", "aug_center")
    out2, flagged, attrs2 = run(copy(demo_dir, tmp_path, "b"), "--img-aug", "aug_center",
                                "--rot-deg", "-30", "-20", "--blur-val", "5", "5", "2", "3")
    assert out.name == out2.name == "image_emb_DEMO_aug_aug_center.h5"
    np.testing.assert_array_equal(paper, flagged)
    assert json.loads(attrs2["rot_deg"]) == [-10, -5] and json.loads(attrs2["blur_val"]) == [3, 3, 1.1, 1.3]
    # (that the flags do set rotation_cc and blur_cc: test_image_transforms.py)


# ---------------------------------------------------------------------------------------------- bit depth


def write_tiff(path, array: np.ndarray) -> None:
    """A minimal uncompressed multi-band TIFF (PIL cannot write 16-bit multi-band ones)."""
    h, w, c = array.shape
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    bits = array.dtype.itemsize * 8
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, None), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, None), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    bps_at = 8 + 2 + 12 * len(entries) + 4
    data_at = bps_at + 2 * c
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        value = {258: bps_at, 273: data_at}.get(tag, value)
        out += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == 3 and count == 1 else \
            struct.pack("<HHII", tag, kind, count, value)
    out += struct.pack("<I", 0) + struct.pack("<" + "H" * c, *[bits] * c) + data
    path.write_bytes(bytes(out))


def gray8(size=256) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return ((x * 3 + y * 5) % 256).astype(np.uint8)


def test_16_bit_and_float_images_are_scaled_not_white(tmp_path):
    g = gray8()
    Image.fromarray(g.astype(np.uint16) * 257).save(tmp_path / "a.png")  # I;16, full range
    Image.fromarray(g.astype(np.uint16) * 257).save(tmp_path / "a.tif")
    Image.fromarray(g.astype(np.float32) / 255).save(tmp_path / "f.tif")  # F in [0, 1]
    twelve = (g.astype(np.uint16) * 16)  # 12-bit data in a 16-bit file: dark, never white
    Image.fromarray(twelve).save(tmp_path / "dark.png")
    for name in ("a.png", "a.tif", "f.tif"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image)[..., 0], g)  # 16 bits -> 8 bits by the type's range
    dark = np.asarray(load_image(tmp_path / "dark.png"))[..., 0]
    np.testing.assert_array_equal(dark, np.rint(twelve.astype(np.float64) * 255 / 65535).astype(np.uint8))


def test_bit_depth_of_the_data(demo_dir, tmp_path, capsys):
    twelve = gray8().astype(np.uint16) * 16  # 12-bit sensor data in a 16-bit file
    Image.fromarray(twelve).save(tmp_path / "twelve.png")
    converted = np.asarray(load_image(tmp_path / "twelve.png", bit_depth=12))[..., 0]
    np.testing.assert_array_equal(converted, np.rint(twelve.astype(np.float64) * 255 / 4095).astype(np.uint8))
    assert converted.max() >= 250  # the full 8-bit range, not a dark image
    Image.fromarray(np.full((8, 8), 5000, np.uint16)).save(tmp_path / "thirteen.png")
    with pytest.raises(DUCHError, match=r"thirteen\.png.*0\.\.4095.*--bit-depth"):
        load_image(tmp_path / "thirteen.png", bit_depth=12)
    # a multi-band 16-bit TIFF reaches us as 8 bits: --bit-depth cannot apply, said before any work
    data_dir = copy(demo_dir, tmp_path)
    write_tiff(data_dir / "images" / "1.png", np.full((16, 16, 3), 4000, np.uint16))
    err = run_error(capsys, data_dir, "--bit-depth", "12")
    assert str(data_dir / "images" / "1.png") in err and "--bit-depth" in err
    assert "--bit-depth" in run_error(capsys, data_dir, "--bit-depth", "20")


def test_multi_band_images(tmp_path):
    rng = np.random.default_rng(1)
    rgbn = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    Image.fromarray(rgbn).save(tmp_path / "rgbn.tif")  # 4-band 8-bit TIFF
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgbn.tif")), rgbn[..., :3])
    wide = rng.integers(0, 65536, (40, 50, 4), dtype=np.uint16)
    write_tiff(tmp_path / "rgbn16.tif", wide)  # 4-band 16-bit TIFF
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgbn16.tif")),
                                  (wide[..., :3] >> 8).astype(np.uint8))


def test_unconvertible_images_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((8, 8), 3.5, np.float32)).save(tmp_path / "reflectance.tif")
    with pytest.raises(DUCHError, match=r"reflectance\.tif.*\[3\.5, 3\.5\].*\[0, 1\]"):
        load_image(tmp_path / "reflectance.tif")
    Image.fromarray(np.full((8, 8), -5, np.int32)).save(tmp_path / "signed.tif")
    with pytest.raises(DUCHError, match=r"signed\.tif.*0\.\.65535"):
        load_image(tmp_path / "signed.tif")


def test_16_bit_dataset_gives_the_features_of_its_8_bit_twin(demo_dir, tmp_path):
    data_dir = copy(demo_dir, tmp_path)
    data = json.loads((data_dir / "DEMO.json").read_text())
    eight = np.asarray(Image.open(data_dir / "images" / "1.png").convert("L"))
    Image.fromarray(eight.astype(np.uint16) * 257).save(data_dir / "images" / "sixteen.png")
    Image.fromarray(eight).convert("RGB").save(data_dir / "images" / "2.png")  # its 8-bit twin
    data["images"][0]["filename"] = "sixteen.png"
    (data_dir / "DEMO.json").write_text(json.dumps(data))
    _, features, attrs = run(data_dir)
    np.testing.assert_array_equal(features[0], features[1])
    assert json.loads(attrs["image_formats"]) == {"I;16": 1, "RGB": 5}
    assert "65535" in attrs["high_bit_depth_conversion"]


# ---------------------------------------------------------------------------------------------- large images


def test_images_above_the_pixel_limit_are_refused_by_name(demo_dir, tmp_path, capsys):
    data_dir = copy(demo_dir, tmp_path)
    # 256 x 256 = 65536 pixels: PIL itself would only warn below 2 x 40000; we refuse from 1 x
    err = run_error(capsys, data_dir, "--max-image-pixels", "40000")
    assert str(data_dir / "images" / "1.png") in err and "--max-image-pixels" in err
    dataset = ImageDataset([data_dir / "images" / "1.png"], lambda image, index: image, max_pixels=1000)
    assert "--max-image-pixels" in dataset[0][2]  # in worker processes too, as data
    assert load_image(data_dir / "images" / "1.png", max_pixels=0).size == (256, 256)  # 0: no limit
    assert parse(data_dir).max_image_pixels == Image.MAX_IMAGE_PIXELS  # PIL's default limit by default


# ---------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_writes_nothing_and_the_rerun_resumes(demo_dir, tmp_path, capsys, monkeypatch):
    _, clean, _ = run(copy(demo_dir, tmp_path, "clean"), "--batch-size", "2")
    data_dir = copy(demo_dir, tmp_path, "interrupted")
    count_image_reads(monkeypatch, interrupt_on=3)
    err = run_error(capsys, data_dir, "--batch-size", "2", code=130)
    assert "interrupted" in err and "2 of 6 images" in err and "resume" in err
    out = data_dir / "image_emb_DEMO_aug_no_aug.h5"
    assert not out.exists() and not list(data_dir.glob(".*.tmp"))  # nothing half-written
    assert (data_dir / f".{out.name}.partial.npz").is_file()

    calls = count_image_reads(monkeypatch)
    out2, resumed, _ = run(data_dir, "--batch-size", "2")
    assert out2 == out and len(calls) == 4  # the first batch was not encoded again
    np.testing.assert_allclose(resumed, clean, rtol=1e-6, atol=1e-6)
    assert not (data_dir / f".{out.name}.partial.npz").exists()


def test_ctrl_c_before_encoding_is_one_line(demo_dir, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("utils.data.images.find_images", interrupted)
    err = run_error(capsys, copy(demo_dir, tmp_path), code=130)
    assert "interrupted" in err


def test_partial_of_other_settings_is_not_used(demo_dir, tmp_path, capsys):
    data_dir = copy(demo_dir, tmp_path)
    partial = data_dir / ".image_emb_DEMO_aug_no_aug.h5.partial.npz"
    with open(partial, "wb") as f:
        np.savez(f, features=np.ones((6, 512), np.float32), filled=np.ones(6, bool), fingerprint=np.array("other"))
    _, features, _ = run(data_dir)
    assert "other settings" in capsys.readouterr().err and not np.allclose(features, 1)


# ---------------------------------------------------------------------------------------------- help


def test_help_shows_purpose_and_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        images_augment.get_args_parser().parse_args(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Encode a dataset's images with ResNet18" in text
    for default in ("(default: ucm)", "(default: no_aug)", "(default: [200, 200])", "(default: [-10, -5])",
                    "(default: 0.5)", "(default: 42)", "(default: imagenet)"):
        assert default in text


def test_missing_img_aug_emb_file_names_the_command_that_makes_it(demo_features):
    from utils.data.features import load_features, resolve_files

    for name, hint in [("image_emb_DEMO_aug_rotation_cc_-20_-10.h5", "--img-aug rotation_cc --rot-deg -20 -10"),
                       ("mine.h5", "check the --img-aug-emb path")]:
        paths = resolve_files(DEMO, demo_features, "default", name)
        with pytest.raises(DUCHError) as exc:
            load_features(DEMO, paths, "default")
        assert name in str(exc.value) and hint in str(exc.value)


def test_bad_flags_are_one_line_before_any_work(demo_dir, tmp_path, capsys):
    err = run_error(capsys, demo_dir, "--img-aug", "jitter_cc", "--jit-str", "3")  # hue 0.6 > 0.5: torchvision refuses
    assert "--jit-str" in err and "2.5" in err
    missing = tmp_path / "mistyped"
    err = run_error(capsys, missing)
    assert str(missing / "DEMO.json") in err and not missing.exists()  # a mistyped --data-dir is not created
