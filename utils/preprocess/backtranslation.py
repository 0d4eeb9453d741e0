"""Back-translation with MarianMT (``aug_bt_prob``, ``aug_bt_chain``; docs/method.md).

Models are Helsinki-NLP's ``opus-mt-<src>-<tgt>``, loaded with transformers; each is looked up first as
``<mt_model_dir>/opus-mt-<src>-<tgt>``, else by its hub name. Translations are cached on disk as JSON,
one file per model, flushed atomically every few batches, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from models.hub import from_pretrained_local_first, hub_offline
from utils.errors import DUCHError
from utils.io import read_json, write_json

HUB_ORG = "Helsinki-NLP"
DEFAULT_BT_LANGS = {"es": 1.0, "de": 1.0}
DEFAULT_BT_CHAIN = ("es", "de")
SOURCE_LANG = "en"


def model_name(src: str, tgt: str) -> str:
    return f"opus-mt-{src}-{tgt}"


def resolve_model_ref(src: str, tgt: str, mt_model_dir: str | Path | None = None) -> str:
    """A local folder ``<mt_model_dir>/opus-mt-src-tgt`` when present, else the hub name."""
    name = model_name(src, tgt)
    if mt_model_dir is not None and (Path(mt_model_dir) / name).is_dir():
        return str(Path(mt_model_dir) / name)
    return f"{HUB_ORG}/{name}"


def missing_model_message(src: str, tgt: str, ref: str, mt_model_dir, err: Exception | None = None) -> str:
    name = model_name(src, tgt)
    if not Path(ref).is_dir():
        detail = " (not in the local Hugging Face cache" + (", and HF_HUB_OFFLINE is set)" if hub_offline() else ")")
    elif err is not None and str(err):
        detail = f" ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    else:
        detail = ""
    now = f" (now {mt_model_dir})" if mt_model_dir else ""
    return (
        f"MarianMT model {HUB_ORG}/{name} could not be loaded from {ref}{detail}; with network run "
        f"`huggingface-cli download {HUB_ORG}/{name} --local-dir DIR/{name}` and pass --mt-model-dir DIR{now}"
    )


class MarianTranslator:
    """One MarianMT model: batched, on the device, under ``torch.inference_mode``."""

    def __init__(self, src: str, tgt: str, mt_model_dir=None, device="cpu", max_new_tokens: int = 128,
                 num_beams: int | None = None):
        from transformers import MarianMTModel, MarianTokenizer

        self.src, self.tgt, self.device = src, tgt, device
        self.ref = resolve_model_ref(src, tgt, mt_model_dir)
        try:
            self.tokenizer = from_pretrained_local_first(MarianTokenizer, self.ref)
            self.model = from_pretrained_local_first(MarianMTModel, self.ref).to(device).eval()
        except Exception as err:  # OSError, ValueError, offline-hub errors: all mean "not available"
            raise DUCHError(missing_model_message(src, tgt, self.ref, mt_model_dir, err)) from None
        self.generation = {"max_new_tokens": max_new_tokens}
        if num_beams is not None:
            self.generation["num_beams"] = num_beams

    @property
    def name(self) -> str:
        return model_name(self.src, self.tgt)

    def translate(self, texts: Sequence[str]) -> list[str]:
        import torch

        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=512)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            out = self.model.generate(**enc, **self.generation)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


class TranslationCache:
    """``{source sentence: translation}`` for one model and one set of generation settings, as JSON."""

    def __init__(self, path: str | Path, model: str, settings: dict):
        self.path, self.model, self.settings = Path(path), model, settings
        self.entries: dict[str, str] = {}
        if self.path.is_file():
            raw = read_json(self.path, "translation cache")
            if raw.get("model") == model and raw.get("settings") == settings:
                self.entries = dict(raw.get("translations", {}))

    def flush(self) -> None:
        write_json(self.path, {"model": self.model, "settings": self.settings, "translations": self.entries},
                   indent=None)


def translate_cached(
    texts: Sequence[str],
    translator: MarianTranslator,
    cache: TranslationCache,
    batch_size: int = 32,
    flush_every: int = 10,
) -> list[str]:
    """Translate ``texts`` (each distinct sentence once), reusing and extending the on-disk cache."""
    todo = [t for t in dict.fromkeys(texts) if t not in cache.entries]
    n_batches = (len(todo) + batch_size - 1) // batch_size
    bar = tqdm(total=len(todo), desc=f"translating {translator.name}", unit="sent", disable=not todo)
    try:
        for b in range(n_batches):
            batch = todo[b * batch_size:(b + 1) * batch_size]
            cache.entries.update(zip(batch, translator.translate(batch)))
            bar.update(len(batch))
            if (b + 1) % flush_every == 0:
                cache.flush()
    finally:
        bar.close()
        if todo:
            cache.flush()  # keep what was translated, also when interrupted
    return [cache.entries[t] for t in texts]


_LANG_RE = re.compile(r"^[A-Za-z]{2,}(?:[_-][A-Za-z]+)*$")


def check_lang(lang: str, flag: str) -> str:
    """A language code as in ``opus-mt-<src>-<tgt>`` (es, de, zh, ROMANCE, ...); other text is a syntax error."""
    if not _LANG_RE.match(lang):
        raise DUCHError(f"{flag}: {lang!r} is not a language code; "
                        + ("use LANG:WEIGHT, e.g. es:1 de:1" if flag == "--bt-langs" else "use codes, e.g. es de"))
    return lang


def parse_lang_weights(items: Sequence[str]) -> dict[str, float]:
    """``["es:1", "de:2"]`` -> ``{"es": 1.0, "de": 2.0}``; a bare ``es`` weighs 1."""
    weights: dict[str, float] = {}
    for item in items:
        lang, _, w = item.partition(":")
        if not _LANG_RE.match(lang):
            raise DUCHError(f"--bt-langs: {item!r} is not LANG:WEIGHT; write e.g. es:1 de:1")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise DUCHError(f"--bt-langs: bad weight in {item!r}; use LANG:WEIGHT, e.g. es:1") from None
        if weight < 0 or not np.isfinite(weight):
            raise DUCHError(f"--bt-langs: bad entry {item!r}; use LANG:WEIGHT with WEIGHT >= 0")
        weights[lang] = weight
    if not weights or sum(weights.values()) <= 0:
        raise DUCHError("--bt-langs: at least one language needs a positive weight")
    return weights


def draw_languages(n: int, weights: dict[str, float], seed: int) -> list[str]:
    """One pivot language per sentence, as the original: ``random.seed(seed)``, then
    ``random.choices(langs, weights, k=n)`` (here on a private ``random.Random(seed)``, the same stream)."""
    return random.Random(seed).choices(list(weights), weights=list(weights.values()), k=n)


def cut_like_original(outputs: Sequence[str], raws: Sequence[str]) -> list[str]:
    """QUIRK: the original stored the outputs in ``np.zeros_like(raws)``, a fixed-width string array as wide
    as the longest raw caption, so every longer output was cut to that many characters."""
    width = max((len(r) for r in raws), default=0)
    return [t[:width] for t in outputs]


class TranslatorPool:
    """Loads each model once, all of them before any translation, so a missing one fails fast."""

    def __init__(self, pairs: Sequence[tuple[str, str]], cache_dir: Path, cache_prefix: str, batch_size: int,
                 flush_every: int, loader: Callable[..., MarianTranslator], **loader_kwargs):
        self.translators = {pair: loader(*pair, **loader_kwargs) for pair in dict.fromkeys(pairs)}
        self.cache_dir, self.cache_prefix = Path(cache_dir), cache_prefix
        self.batch_size, self.flush_every = batch_size, flush_every

    def cache_path(self, src: str, tgt: str) -> Path:
        return self.cache_dir / f"{self.cache_prefix}_{model_name(src, tgt)}.json"

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        if not texts:
            return []
        tr = self.translators[(src, tgt)]
        cache = TranslationCache(self.cache_path(src, tgt), tr.ref, tr.generation)
        return translate_cached(texts, tr, cache, self.batch_size, self.flush_every)

    def describe(self) -> dict:
        return {tr.name: tr.ref for tr in self.translators.values()}


def backtranslate_prob(texts: Sequence[str], pool: TranslatorPool, weights: dict[str, float], seed: int,
                       original_quirks: bool = False):
    """en -> L -> en with L drawn per sentence; returns (lower-cased outputs, chosen languages).

    ``original_quirks``: outputs cut to the longest input's length before lower-casing, as the original."""
    langs = draw_languages(len(texts), weights, seed)
    out: list[str] = [""] * len(texts)
    for lang in weights:
        idx = [i for i, l in enumerate(langs) if l == lang]
        if not idx:
            continue
        pivot = pool.translate([texts[i] for i in idx], SOURCE_LANG, lang)
        back = pool.translate(pivot, lang, SOURCE_LANG)
        for i, t in zip(idx, back):
            out[i] = t
    if original_quirks:
        out = cut_like_original(out, texts)
    return [t.lower() for t in out], langs


def chain_pairs(chain: Sequence[str]) -> list[tuple[str, str]]:
    path = [SOURCE_LANG, *(check_lang(lang, "--bt-chain") for lang in chain), SOURCE_LANG]
    return list(zip(path[:-1], path[1:]))


def backtranslate_chain(texts: Sequence[str], pool: TranslatorPool, chain: Sequence[str],
                        original_quirks: bool = False) -> list[str]:
    """en -> chain[0] -> ... -> en for every sentence; lower-cased (the original did not: ``original_quirks``)."""
    current = list(texts)
    for src, tgt in chain_pairs(chain):
        current = pool.translate(current, src, tgt)
    return current if original_quirks else [t.lower() for t in current]
