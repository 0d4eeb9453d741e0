"""Security class: paths from data stay inside their folder, data reaches the terminal printable, and an .npz
is read key by key with sizes checked first (utils/paths.py, utils/terminal.py, utils/io.py read_npz)."""
import json
import os
import zipfile

import numpy as np
import pytest

from tests.conftest import run_main
from utils.errors import DUCHError, exit_on_user_error
from utils.paths import check_inside, contained, is_inside, safe_name


@pytest.fixture
def folder(tmp_path):
    base = tmp_path / "images"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"s")
    return base


# ------------------------------------------------------------------------------ containment helper

@pytest.mark.parametrize("name", ["../secret.png", "sub/../../secret.png", "sub/../../images/../secret.png"])
def test_contained_refuses_dot_dot(folder, name):
    with pytest.raises(DUCHError, match="leads outside"):
        contained(folder, name, "dataset JSON filename")


def test_contained_refuses_absolute_and_nul(folder, tmp_path):
    with pytest.raises(DUCHError, match="absolute path"):
        contained(folder, str(tmp_path / "secret.png"))
    with pytest.raises(DUCHError, match="not a file name"):
        contained(folder, "a\x00.png")


def test_contained_follows_symlinks(folder, tmp_path):
    os.symlink(tmp_path / "secret.png", folder / "link.png")  # a link inside that points out
    os.symlink(tmp_path, folder / "up")  # a folder link that points out
    os.symlink(folder / "sub" / "a.png", folder / "inner.png")  # a link that stays inside
    for name in ("link.png", "up/secret.png"):
        with pytest.raises(DUCHError, match="leads outside"):
            contained(folder, name)
    assert contained(folder, "inner.png") == folder / "inner.png"
    assert contained(folder, "sub/a.png") == folder / "sub" / "a.png"
    # a '..' that stays inside is fine
    assert contained(folder, "sub/../sub/a.png").resolve() == (folder / "sub" / "a.png").resolve()
    assert not is_inside(folder / "link.png", folder) and is_inside(folder / "inner.png", folder)
    with pytest.raises(DUCHError, match="outside"):
        check_inside(tmp_path / "secret.png", [folder])
    assert not is_inside(str(folder) + "2/x", folder)  # a sibling whose name starts like the folder's


def test_relative_name_check_takes_its_shortcut_only_where_the_full_rule_passes():
    """check_relative_name skips the path parsing for names without '..', ':', NUL or a leading slash: on
    every spelling it decides as the full rule does."""
    import os
    from pathlib import PurePosixPath, PureWindowsPath

    from utils.data.dataset_json import check_relative_name

    def full_rule(name):
        parts = PurePosixPath(name.replace("\\", "/")).parts
        absolute = os.path.isabs(name) or PureWindowsPath(name).drive or name.startswith(("/", "\\"))
        return not ("\x00" in name or absolute or ".." in parts)

    names = ["a.png", "sub/a.png", "a..b.png", "sub/..", "../a.png", "sub\\..\\..\\x", "C:x.png", "c:/x", "x:y.png",
             "/abs.png", "\\\\srv\\share\\x", "//srv/share/x", "a\x00.png", "a/./b", "...", "a/.../b", "\\x"]
    for name in names:
        if full_rule(name):
            check_relative_name(name, "filename")
        else:
            with pytest.raises(DUCHError, match="leads outside"):
                check_relative_name(name, "filename")
    assert sum(map(full_rule, names)) not in (0, len(names))


def test_contained_agrees_with_a_full_resolve_for_every_spelling(folder, tmp_path):
    """contained() skips the full resolve when no part is '..' or a symlink: on many spellings (links at
    each depth, missing parts, '.', '//', links inside and out) it decides as resolving the whole path does."""
    (folder / "sub" / "deep").mkdir()
    os.symlink(tmp_path, folder / "sub" / "out")  # a link one level down that points out
    os.symlink(folder / "sub", folder / "sub" / "deep" / "back")  # a link two levels down that stays inside
    os.symlink(tmp_path / "secret.png", folder / "sub" / "deep" / "leak.png")
    names = ["a.png", "sub/a.png", "./sub//a.png", "missing/x/y.png", "sub/missing.png", "sub/out/secret.png",
             "sub/out/missing/x.png", "sub/deep/back/a.png", "sub/deep/leak.png", "sub/deep/../a.png",
             "sub/../../x.png", "sub/deep/back/../../x.png", "sub/a.png/x"]
    for name in names:
        inside = is_inside(folder / name, folder)
        if inside:
            assert contained(folder, name) == folder / name, name
        else:
            with pytest.raises(DUCHError, match="leads outside"):
                contained(folder, name)
    assert not is_inside(folder / "sub/out/missing/x.png", folder)  # the cases above include both answers
    assert is_inside(folder / "sub/deep/back/a.png", folder)


