"""Test images shared with another dataset (same file content): RSITMD and RSICD, for instance, share images.

``main.py --check-overlap OTHER`` hashes the files of this dataset's test images and of every image of
OTHER (a dataset name or captions JSON) and reports how many test images occur there, with examples.
``--check-overlap self`` compares the test images with the dataset's own train and val images: one image
under two names in two parts is a leak that names cannot show.
"""
from __future__ import annotations

from pathlib import Path

from configs import files
from configs.datasets import DatasetInfo, get_dataset
from utils.data.dataset_json import caption_offsets, load_dataset_json
from utils.data.images import find_images
from utils.data.splits import resolve_split
from utils.errors import DUCHError
from utils.io import sha256_of

EXAMPLES = 5
SELF = "self"  # --check-overlap self: the test images against the dataset's own train and val images


def _images_of(ds: DatasetInfo, data_dir: Path, image_dir: str | Path | None) -> tuple[list[dict], Path]:
    json_path = files.source_dataset_json(ds, data_dir)
    data = load_dataset_json(json_path, hint=f"pass --data-dir to the folder that holds {json_path.name}")
    folder = Path(image_dir) if image_dir else (json_path.parent if ds.from_file else Path(data_dir)) / ds.image_dir
    return data["images"], folder


def check_overlap(ds: DatasetInfo, data_dir: str | Path, protocol: str, other: str, seed: int = 42,
                  split_file: str | None = None, image_dir: str | Path | None = None,
                  other_image_dir: str | Path | None = None) -> dict:
    """{"test_images", "other_images", "shared", "examples": [[test file, other file], ...]}."""
    images, folder = _images_of(ds, Path(data_dir), image_dir)
    split = resolve_split(protocol, images, caption_offsets({"images": images}), seed, split_file)
    if other.lower() == SELF:
        other_name = f"{ds.name} train and val"
        other_images, other_folder = [images[j] for j in sorted(set(split.train) | set(split.val))], folder
    else:
        other_ds = get_dataset(other)
        other_name = other_ds.name
        other_images, other_folder = _images_of(other_ds, Path(other_ds.default_data_dir), other_image_dir)
    if not folder.is_dir() or not other_folder.is_dir():
        missing = folder if not folder.is_dir() else other_folder
        raise DUCHError(f"--check-overlap compares image files: folder {missing} not found "
                        f"(pass --image-dir and --other-image-dir)")
    test_paths = find_images(folder, [images[j] for j in split.test])
    other_paths = find_images(other_folder, other_images)
    by_digest: dict[str, Path] = {}
    for path in other_paths:
        by_digest.setdefault(sha256_of(path), path)
    shared = [(p, by_digest[d]) for p in test_paths if (d := sha256_of(p)) in by_digest]
    return {
        "dataset": ds.name, "other": other_name, "protocol": split.protocol, "test_images": len(test_paths),
        "other_images": len(other_paths), "shared": len(shared),
        "examples": [[p.name, q.name] for p, q in shared[:EXAMPLES]],
    }


def overlap_line(report: dict) -> str:
    if not report["shared"]:
        return (f"{report['dataset']}: none of its {report['test_images']} test images occurs among the "
                f"{report['other_images']} images of {report['other']}")
    examples = ", ".join(f"{a} = {b}" for a, b in report["examples"])
    return (f"{report['dataset']}: {report['shared']} of its {report['test_images']} test images also occur in "
            f"{report['other']} (same file content), e.g. {examples}: "
            f"a model trained on {report['other']} has seen them")
