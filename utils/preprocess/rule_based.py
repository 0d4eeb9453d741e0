"""Rule-based caption augmentation (``aug_rb``, docs/method.md): route choice and the offline lexicon route.

Nouns (NN, NNS, NNP, NNPS) and verbs (VB, VBD, VBG, VBN) are replaced by a similar word whose POS tag
in the new sentence stays the same; "there is" (EX followed by VBZ) becomes "it is".

Two routes supply the resources the rule needs (similar words, a POS tagger, a chooser):

- ``glove`` (the paper, ``utils/preprocess/rule_based_glove.py``): gensim GloVe vectors, NLTK's tokenizer and
  tagger, bert-score's BERTScorer, run as the original release ran them.
- ``lexicon`` (offline, ships with the project): the remote-sensing synonym lexicon
  ``data/lexicon/rs_synonyms.json`` gives both the POS tag of each word form and same-tag
  replacements; the replacement is drawn with a seeded RNG, or chosen by BERTScore when a BERTScore
  model folder is given. Every other character of the caption is kept as it was.

``--route auto`` takes the paper route whenever its resources are present or downloadable, and says
loudly (console and the JSON's provenance) when it falls back to the lexicon route.
"""
from __future__ import annotations

import hashlib
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from utils.errors import DUCHError, did_you_mean
from utils.io import read_json
from utils.preprocess.rule_based_glove import (
    BERTSCORE_MODEL,
    GLOVE_MIN_SIM,
    GLOVE_TOPN,
    PAPER_BERTSCORE_THRESHOLD,
    REPLACEABLE_TAGS,
    build_paper_augmenter,
    describe_paper_resources,
    make_bertscore,
)
from utils.runtime import resolve_device

UNKNOWN_TAG = "X"
ROUTES = ("auto", "glove", "lexicon")
DEFAULT_LEXICON = Path(__file__).resolve().parents[2] / "data" / "lexicon" / "rs_synonyms.json"
__all__ = ["BERTSCORE_MODEL", "GLOVE_MIN_SIM", "GLOVE_TOPN", "PAPER_BERTSCORE_THRESHOLD", "ROUTES", "DEFAULT_LEXICON",
           "Lexicon", "LexiconTagger", "RuleBasedAugmenter", "build_augmenter"]

MAX_WORDS_WHOLE_SENTENCE_TAGGER = 400  # the perceptron route re-tags the caption per candidate: quadratic in length
_TOKEN_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+|[^\w\s]")


# ----------------------------------------------------------------------------- tokens


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Words, numbers and punctuation with their character spans, so untouched text stays byte-identical."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]


def rebuild(text: str, spans: Sequence[tuple[int, int]], words: Sequence[str]) -> str:
    """``text`` with the characters of each span replaced by the matching word."""
    out, last = [], 0
    for (start, end), word in zip(spans, words):
        out.append(text[last:start])
        out.append(word)
        last = end
    out.append(text[last:])
    return "".join(out)