@pytest.mark.parametrize("tag", ["../escape", "a/b", "/abs", ".hidden", "", "x" * 200, "a b", "$\\alpha$", "t\x1b[2J"])
def test_safe_name_refuses(tag):
    with pytest.raises(DUCHError, match="cannot name a folder"):
        safe_name(tag, "--tag")


def test_safe_name_accepts_ordinary_tags():
    for tag in ("test", "seed-3", "lr=1e-4,b=256", "v1.2_final", "a+b@x"):
        assert safe_name(tag) == tag


def test_main_refuses_tag_that_leaves_out_dir(tmp_path, capsys):
    for tag in ("../../elsewhere", "a/b"):
        with pytest.raises(SystemExit) as exit_info:
            run_main("--dataset", "demo", "--tag", tag, "--out-dir", str(tmp_path / "runs"), "--epochs", "1")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --tag") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------------------------ dataset JSON filenames

def _dataset(tmp_path, filename, classname=None):
    image = {"filename": filename, "classcode": 0, "sentences": [{"raw": f"c {i}"} for i in range(5)]}
    if classname is not None:
        image["classname"] = classname
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"images": [image]}))
    return path


@pytest.mark.parametrize("filename,classname", [
    ("../../../../tmp/x.png", None), ("/etc/passwd", None), ("a/../../x.png", None), ("x.png", "../.."),
    ("..\\..\\x.png", None),
])
def test_dataset_json_refuses_names_that_climb(tmp_path, filename, classname):
    from utils.data.dataset_json import load_dataset_json

    with pytest.raises(DUCHError, match="leads outside the image folder"):
        load_dataset_json(_dataset(tmp_path, filename, classname))


def test_find_image_refuses_symlink_out(folder, tmp_path):
    from utils.data.images import find_image

    os.symlink(tmp_path / "secret.png", folder / "evil.png")
    with pytest.raises(DUCHError, match="leads outside"):
        find_image(folder, "evil.png")
    with pytest.raises(DUCHError, match="leads outside"):
        find_image(folder, "../secret.png")
    assert find_image(folder, "a.png", "sub") == folder / "sub" / "a.png"


@pytest.mark.parametrize("where", ["direct", "class folder", "filepath", "nested"])
def test_find_images_refuses_a_symlink_out_by_every_route(folder, tmp_path, where):
    """images_augment.py's reader applies search.py index's rule: a link that resolves outside is refused,
    whichever of the lookups (flat, class folder, records filepath, search below) finds it."""
    from utils.data.images import find_images

    target = {"direct": folder, "class folder": folder / "cls", "filepath": folder / "test",
              "nested": folder / "deep" / "er"}[where]
    target.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "secret.png", target / "evil.png")
    entry = {"filename": "evil.png", "classname": "cls", "filepath": "test"}
    with pytest.raises(DUCHError, match="leads outside"):
        find_images(folder, [entry])


