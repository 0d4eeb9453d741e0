"""File naming: the one place that knows what every data file is called and what command makes it.

Names follow the authors' release so that their published feature files drop into ``data/``.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Sequence

from configs.datasets import DatasetInfo
from configs.encoders import encoder_tag

# the image transform sets (utils/data/transforms.py builds them); a set's name is part of its file name
IMAGE_AUG_SETS = (
    "no_aug",
    "center_crop_only",
    "random_crop_only",
    "aug_center",
    "aug_random",
    "rotation_cc",
    "blur_cc",
    "jitter_cc",
    "each_img_random",
)
ENCODERS_FILE = "demo_encoders.json"  # the offline demo's record of the encoders it used
# in a run folder of main.py: its settings and its split (search.py index reads both)
CONFIG_NAME = "config.json"
SPLIT_NAME = "split.json"
IMAGE_EMB_KEY = "image_emb"
CAPTION_EMB_KEY = "caption_emb"

# sentence keys in the dataset JSON, and the caption-augmentation type that writes each
RAW_CAPTION_KEY = "raw"
CAPTION_AUG_KEYS = {
    "rule-based": "aug_rb",
    "backtranslation-prob": "aug_bt_prob",
    "backtranslation-chain": "aug_bt_chain",
}
TXT_AUG_BY_KEY = {key: txt_aug for txt_aug, key in CAPTION_AUG_KEYS.items()}
PROVENANCE_KEY = "augmentation_provenance"  # in augmented_DS.json: how each augmented sentence key was made


def _int_name(value) -> str:
    """An integer as the original writes it (``str(int)``); a non-integer float as Python prints it."""
    value = float(value)
    return str(int(value)) if value.is_integer() else str(value)


def _float_name(value) -> str:
    """A number the original parses as a float, as Python prints a float: ``1`` -> ``1.0``."""
    return str(float(value))


# the parts of a published split, and the file names of the two folder layouts (docs/datasets.md):
# precomputed caption lists ``<part>_caps.txt`` + ``<part>_filename.txt``, and records files ``*_<part>.json``
SPLIT_PARTS = ("train", "val", "test")
CAPTION_LIST = "{part}_caps.txt"
FILE_LIST = "{part}_filename.txt"
_PART_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}


def record_file_part(name: str) -> str | None:
    """The split part a records file's name says (``rsitmd_train.json`` -> train), or None."""
    import re

    if not name.lower().endswith(".json") or name.startswith("augmented_"):
        return None
    words = [_PART_WORDS[w] for w in re.split(r"[^a-z]+", Path(name).stem.lower()) if w in _PART_WORDS]
    return words[0] if len(set(words)) == 1 else None


def folder_layout_files(folder: str | Path) -> dict[str, list[Path]]:
    """The files of a folder layout found in ``folder``: {"precomp": [caption lists]} or {"records": [files]},
    or {} when the folder holds neither."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    lists = [path for path in (folder / CAPTION_LIST.format(part=p) for p in SPLIT_PARTS) if path.is_file()]
    if lists:
        return {"precomp": lists}
    records = sorted(p for p in folder.glob("*.json") if p.is_file() and record_file_part(p.name))
    return {"records": records} if records else {}


def dataset_json_name(ds: DatasetInfo) -> str:
    return f"{ds.name}.json"


def augmented_json_name(ds: DatasetInfo) -> str:
    return f"augmented_{ds.name}.json"


def source_dataset_json(ds: DatasetInfo, data_dir: str | Path) -> Path:
    """The captions as released: the file or folder a dataset was given by, else ``DS.json`` in ``data_dir``,
    else the first of the release's own names found there (``dataset_RSITMD.json`` ...), else ``data_dir``
    itself when it holds caption lists or records files, else ``DS.json`` (for the error)."""
    if ds.json_path is not None:
        return Path(ds.json_path)
    plain = Path(data_dir) / dataset_json_name(ds)
    if plain.is_file():
        return plain
    found = next((Path(data_dir) / n for n in ds.json_names if (Path(data_dir) / n).is_file()), None)
    if found is None and folder_layout_files(data_dir):
        found = Path(data_dir)
    return found or plain


def current_dataset_json(ds: DatasetInfo, data_dir: str | Path) -> Path:
    """``augmented_DS.json`` once caption augmentation has run, else the source JSON (which may not exist)."""
    augmented = Path(data_dir) / augmented_json_name(ds)
    return augmented if augmented.is_file() else source_dataset_json(ds, data_dir)


def augment_command(ds: DatasetInfo, txt_aug: str = "rule-based", data_dir: str | Path | None = None,
                    overwrite: bool = False) -> str:
    """The captions_augment.py command for this dataset (given by name, or by its file or folder)."""
    return (f"python captions_augment.py --dataset {dataset_flag(ds)} --txt-aug {txt_aug}{_data_dir_flag(ds, data_dir)}"
            + (" --overwrite" if overwrite else ""))


def _with_encoder(stem: str, encoder: str | None) -> str:
    """``stem.h5``, or ``stem.<encoder tag>.h5`` for features of an encoder other than the paper's."""
    tag = encoder_tag(encoder)
    return f"{stem}.{tag}.h5" if tag else f"{stem}.h5"


