"""Caption augmentation driver: read the dataset JSON, add one augmented key per sentence, write it back.

Input is ``augmented_<DS>.json`` when it exists, else ``<DS>.json``, so successive runs (rule-based,
then back-translation) accumulate their keys in one file. How each key was made is recorded at the
top level under ``augmentation_provenance``. ``captions_augment.py`` is the command line of
``augment_captions``; the flags are described in docs/scripts.md.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from configs.datasets import DatasetInfo, get_dataset
from configs.files import (
    CAPTION_AUG_KEYS,
    PROVENANCE_KEY,
    RAW_CAPTION_KEY,
    augmented_json_name,
    dataset_json_name,
    source_dataset_json,
)
from models.text_encoder import preprocess_caption
from utils.data.dataset_json import SOURCE_KEY, captions, load_dataset_json, warn_dropped
from utils.errors import DUCHError, did_you_mean
from utils.io import check_writable_dir, write_json
from utils.preprocess.backtranslation import DEFAULT_BT_CHAIN, DEFAULT_BT_LANGS
from utils.preprocess.options import ScriptOptions
from utils.preprocess.rule_based import (
    BERTSCORE_MODEL,
    DEFAULT_LEXICON,
    GLOVE_MIN_SIM,
    GLOVE_TOPN,
    ROUTES,
    build_augmenter,
)
from utils.runtime import resolve_device, seed_everything


@dataclass
class CaptionAugmentOptions(ScriptOptions):
    """Every setting of one caption augmentation run (the flags of ``captions_augment.py``, same names and defaults)."""

    dataset: str = "ucm"  # a dataset name or the path of a captions JSON
    name: str | None = None  # a dataset file's name in file names (default: its stem)
    txt_aug: str = "rule-based"  # a key of CAPTION_AUG_KEYS
    data_dir: str | Path | None = None  # default: the dataset's
    device: str = "auto"
    batch_size: int = 32  # sentences per translation batch
    seed: int = 42
    overwrite: bool = False
    original_quirks: bool = False
    # rule-based
    route: str = "auto"  # one of ROUTES
    lexicon: str = str(DEFAULT_LEXICON)
    glove: str | None = None
    glove_min_sim: float = GLOVE_MIN_SIM
    glove_topk: int = GLOVE_TOPN
    bertscore_model: str = BERTSCORE_MODEL
    bertscore_layer: int | None = None
    bertscore_baseline: str | None = None
    bertscore_threshold: float | None = None
    # back-translation
    bt_langs: list = field(default_factory=lambda: [f"{k}:{v:g}" for k, v in DEFAULT_BT_LANGS.items()])
    bt_chain: list = field(default_factory=lambda: list(DEFAULT_BT_CHAIN))
    mt_model_dir: str | None = None
    cache_dir: str | None = None  # default: <data_dir>/.cache
    flush_every: int = 10
    max_new_tokens: int = 128
    num_beams: int | None = None


def augment_captions(opts: CaptionAugmentOptions) -> dict:
    """Check the options, then run one augmentation type end to end; returns its provenance record.

    Ctrl-C is one line and exit 130: nothing is written, the translations made so far stay cached."""
    ds = get_dataset(opts.dataset, opts.name)
    if opts.txt_aug not in CAPTION_AUG_KEYS:
        raise DUCHError(f"unknown --txt-aug {opts.txt_aug!r}{did_you_mean(opts.txt_aug, CAPTION_AUG_KEYS)}; "
                        f"choose one of: {', '.join(CAPTION_AUG_KEYS)}")
    if opts.route not in ROUTES:
        raise DUCHError(f"unknown --route {opts.route!r}{did_you_mean(opts.route, ROUTES)}; "
                        f"choose one of: {', '.join(ROUTES)}")
    for flag in ("batch_size", "flush_every", "max_new_tokens", "glove_topk"):
        if getattr(opts, flag) < 1:
            raise DUCHError(f"--{flag.replace('_', '-')} must be at least 1")
    if opts.data_dir is None:
        opts = dataclasses.replace(opts, data_dir=ds.default_data_dir)
    try:
        return augment_dataset(opts, ds)
    except KeyboardInterrupt:
        cached = " (the translations made so far stay cached)" if opts.txt_aug != "rule-based" else ""
        print(f"interrupted: nothing was written to {opts.data_dir}{cached}; run the same command again to continue",
              file=sys.stderr)
        raise SystemExit(130) from None


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
    """(source, output JSON): the dataset as released, and the augmented file made from it."""
    return source_dataset_json(ds, data_dir), Path(data_dir) / augmented_json_name(ds)


def source_record(ds: DatasetInfo, src: Path) -> dict:
    """What the augmented file records of its source, so that a changed source is noticed by every reader."""
    from utils.data.layouts import source_digest

    return {"path": str(src.resolve()), "sha256": source_digest(src),
            "dataset": ds.json_path if ds.json_path is not None else ds.key}


def load_input(ds: DatasetInfo, data_dir: str | Path, key: str, overwrite: bool) -> tuple[dict, Path, Path]:
    """The dataset to augment: the augmented file (to add another key) while it still matches its source,
    else the source. ``--overwrite`` rebuilds from the source (from the augmented file itself only when no
    source is there); the other keys of the old augmented file are kept only when it was made from the same
    source."""
    src, out = io_paths(ds, data_dir)
    hint = (
        f"put the captions file {dataset_json_name(ds)} of the {ds.name} release in {Path(data_dir)} "
        "(see data/README.md), or pass --data-dir"
    )
    if out.is_file() and (not overwrite or not src.exists()):  # (the authors' augmented files come without source)
        data = load_dataset_json(out, hint, ds=ds)  # refused when its source changed since
        if not overwrite and any(key in s for image in data["images"] for s in image["sentences"]):
            raise DUCHError(f"{out} already has {key!r} captions; pass --overwrite to recompute them")
        return data, out, out
    if not src.exists():
        raise DUCHError(f"dataset not found: {src}; {hint}")
    data = load_dataset_json(src, hint, ds=ds)
    record = source_record(ds, src)
    if out.is_file():
        _carry_other_keys(data, out, key, record)
    data[SOURCE_KEY] = record
    warn_dropped(data)
    return data, src, out


def _carry_other_keys(data: dict, old_path: Path, key: str, record: dict) -> None:
    """The other augmented keys of an old augmented file made from this very source (same digest)."""
    from utils.io import read_json

    old = read_json(old_path, "augmented JSON")
    same = (isinstance(old, dict) and isinstance(old.get(SOURCE_KEY), dict)
            and old[SOURCE_KEY].get("sha256") == record["sha256"] and isinstance(old.get("images"), list)
            and len(old["images"]) == len(data["images"]))
    if not same:
        print(f"{old_path} is rebuilt from {record['path']}; its other augmented captions are not kept (run "
              f"captions_augment.py again for each)", file=sys.stderr)
        return
    for new_image, old_image in zip(data["images"], old["images"]):
        for new_s, old_s in zip(new_image["sentences"], old_image.get("sentences", [])):
            new_s.update({k: v for k, v in old_s.items() if k not in (RAW_CAPTION_KEY, key) and k.startswith("aug_")})
    provenance = {k: v for k, v in (old.get(PROVENANCE_KEY) or {}).items() if k != key}
    if provenance:
        data[PROVENANCE_KEY] = provenance


def augment_dataset(opts: CaptionAugmentOptions, ds: DatasetInfo) -> dict:
    """Run one ``txt_aug`` type end to end (options already checked); returns the provenance record of its key."""
    key = CAPTION_AUG_KEYS[opts.txt_aug]
    data, src, out = load_input(ds, opts.data_dir, key, opts.overwrite)
    check_writable_dir(out.parent)
    raws = captions(data, RAW_CAPTION_KEY)
    start = time.perf_counter()
    if opts.txt_aug == "rule-based":
        augmented, provenance = _rule_based(raws, opts)
    else:
        augmented, provenance = _backtranslation(raws, opts, ds, out.parent)
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


def _rule_based(raws: list[str], opts: CaptionAugmentOptions) -> tuple[list[str], dict]:
    aug, provenance = build_augmenter(
        route=opts.route, lexicon_path=opts.lexicon, glove_path=opts.glove, glove_min_sim=opts.glove_min_sim,
        glove_topk=opts.glove_topk, bertscore_model=opts.bertscore_model, bertscore_layer=opts.bertscore_layer,
        bertscore_baseline=opts.bertscore_baseline, bertscore_threshold=opts.bertscore_threshold,
        device=opts.device, seed=opts.seed,
    )
    out = [aug(text, i) for i, text in enumerate(tqdm(raws, desc="rule-based", unit="sent"))]
    provenance.update(counts=dict(aug.stats), original_quirks=bool(opts.original_quirks))
    return out, {"method": "rule-based", **provenance}


def load_translator(src, tgt, **kwargs):
    """Indirection so tests can watch which models are loaded, and in what order."""
    from utils.preprocess.backtranslation import MarianTranslator

    return MarianTranslator(src, tgt, **kwargs)


def _backtranslation(raws: list[str], opts: CaptionAugmentOptions, ds: DatasetInfo,
                     out_dir: Path) -> tuple[list[str], dict]:
    from utils.preprocess import backtranslation as bt

    seed_everything(opts.seed)
    device = resolve_device(opts.device)
    if opts.txt_aug == "backtranslation-prob":
        weights = bt.parse_lang_weights(opts.bt_langs)
        used = [lang for lang, w in weights.items() if w > 0]
        pairs = [p for lang in used for p in ((bt.SOURCE_LANG, lang), (lang, bt.SOURCE_LANG))]
    else:
        if not opts.bt_chain:
            raise DUCHError("--bt-chain needs at least one language")
        pairs = bt.chain_pairs(opts.bt_chain)
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else out_dir / ".cache"
    pool = bt.TranslatorPool(
        pairs, cache_dir, f"translations_{ds.name}", opts.batch_size, opts.flush_every, load_translator,
        mt_model_dir=opts.mt_model_dir, device=device, max_new_tokens=opts.max_new_tokens, num_beams=opts.num_beams,
    )
    print(f"{opts.txt_aug}: models {', '.join(pool.describe().values())}")
    quirks = bool(opts.original_quirks)
    provenance = {"method": opts.txt_aug, "models": pool.describe(), "seed": opts.seed, "cache_dir": str(cache_dir),
                  "generation": {"max_new_tokens": opts.max_new_tokens, "num_beams": opts.num_beams},
                  "original_quirks": quirks}
    if opts.txt_aug == "backtranslation-prob":
        out, langs = bt.backtranslate_prob(raws, pool, weights, opts.seed, original_quirks=quirks)
        provenance.update(weights=weights, language_counts={lang: langs.count(lang) for lang in weights},
                          draw="random.Random(seed).choices(langs, weights, k=n), as random.seed + random.choices",
                          postprocess=("cut to the longest raw caption's length, lower-cased (original quirk)"
                                       if quirks else "lower-cased"))
    else:
        out = bt.backtranslate_chain(raws, pool, opts.bt_chain, original_quirks=quirks)
        provenance.update(chain=[bt.SOURCE_LANG, *opts.bt_chain, bt.SOURCE_LANG],
                          postprocess="none (original quirk)" if quirks else "lower-cased")
    return out, provenance