def match_case(original: str, word: str) -> str:
    if original.isupper() and len(original) > 1:
        return word.upper()
    if original[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


# ----------------------------------------------------------------------------- taggers


class LexiconTagger:
    """Tags each word form with the one tag the lexicon gives it; other words get ``X``.

    Context-free by design: the lexicon lists only word forms whose tag does not depend on context in
    remote-sensing captions, so a replacement drawn from the same tag keeps its tag in the new sentence.
    """

    name = "lexicon"

    def __init__(self, tags: dict[str, str], fixed_phrases: Sequence[str] = (), clause_openers: Sequence[str] = ()):
        self.tags = tags
        self.phrases = [tuple(p.lower().split()) for p in fixed_phrases]
        self.clause_openers = set(clause_openers)
        self.reach = max([len(p) for p in self.phrases] + [1])  # how far a neighbour can change a word's tag

    def tag_at(self, words: Sequence[str], i: int) -> str:
        """The tag ``__call__(words)[i]`` would give, from the words around ``i`` only: a word's tag depends on the
        word before it (the EX rule) and on fixed phrases covering it, all within ``reach`` words. Constant time
        per word, so trying every replacement of a sentence is linear in its length, not quadratic."""
        start = max(0, i - self.reach)
        return self(words[start:i + self.reach + 1])[i - start]

    def __call__(self, words: Sequence[str]) -> list[str]:
        lower = [w.lower() for w in words]
        tags = [self.tags.get(w, UNKNOWN_TAG) for w in lower]
        for i, tag in enumerate(tags):  # "cars parked there is ...": an adverb, not existential "there"
            if tag == "EX" and i > 0 and lower[i - 1] not in self.clause_openers:
                tags[i] = "RB"
        for phrase in self.phrases:  # names such as "mobile home park" are kept whole
            n = len(phrase)
            for i in range(len(lower) - n + 1):
                if tuple(lower[i:i + n]) == phrase:
                    tags[i:i + n] = [UNKNOWN_TAG] * n
        return tags


# ----------------------------------------------------------------------------- candidate sources


@dataclass
class Lexicon:
    """The shipped synonym lexicon: tag of each word form and same-tag replacements."""

    path: Path
    tags: dict[str, str]
    synonyms: dict[str, dict[str, list[str]]]
    sha256: str
    fixed_phrases: list[str] = field(default_factory=list)
    clause_openers: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_LEXICON) -> "Lexicon":
        path = Path(path)
        raw = read_json(path, "synonym lexicon", "it ships with the project in data/lexicon/")
        synonyms = raw.get("synonyms") if isinstance(raw, dict) else None
        if not isinstance(synonyms, dict):
            raise DUCHError(f"synonym lexicon {path} has no 'synonyms' object (tag -> word -> replacements)")
        tags: dict[str, str] = {}
        for word, tag in raw.get("tags", {}).items():
            tags[word.lower()] = tag
        for tag, entries in synonyms.items():
            for word, reps in entries.items():
                for form in (word, *reps):
                    known = tags.setdefault(form.lower(), tag)
                    if known != tag:
                        raise DUCHError(f"synonym lexicon {path}: {form!r} is listed as both {known} and {tag}")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        entries = {t: {w.lower(): list(r) for w, r in e.items()} for t, e in synonyms.items()}
        return cls(path, tags, entries, sha, list(raw.get("fixed_phrases", [])), list(raw.get("clause_openers", [])))

    def candidates(self, word: str, tag: str) -> list[str]:
        return [r for r in self.synonyms.get(tag, {}).get(word.lower(), []) if r.lower() != word.lower()]


# ----------------------------------------------------------------------------- the rule


@dataclass
class RuleBasedAugmenter:
    """Applies the rule to one sentence at a time; deterministic for a given seed and sentence index."""

    tagger: Callable[[Sequence[str]], list[str]]
    candidates: Callable[[str, str], list[str]]
    scorer: object | None = None  # f1(reference, candidates), e.g. rule_based_paper.BertScore
    threshold: float | None = None
    seed: int = 42
    stats: dict = field(default_factory=lambda: {"replaced_words": 0, "there_is": 0})

    def __call__(self, text: str, index: int) -> str:
        toks = tokenize(text)
        if not toks:
            return text
        words = [w for w, _, _ in toks]
        spans = [(s, e) for _, s, e in toks]
        tags = self.tagger(words)
        for i in range(len(words) - 1):
            if tags[i] == "EX" and tags[i + 1] == "VBZ":
                words[i] = match_case(words[i], "it")
                self.stats["there_is"] += 1
        tag_at = getattr(self.tagger, "tag_at", None)
        if tag_at is None:  # a tagger that must see the whole sentence: each trial costs its length
            if len(words) > MAX_WORDS_WHOLE_SENTENCE_TAGGER:
                tagger = getattr(self.tagger, "name", "sentence")
                raise DUCHError(f"caption {index} has {len(words)} tokens; the {tagger} "
                                f"tagger re-tags the whole caption per candidate, so captions are limited to "
                                f"{MAX_WORDS_WHOLE_SENTENCE_TAGGER} tokens (the lexicon route has no limit)")
            tag_at = lambda trial, i: self.tagger(trial)[i]  # noqa: E731
        for i, tag in enumerate(tags):
            if tag not in REPLACEABLE_TAGS:
                continue
            kept, original = [], words[i]
            for cand in self.candidates(original, tag):
                words[i] = match_case(original, cand)
                if tag_at(words, i) == tag:  # the replacement keeps its tag in the new sentence
                    kept.append(words[i])
            words[i] = original
            choice = self._choose(text, spans, words, i, kept, index)
            if choice is not None:
                words[i] = choice
                self.stats["replaced_words"] += 1
        return rebuild(text, spans, words)

    def _choose(self, text, spans, words, i, kept, index) -> str | None:
        if not kept:
            return None
        if self.scorer is None:
            return random.Random(f"{self.seed}:{index}:{i}").choice(kept)
        trials = [rebuild(text, spans, words[:i] + [c] + words[i + 1:]) for c in kept]
        scores = self.scorer.f1(text, trials)
        best = int(np.argmax(scores))  # first best on ties: stable
        if self.threshold is not None and scores[best] < self.threshold:
            return None
        return kept[best]