def test_an_image_swapped_for_a_link_after_it_was_found_is_refused_when_read(folder, tmp_path):
    """Containment is checked where the file is opened: a symlink planted between the search and the read
    (images_augment.py, the server's thumbnails, a results page) is not followed."""
    from PIL import Image

    from utils.data.images import ImageDataset, find_images, load_image
    from utils.search.page import thumbnail_data_uri

    Image.new("RGB", (8, 8)).save(folder / "ok.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "outside.png")
    [path] = find_images(folder, [{"filename": "ok.png"}])
    assert load_image(path, roots=[folder]).size == (8, 8)
    path.unlink()
    os.symlink(tmp_path / "outside.png", path)
    with pytest.raises(DUCHError, match="leads outside its image folder"):
        load_image(path, roots=[folder])
    _, _, message = ImageDataset([path], lambda image, i: image, roots=[folder])[0]
    assert "leads outside its image folder" in message
    assert thumbnail_data_uri(path, roots=[str(folder)]) is None
    assert thumbnail_data_uri(path) is not None  # without a root (the user's own query image) it is shown


# ------------------------------------------------------------------------------ printable text

def test_printable_escapes_control_and_format_characters():
    from utils.terminal import printable

    hostile = "river\x1b]0;owned\x07\x1b[2J\r\u202edlrow\u2028x\x00"
    shown = printable(hostile)
    assert shown.isprintable() and "\x1b" not in shown and "\\x1b" in shown and "\\u202e" in shown
    assert printable("plain text, ü and 中文") == "plain text, ü and 中文"
    assert printable("two\nlines", keep="\n") == "two\nlines" and printable("two\nlines") == "two\\x0alines"


def test_query_table_shows_captions_printable():
    from utils.search.query import format_table

    result = {"query": {"kind": "text", "text": "q\x1b[31m", "target": "images", "k": 1},
              "results": [{"rank": 1, "row": 0, "distance": 0, "filename": "f\x1b[1A.png", "class": "c\x07",
                           "caption": "a river\x1b]8;;http://x\x07link\x1b]8;;\x07 \x1b[2J"}]}
    table = format_table(result)
    assert "\x1b" not in table and "\x07" not in table and all(line.isprintable() for line in table.splitlines())
    assert "a river" in table


def test_error_line_is_printable(capsys):
    @exit_on_user_error
    def fails():
        raise DUCHError("image 3 (bad\x1b[2J.png) is broken")

    with pytest.raises(SystemExit):
        fails()
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b[2J" in err


def test_console_log_is_printable(capsys):
    from utils.logs import setup_logger

    setup_logger().info("caption: x\x1b[2Jy\ntable line")
    out = capsys.readouterr().out
    assert "\x1b" not in out and "table line" in out.splitlines()[1]


# ------------------------------------------------------------------------------ expanding inputs

def _codes(tmp_path, **extra):
    rng = np.random.default_rng(0)
    arrays = {"q": np.where(rng.random((6, 16)) > 0.5, 1, -1).astype(np.int8),
              "db": np.where(rng.random((30, 16)) > 0.5, 1, -1).astype(np.int8),
              "q_labels": rng.integers(0, 3, 6), "db_labels": rng.integers(0, 3, 30), **extra}
    path = tmp_path / "codes.npz"
    np.savez(path, **arrays)
    return path


def _add_member(path, key, header_shape, payload=b""):
    """Append an .npy member whose header declares ``header_shape`` (float64) but holds ``payload``."""
    import io

    from numpy.lib import format as npy_format

    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": header_shape})
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(key + ".npy", buffer.getvalue() + payload)


def test_unused_key_is_never_read(tmp_path):
    from utils.retrieval.evaluation import load_codes_file

    path = _codes(tmp_path)
    _add_member(path, "junk", (10**12,))  # declares 8 TB: reading it would fail or exhaust memory
    pairs, q_labels, _ = load_codes_file(path)
    assert pairs["q2db"][0].shape == (6, 16) and len(q_labels) == 6


@pytest.mark.parametrize("case,arrays,message", [
    ("rows", {"q_img": (10, 8), "q_txt": (11, 8)}, "q_txt has 11 rows but q_img has 10"),
    ("width", {"db_txt": (20, 16)}, "q_img codes have 8 bits but db_txt codes have 16"),
    ("ndim", {"q_img": (10,)}, r"array 'q_img' has shape \(10,\); codes are \(rows, bits\)"),
    ("captions", {"test_txt_image": (49,)}, "test_txt_image has 49 rows but test_txt has 50"),
])
def test_codes_arrays_that_do_not_fit_together_are_refused_from_their_headers(tmp_path, monkeypatch, case, arrays,
                                                                              message):
    """A used key that inflates (a few MB on disk, gigabytes declared) with a row count its headers already
    contradict is refused before any array is decompressed."""
    import utils.retrieval.evaluation as evaluation

    shapes = {"q_img": (10, 8), "q_txt": (10, 8), "db_img": (20, 8), "db_txt": (20, 8), "q_labels": (10,),
              "db_labels": (20,), "test_img": (10, 8), "test_txt": (50, 8), "test_txt_image": (50,), **arrays}
    path = tmp_path / f"{case}.npz"
    np.savez(path, **{k: np.zeros(v, np.int8) for k, v in shapes.items()})
    monkeypatch.setattr(evaluation, "read_npz", lambda *a, **k: pytest.fail("data read before the headers fit"))
    with pytest.raises(DUCHError, match=message):
        evaluation.read_codes_npz(path)


def test_needed_key_size_checked_before_reading(tmp_path):
    from utils.io import read_npz

    path = tmp_path / "bomb.npz"
    np.savez(path, q=np.zeros(1, np.int8))
    _add_member(path, "db", (10**12,))
    with pytest.raises(DUCHError, match="GiB in memory .* refused before reading"):
        read_npz(path, ["db"])
    zeros = tmp_path / "zeros.npz"
    np.savez_compressed(zeros, db=np.zeros((1 << 20,), np.float64))  # 8 MiB of zeros in a few kB
    assert os.path.getsize(zeros) < 100_000
    with pytest.raises(DUCHError, match="refused before reading"):
        read_npz(zeros, ["db"], max_bytes=1 << 20)
    assert read_npz(zeros, ["db"])["db"].shape == (1 << 20,)


def test_truncated_and_wrong_kind_of_codes_file(tmp_path, capsys):
    import evaluate as script

    good = _codes(tmp_path)
    data = good.read_bytes()
    cases = {"truncated.npz": data[: len(data) // 2], "npy.npz": None, "text.npz": b"hello"}
    np.save(tmp_path / "plain.npy", np.zeros(3))
    cases["npy.npz"] = (tmp_path / "plain.npy").read_bytes()
    header_only = tmp_path / "short.npz"
    np.savez(header_only, q=np.zeros(1))
    _add_member(header_only, "db", (1000,), payload=b"\x00" * 16)  # says 8000 bytes, holds 16
    cases["short.npz"] = header_only.read_bytes()
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(SystemExit) as exit_info:
            script.main(script.get_args_parser().parse_args(["--codes", str(path)]))
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and err.startswith("error:") and len(err.splitlines()) == 1, (name, err)