def image_emb_name(
    ds: DatasetInfo,
    img_aug: str = "no_aug",
    rot_deg: Sequence[float] = (-10, -5),
    blur_val: Sequence[float] = (3, 3, 1.1, 1.3),
    jit_str: float = 0.5,
    encoder: str | None = None,
) -> str:
    """``image_emb_DS_aug_<set>[_<params>].h5``, exactly as the original writes it (docs/formats.md).

    ``no_aug`` -> ``image_emb_DS_aug_no_aug.h5``; rotation degrees as integers (the original's
    ``--rot-deg`` is ``type=int``), blur kernel as integers and sigmas as floats (``3_3_1.1_1.3``),
    jitter strength as a float (``0.5``, ``1.0``). Another ``encoder`` than ResNet18 adds its tag:
    ``image_emb_DS_aug_no_aug.resnet50.h5``.
    """
    params: list[str] = []
    if img_aug == "rotation_cc":
        params = [_int_name(r) for r in rot_deg]
    elif img_aug == "blur_cc":
        params = [_int_name(k) for k in blur_val[:2]] + [_float_name(s) for s in blur_val[2:]]
    elif img_aug == "jitter_cc":
        params = [_float_name(jit_str)]
    return _with_encoder("_".join([f"image_emb_{ds.name}_aug", img_aug, *params]), encoder)


def image_emb_names(ds: DatasetInfo, img_aug: str = "no_aug", rot_deg: Sequence[float] = (-10, -5),
                    blur_val: Sequence[float] = (3, 3, 1.1, 1.3), jit_str: float = 0.5) -> list[str]:
    """Every name a reader accepts for these features, the written one first.

    Also read: ``image_emb_DS_aug.h5`` for ``no_aug`` (named in the original's config, never written by
    it) and the names earlier versions of this project wrote (integral floats without ``.0``).
    """
    names = [image_emb_name(ds, img_aug, rot_deg, blur_val, jit_str)]
    if img_aug == "no_aug":
        names.append(f"image_emb_{ds.name}_aug.h5")
    elif img_aug in ("blur_cc", "jitter_cc"):
        legacy = [*(blur_val if img_aug == "blur_cc" else (jit_str,))]
        names.append("_".join([f"image_emb_{ds.name}_aug", img_aug, *(_int_name(p) for p in legacy)]) + ".h5")
    return list(dict.fromkeys(names))


def find_image_emb(data_dir: str | Path, ds: DatasetInfo, img_aug: str = "no_aug", **params) -> Path:
    """The first existing file of ``image_emb_names`` in ``data_dir``, else the written name (for errors)."""
    candidates = [Path(data_dir) / name for name in image_emb_names(ds, img_aug, **params)]
    return next((path for path in candidates if path.is_file()), candidates[0])


def parse_image_emb_name(ds: DatasetInfo, name: str) -> dict | None:
    """The images_augment.py settings a file name stands for (``encoder``: the tag of another encoder than
    ResNet18), or None: for fix-it hints."""
    name = Path(name).name
    plain = _parse_plain_image_emb_name(ds, name)
    if plain is not None or not name.endswith(".h5"):
        return plain
    for i in sorted((i for i, c in enumerate(name[:-3]) if c == "."), reverse=True):  # ``<stem>.<encoder tag>.h5``
        plain = _parse_plain_image_emb_name(ds, name[:i] + ".h5")
        if plain is not None and name[i + 1:-3]:
            return {**plain, "encoder": name[i + 1:-3]}
    return None


def _parse_plain_image_emb_name(ds: DatasetInfo, name: str) -> dict | None:
    import re

    match = re.fullmatch(rf"image_emb_{re.escape(ds.name)}_aug(?:_(.+))?\.h5", name)
    if not match:
        return None
    rest = match.group(1) or "no_aug"
    for img_aug, n_params in (("rotation_cc", 2), ("blur_cc", 4), ("jitter_cc", 1)):
        if rest.startswith(img_aug + "_"):
            values = re.findall(r"-?\d+(?:\.\d+)?", rest[len(img_aug) + 1:])
            if len(values) != n_params or "_".join(values) != rest[len(img_aug) + 1:]:
                return None
            key = {"rotation_cc": "rot_deg", "blur_cc": "blur_val", "jitter_cc": "jit_str"}[img_aug]
            numbers = [float(v) for v in values]
            return {"img_aug": img_aug, key: numbers[0] if n_params == 1 else numbers}
    return {"img_aug": rest} if rest in IMAGE_AUG_SETS else None