def build_augmenter(
    route: str = "auto",
    lexicon_path: str | Path = DEFAULT_LEXICON,
    glove_path: str | Path | None = None,
    glove_min_sim: float = GLOVE_MIN_SIM,
    glove_topk: int = GLOVE_TOPN,
    bertscore_model: str = BERTSCORE_MODEL,
    bertscore_layer: int | None = None,
    bertscore_baseline: str | None = None,
    bertscore_threshold: float | None = None,
    device: str = "auto",
    seed: int = 42,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> tuple[Callable[[str, int], str], dict]:
    """Pick the route (``auto``: the paper's when its resources are present or downloadable), build it, describe it."""
    warn = warn or (lambda m: print(m, file=sys.stderr))
    if route not in ROUTES:
        raise DUCHError(f"unknown --route {route!r}{did_you_mean(route, ROUTES)}; choose one of: {', '.join(ROUTES)}")
    provenance: dict = {"seed": seed}
    if route in ("glove", "auto"):
        resources = describe_paper_resources(glove_path, bertscore_model)
        missing = [r for r in resources.values() if r.status == "missing"]
        if not missing:
            aug, paper = build_paper_augmenter(
                resources, bertscore_model, bertscore_layer, bertscore_baseline, bertscore_threshold, glove_min_sim,
                glove_topk, seed, resolve_device(device), log,
            )
            provenance.update(paper)
            log(f"rule-based: route glove (the paper's: gensim GloVe, NLTK tagger, bert-score; "
                f"chooser {paper['chooser']['method']})")
            return aug, provenance
        if route == "glove":
            raise DUCHError("the glove route needs resources that are missing: "
                            + "; ".join(r.describe() for r in missing))
        warn("WARNING: rule-based: the paper route (GloVe + NLTK tagger + BERTScore) is NOT used; "
             "falling back to the offline lexicon route, whose captions differ from the paper's. Missing:")
        for r in missing:
            warn(f"  - {r.describe()}")
        provenance.update(fallback="paper route unavailable: lexicon route used instead",
                          paper_route_missing=[r.describe() for r in missing])

    lexicon = Lexicon.load(lexicon_path)
    tagger = LexiconTagger(lexicon.tags, lexicon.fixed_phrases, lexicon.clause_openers)
    scorer = None
    if bertscore_model and Path(bertscore_model).expanduser().is_dir():
        scorer = make_bertscore(bertscore_model, bertscore_layer, bertscore_baseline, resolve_device(device), log)
    aug = RuleBasedAugmenter(tagger, lexicon.candidates, scorer, bertscore_threshold, seed)
    provenance.update(
        route="lexicon",
        candidates={"source": "lexicon", "path": str(lexicon.path), "sha256": lexicon.sha256},
        tagger=LexiconTagger.name,
        chooser=({"method": "bertscore-f1 argmax", "threshold": bertscore_threshold, **scorer.info}
                 if scorer is not None else {"method": "seeded-random"}),
    )
    log(f"rule-based: route lexicon (tagger {LexiconTagger.name}, chooser {provenance['chooser']['method']})")
    return aug, provenance
