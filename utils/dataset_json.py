"""The dataset description JSON: loading, validation, labels and captions in file order."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from configs.datasets import CAPTIONS_PER_IMAGE
from utils.errors import DUCHError
from utils.io import read_json


def load_dataset_json(path: str | Path, hint: str = "") -> dict:
    """Load and validate a dataset JSON: an ``images`` list whose items each have 5 sentences."""
    data = read_json(path, "dataset JSON", hint)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise DUCHError(f"{path}: expected a JSON object with a non-empty 'images' list")
    for j, image in enumerate(images):
        sentences = image.get("sentences")
        if not isinstance(sentences, list) or len(sentences) != CAPTIONS_PER_IMAGE:
            n = len(sentences) if isinstance(sentences, list) else 0
            raise DUCHError(
                f"{path}: image {j} ({image.get('filename', '?')}) has {n} captions; "
                f"every image must have exactly {CAPTIONS_PER_IMAGE}"
            )
    return data


def class_names_from_filenames(filenames: list[str]) -> list[str]:
    """RSICD JSON files carry no classcode: the class is the file name before its last '_'."""
    return [Path(name).stem.rsplit("_", 1)[0] for name in filenames]


def image_labels(data: dict) -> np.ndarray:
    """Integer class code of each image, in JSON order.

    Uses ``classcode`` where every image has one; otherwise derives the class from the file name
    and numbers classes in sorted class-name order.
    """
    images = data["images"]
    if all("classcode" in image for image in images):
        return np.asarray([int(image["classcode"]) for image in images], dtype=np.int64)
    names = class_names_from_filenames([image["filename"] for image in images])
    codes = {name: code for code, name in enumerate(sorted(set(names)))}
    return np.asarray([codes[name] for name in names], dtype=np.int64)


def captions(data: dict, key: str = "raw") -> list[str]:
    """All captions for a sentence key, row ``5*j + i`` = sentence i of image j."""
    out = []
    for j, image in enumerate(data["images"]):
        for i, sentence in enumerate(image["sentences"]):
            if key not in sentence:
                raise DUCHError(f"sentence {i} of image {j} has no {key!r} caption")
            out.append(sentence[key])
    return out


def sentence_keys_present(data: dict, keys) -> list[str]:
    """The keys among ``keys`` that every sentence of the dataset has."""
    sentences = [s for image in data["images"] for s in image["sentences"]]
    return [k for k in keys if all(k in s for s in sentences)]
