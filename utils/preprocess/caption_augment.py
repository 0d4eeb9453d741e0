"""Caption augmentation driver: read the dataset JSON, add one augmented key per sentence, write it back.

Input is ``augmented_<DS>.json`` when it exists, else ``<DS>.json``, so successive runs (rule-based,
then back-translation) accumulate their keys in one file. How each key was made is recorded at the
top level under ``augmentation_provenance``.
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from configs.datasets import DatasetInfo
from configs.files import (
    CAPTION_AUG_KEYS,
    RAW_CAPTION_KEY,
    augmented_json_name,
    current_dataset_json,
    dataset_json_name,
)
from models.text_encoder import preprocess_caption
from utils.data.dataset_json import captions, load_dataset_json
from utils.errors import DUCHError
from utils.io import check_writable_dir, write_json

PROVENANCE_KEY = "augmentation_provenance"


def normalise(text: str) -> str:
    """The caption as the embedder sees it (``preprocess_caption``), with white space folded."""
    return " ".join(preprocess_caption(text).split())


def unchanged_share(data: dict, key: str) -> dict:
    """Share of sentences whose augmented text equals the raw one (after normalisation), overall and per class."""
    per_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for image in data["images"]:
        cls = str(image.get("classname", image.get("classcode", "?")))
        for s in image["sentences"]:
            per_class[cls][0] += normalise(s[key]) == normalise(s[RAW_CAPTION_KEY])
            per_class[cls][1] += 1
    same = sum(v[0] for v in per_class.values())
    total = sum(v[1] for v in per_class.values())
    return {
        "overall": same / total,
        "sentences": total,
        "per_class": {c: v[0] / v[1] for c, v in sorted(per_class.items())},
    }


def print_unchanged(key: str, stats: dict) -> None:
    print(f"{key}: {stats['overall']:.1%} of {stats['sentences']} sentences left unchanged")
    width = max(len(c) for c in stats["per_class"])
    for cls, share in stats["per_class"].items():
        print(f"  {cls:<{width}}  {share:6.1%}")


def io_paths(ds: DatasetInfo, data_dir: str | Path) -> tuple[Path, Path]:
    """(input JSON, output JSON): the augmented file is its own input once it exists."""
    return current_dataset_json(ds, data_dir), Path(data_dir) / augmented_json_name(ds)


def load_input(ds: DatasetInfo, data_dir: str | Path, key: str, overwrite: bool) -> tuple[dict, Path, Path]:
    src, out = io_paths(ds, data_dir)
    hint = (
        f"put the captions file {dataset_json_name(ds)} of the {ds.name} release in {Path(data_dir)} "
        "(see data/README.md), or pass --data-dir"
    )
    data = load_dataset_json(src, hint)
    captions(data, RAW_CAPTION_KEY)  # every sentence needs its raw caption
    present = [s for image in data["images"] for s in image["sentences"] if key in s]
    if present and not overwrite:
        raise DUCHError(f"{src} already has {key!r} captions; pass --overwrite to recompute them")
    return data, src, out


def augment_dataset(args, ds: DatasetInfo) -> dict:
    """Run one ``--txt-aug`` type end to end; returns the provenance record written for its key."""
    key = CAPTION_AUG_KEYS[args.txt_aug]
    data, src, out = load_input(ds, args.data_dir, key, args.overwrite)
    check_writable_dir(out.parent)
    raws = captions(data, RAW_CAPTION_KEY)
    start = time.perf_counter()
    if args.txt_aug == "rule-based":
        augmented, provenance = _rule_based(raws, args)
    else:
        augmented, provenance = _backtranslation(raws, args, ds, out.parent)
    rows = iter(augmented)
    for image in data["images"]:
        for s in image["sentences"]:
            s[key] = next(rows)
    stats = unchanged_share(data, key)
    provenance.update(input=src.name, unchanged=stats, seconds=round(time.perf_counter() - start, 1))
    data.setdefault(PROVENANCE_KEY, {})[key] = provenance
    write_json(out, data)
    print_unchanged(key, stats)
    print(f"wrote {out} ({key}, from {src.name})")
    return provenance


def _rule_based(raws: list[str], args) -> tuple[list[str], dict]:
    from utils.preprocess.rule_based import build_augmenter

    aug, provenance = build_augmenter(
        route=args.route, lexicon_path=args.lexicon, glove_path=args.glove, glove_min_sim=args.glove_min_sim,
        glove_topk=args.glove_topk, bertscore_model=args.bertscore_model, bertscore_layer=args.bertscore_layer,
        bertscore_baseline=args.bertscore_baseline, bertscore_threshold=args.bertscore_threshold,
        device=args.device, seed=args.seed,
    )
    out = [aug(text, i) for i, text in enumerate(tqdm(raws, desc="rule-based", unit="sent"))]
    provenance.update(counts=dict(aug.stats), original_quirks=bool(args.original_quirks))
    return out, {"method": "rule-based", **provenance}


def load_translator(src, tgt, **kwargs):
    """Indirection so tests can watch which models are loaded, and in what order."""
    from utils.preprocess.backtranslation import MarianTranslator

    return MarianTranslator(src, tgt, **kwargs)


def _backtranslation(raws: list[str], args, ds: DatasetInfo, out_dir: Path) -> tuple[list[str], dict]:
    from utils.preprocess import backtranslation as bt
    from utils.runtime import resolve_device, seed_everything

    seed_everything(args.seed)
    device = resolve_device(args.device)
    if args.txt_aug == "backtranslation-prob":
        weights = bt.parse_lang_weights(args.bt_langs)
        used = [lang for lang, w in weights.items() if w > 0]
        pairs = [p for lang in used for p in ((bt.SOURCE_LANG, lang), (lang, bt.SOURCE_LANG))]
    else:
        if not args.bt_chain:
            raise DUCHError("--bt-chain needs at least one language")
        pairs = bt.chain_pairs(args.bt_chain)
    cache_dir = Path(args.cache_dir) if args.cache_dir else out_dir / ".cache"
    pool = bt.TranslatorPool(
        pairs, cache_dir, f"translations_{ds.name}", args.batch_size, args.flush_every, load_translator,
        mt_model_dir=args.mt_model_dir, device=device, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
    )
    print(f"{args.txt_aug}: models {', '.join(pool.describe().values())}")
    quirks = bool(args.original_quirks)
    provenance = {"method": args.txt_aug, "models": pool.describe(), "seed": args.seed, "cache_dir": str(cache_dir),
                  "generation": {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams},
                  "original_quirks": quirks}
    if args.txt_aug == "backtranslation-prob":
        out, langs = bt.backtranslate_prob(raws, pool, weights, args.seed, original_quirks=quirks)
        provenance.update(weights=weights, language_counts={lang: langs.count(lang) for lang in weights},
                          draw="random.Random(seed).choices(langs, weights, k=n), as random.seed + random.choices",
                          postprocess=("cut to the longest raw caption's length, lower-cased (original quirk)"
                                       if quirks else "lower-cased"))
    else:
        out = bt.backtranslate_chain(raws, pool, args.bt_chain, original_quirks=quirks)
        provenance.update(chain=[bt.SOURCE_LANG, *args.bt_chain, bt.SOURCE_LANG],
                          postprocess="none (original quirk)" if quirks else "lower-cased")
    return out, provenance