def caption_emb_name(ds: DatasetInfo, sentence_key: str = RAW_CAPTION_KEY, encoder: str | None = None) -> str:
    """``caption_emb_DS_aug.h5`` for raw captions, ``caption_emb_DS_aug_rb.h5`` for ``aug_rb``, ...; another
    ``encoder`` than the paper's BERT pooling adds its tag (``caption_emb_DS_aug.<tag>.h5``)."""
    if sentence_key == RAW_CAPTION_KEY:
        return _with_encoder(f"caption_emb_{ds.name}_aug", encoder)
    suffix = sentence_key[len("aug_"):] if sentence_key.startswith("aug_") else sentence_key
    return _with_encoder(f"caption_emb_{ds.name}_aug_{suffix}", encoder)


def dataset_flag(ds: DatasetInfo) -> str:
    """What ``--dataset`` takes for this dataset: its name, or the file or folder it was given by."""
    return shlex.quote(ds.json_path) if ds.json_path is not None else ds.key


def _data_dir_flag(ds: DatasetInfo, data_dir: str | Path | None) -> str:
    """`` --data-dir X`` when the user's data folder is not the dataset's default, so a fix-it command acts on it."""
    if data_dir is None or Path(data_dir) == Path(ds.default_data_dir):
        return ""
    return f" --data-dir {shlex.quote(str(data_dir))}"


def _encoder_flag(encoder: str | None) -> str:
    return f" --encoder {shlex.quote(str(encoder))}" if encoder_tag(encoder) else ""


def image_emb_command(ds: DatasetInfo, img_aug: str = "no_aug", data_dir: str | Path | None = None, *,
                      rot_deg: Sequence[float] | None = None, blur_val: Sequence[float] | None = None,
                      jit_str: float | None = None, encoder: str | None = None) -> str:
    """The command that writes an image feature file (for error messages), keeping a non-default --data-dir."""
    command = f"python images_augment.py --dataset {dataset_flag(ds)}{_encoder_flag(encoder)}"
    if img_aug != "no_aug":
        command += f" --img-aug {img_aug}"
    if img_aug == "rotation_cc" and rot_deg is not None:
        command += " --rot-deg " + " ".join(_int_name(r) for r in rot_deg)
    if img_aug == "blur_cc" and blur_val is not None:
        values = [_int_name(k) for k in blur_val[:2]] + [_float_name(s) for s in blur_val[2:]]
        command += " --blur-val " + " ".join(values)
    if img_aug == "jitter_cc" and jit_str is not None:
        command += f" --jit-str {_float_name(jit_str)}"
    return command + _data_dir_flag(ds, data_dir)


def image_emb_command_for_file(ds: DatasetInfo, path: str | Path, data_dir: str | Path | None = None,
                                encoder: str | None = None) -> str:
    """A fix-it hint for a missing image feature file that the user named (``--img-aug-emb``)."""
    settings = parse_image_emb_name(ds, Path(path).name)
    if settings is not None and "encoder" in settings and encoder_tag(encoder) == settings["encoder"]:
        settings["encoder"] = encoder  # the name the user gave, not only its tag
    if settings is None:
        return (f"python images_augment.py --dataset {dataset_flag(ds)} --img-aug <set>{_data_dir_flag(ds, data_dir)} "
                f"(which writes image_emb_{ds.name}_aug_<set>.h5, not {Path(path).name}: check the --img-aug-emb path)")
    return image_emb_command(ds, data_dir=data_dir, **settings)


def caption_emb_command(ds: DatasetInfo, sentence_key: str = RAW_CAPTION_KEY,
                        data_dir: str | Path | None = None, encoder: str | None = None) -> str:
    """The command(s) that write a caption feature file (for error messages)."""
    where = _data_dir_flag(ds, data_dir)
    embed = f"python captions_embed.py --dataset {dataset_flag(ds)}{_encoder_flag(encoder)}{where}"
    if sentence_key == RAW_CAPTION_KEY:
        return embed
    txt_aug = TXT_AUG_BY_KEY.get(sentence_key, "rule-based")
    return f"{augment_command(ds, txt_aug, data_dir)}, then {embed}"


def augmented_json_command(ds: DatasetInfo, data_dir: str | Path | None = None) -> str:
    return augment_command(ds, "rule-based", data_dir)


def data_path(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / name
