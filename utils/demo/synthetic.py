"""Synthetic, class-structured feature files in the exact on-disk format of docs/formats.md.

For tests and timing at UCM/RSICD scale without the real data: every file is labelled synthetic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from configs import files
from configs.datasets import CAPTIONS_PER_IMAGE, DatasetInfo
from configs.presets import BASE_IMAGE_SET
from utils.io import write_h5, write_json


def synthetic_dataset_json(ds: DatasetInfo, labels: np.ndarray, n_classes: int) -> dict:
    images = []
    for j, label in enumerate(labels.tolist()):
        sentences = [
            {"raw": f"synthetic caption {i} of image {j} .", "aug_rb": f"synthetic sentence {i} of picture {j} .",
             "imgid": j, "sentid": CAPTIONS_PER_IMAGE * j + i}
            for i in range(CAPTIONS_PER_IMAGE)
        ]
        images.append({
            "filename": f"{j + 1}.png", "imgid": j, "classcode": int(label), "classname": f"class{label}",
            "split": "train", "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
        })
    return {
        "dataset": ds.name, "synthetic": True, "description": "synthetic class-structured features, not real data",
        "num_classes": n_classes, "classes": {str(c): f"class{c}" for c in range(n_classes)}, "images": images,
    }


def make_synthetic_features(
    ds: DatasetInfo, data_dir: str | Path, n_images: int, n_classes: int | None = None, seed: int = 0,
    image_dim: int = 512, caption_dim: int = 768, noise: float = 1.0, image_sets=("aug_center",),
    caption_keys=("aug_rb",),
) -> Path:
    """Write ``augmented_DS.json`` and image/caption feature files sharing a latent class structure."""
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    n_classes = n_classes or ds.num_classes
    labels = np.arange(n_images) % n_classes
    rng.shuffle(labels)
    latent_dim = 32
    centroids = rng.normal(size=(n_classes, latent_dim))
    to_image = rng.normal(size=(latent_dim, image_dim)) / np.sqrt(latent_dim)
    to_caption = rng.normal(size=(latent_dim, caption_dim)) / np.sqrt(latent_dim)
    image_latent = centroids[labels] + 0.5 * rng.normal(size=(n_images, latent_dim))

    def images():
        return np.maximum(image_latent @ to_image + noise * rng.normal(size=(n_images, image_dim)), 0)  # ReLU-like

    def captions():
        latent = np.repeat(image_latent, CAPTIONS_PER_IMAGE,
                           axis=0) + 0.5 * rng.normal(size=(CAPTIONS_PER_IMAGE * n_images, latent_dim))
        return latent @ to_caption + noise * rng.normal(size=(CAPTIONS_PER_IMAGE * n_images, caption_dim))

    attrs = {"synthetic": 1}
    for image_set in dict.fromkeys((BASE_IMAGE_SET, *image_sets)):
        write_h5(data_dir / files.image_emb_name(ds, image_set), files.IMAGE_EMB_KEY, images(), attrs)
    for key in dict.fromkeys(("raw", *caption_keys)):
        write_h5(data_dir / files.caption_emb_name(ds, key), files.CAPTION_EMB_KEY, captions(), attrs)
    json_path = data_dir / files.augmented_json_name(ds)
    write_json(json_path, synthetic_dataset_json(ds, labels, n_classes), indent=None)
    return json_path
