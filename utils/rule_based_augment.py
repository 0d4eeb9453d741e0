"""Rule-based caption augmentation (``aug_rb``, SPEC section 2).

Nouns (NN, NNS, NNP, NNPS) and verbs (VB, VBD, VBG, VBN) are replaced by a similar word whose POS tag
in the new sentence stays the same; "there is" (EX followed by VBZ) becomes "it is"; every other
character of the caption is kept as it was.

Two routes supply the three resources the rule needs (similar words, a POS tagger, a chooser):

- ``glove`` (the paper): GloVe glove-wiki-gigaword-200 neighbours with cosine >= 0.65, NLTK's
  averaged-perceptron tagger, best candidate by BERTScore F1 (optionally only if F1 >= a threshold).
  None of these can be fetched here, so each is read from a local path and its absence is reported
  with how to get it.
- ``lexicon`` (offline, ships with the project): the remote-sensing synonym lexicon
  ``data/lexicon/rs_synonyms.json`` gives both the POS tag of each word form and same-tag
  replacements; the replacement is drawn with a seeded RNG, or chosen by BERTScore when a BERTScore
  model is available locally.

nlpaug's ``SynonymAug``/``WordEmbsAug`` cannot check the tag of the replacement in the new sentence nor
rank candidates by BERTScore, and need NLTK data and gensim that are not installable offline, so the
substitution loop lives here; the models (BERT for BERTScore) come from transformers.
"""
from __future__ import annotations

import gzip
import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from utils.errors import DUCHError
from utils.io import read_json

NOUN_TAGS = ("NN", "NNS", "NNP", "NNPS")
VERB_TAGS = ("VB", "VBD", "VBG", "VBN")
REPLACEABLE_TAGS = NOUN_TAGS + VERB_TAGS
UNKNOWN_TAG = "X"

ROUTES = ("auto", "glove", "lexicon")
DEFAULT_LEXICON = Path(__file__).resolve().parent.parent / "data" / "lexicon" / "rs_synonyms.json"
GLOVE_NAME = "glove-wiki-gigaword-200"
GLOVE_MIN_SIM = 0.65
NLTK_TAGGER_RESOURCE = "taggers/averaged_perceptron_tagger_eng"
BERTSCORE_MODEL = "roberta-large"  # bert_score's default English model ...
BERTSCORE_LAYER = 17  # ... and its layer
PAPER_BERTSCORE_THRESHOLD = 0.75

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


class NltkTagger:
    """NLTK's averaged-perceptron Penn Treebank tagger (needs the NLTK data package)."""

    name = "nltk-averaged-perceptron"

    def __init__(self):
        import nltk

        self._pos_tag = nltk.pos_tag

    def __call__(self, words: Sequence[str]) -> list[str]:
        return [tag for _, tag in self._pos_tag(list(words))]


def nltk_tagger_missing() -> str | None:
    """Why NLTK's tagger cannot run here, or None when it can."""
    try:
        import nltk

        nltk.data.find(NLTK_TAGGER_RESOURCE)
    except (LookupError, ImportError, OSError, PermissionError):
        return (
            f"NLTK POS tagger data '{NLTK_TAGGER_RESOURCE}': with network run "
            "`python -m nltk.downloader averaged_perceptron_tagger_eng`, or copy it into a folder on NLTK_DATA"
        )
    return None


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


class GloveNeighbours:
    """Nearest GloVe neighbours by cosine similarity, from a local vectors file.

    Reads GloVe's plain text format (``word v1 ... vd``, e.g. glove.6B.200d.txt) or word2vec text with
    a header line (gensim-data's ``glove-wiki-gigaword-200.gz``), gzipped or not.
    """

    def __init__(self, path: str | Path, min_sim: float = GLOVE_MIN_SIM, topk: int = 10, limit: int | None = None):
        self.path, self.min_sim, self.topk = Path(path), min_sim, topk
        words, rows = [], []
        opener = gzip.open if self.path.suffix == ".gz" else open
        with opener(self.path, "rt", encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f):
                parts = line.rstrip().split(" ")
                if i == 0 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec header
                if len(parts) < 3:
                    continue
                words.append(parts[0])
                rows.append(np.asarray(parts[1:], dtype=np.float32))
                if limit and len(words) >= limit:
                    break
        if not words:
            raise DUCHError(f"GloVe file {self.path} holds no vectors")
        vectors = np.stack(rows)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.words, self.vectors = words, vectors
        self.index = {w: i for i, w in enumerate(words)}
        self._cache: dict[str, list[str]] = {}

    def candidates(self, word: str, tag: str | None = None) -> list[str]:
        key = word.lower()
        if key not in self._cache:
            i = self.index.get(key)
            if i is None:
                self._cache[key] = []
            else:
                sims = self.vectors @ self.vectors[i]
                sims[i] = -1.0
                order = np.argsort(-sims, kind="stable")[: self.topk]
                self._cache[key] = [
                    self.words[j] for j in order if sims[j] >= self.min_sim and self.words[j].isalpha()
                ]
        return list(self._cache[key])


# ----------------------------------------------------------------------------- choosers


class BertScorer:
    """BERTScore F1 (greedy cosine matching of contextual token vectors, no idf, no rescaling)."""

    def __init__(self, model_ref: str, layer: int, device="cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from models.hub import from_pretrained_local_first

        try:
            self.tokenizer = from_pretrained_local_first(AutoTokenizer, model_ref)
            self.model = from_pretrained_local_first(AutoModel, model_ref).to(device).eval()
        except Exception as err:  # OSError, ValueError, HF offline errors: all mean "not available"
            raise DUCHError(bertscore_missing_message(model_ref, err)) from None
        self.model_ref, self.layer, self.device, self._torch = model_ref, layer, device, torch
        self._cache: dict[str, object] = {}

    def _embed(self, texts: list[str]):
        torch = self._torch
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            enc = self.tokenizer(todo, return_tensors="pt", padding=True, truncation=True, max_length=128)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                hidden = self.model(**enc, output_hidden_states=True).hidden_states[self.layer]
            special = torch.zeros_like(enc["input_ids"], dtype=torch.bool)
            for sid in self.tokenizer.all_special_ids:
                special |= enc["input_ids"] == sid
            keep = enc["attention_mask"].bool() & ~special
            for t, h, k in zip(todo, hidden, keep):
                v = h[k].float()
                self._cache[t] = torch.nn.functional.normalize(v, dim=-1)
        return [self._cache[t] for t in texts]

    def f1(self, reference: str, candidates: list[str]) -> list[float]:
        ref, *cands = self._embed([reference, *candidates])
        scores = []
        for c in cands:
            sim = c @ ref.T
            precision = sim.max(dim=1).values.mean()
            recall = sim.max(dim=0).values.mean()
            scores.append(float(2 * precision * recall / (precision + recall)))
        return scores


def bertscore_missing_message(model_ref: str, err: Exception | None = None) -> str:
    detail = f" ({type(err).__name__})" if err is not None else ""
    if Path(model_ref).is_absolute() or Path(model_ref).exists():
        return f"BERTScore model folder {model_ref} holds no loadable model{detail} (--bertscore-model)"
    return (
        f"BERTScore model {model_ref!r} not available offline{detail}: with network run "
        f"`huggingface-cli download {model_ref} --local-dir DIR` and pass --bertscore-model DIR"
    )


# ----------------------------------------------------------------------------- the rule


@dataclass
class RuleBasedAugmenter:
    """Applies the rule to one sentence at a time; deterministic for a given seed and sentence index."""

    tagger: Callable[[Sequence[str]], list[str]]
    candidates: Callable[[str, str], list[str]]
    scorer: BertScorer | None = None
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
        for i, tag in enumerate(tags):
            if tag not in REPLACEABLE_TAGS:
                continue
            kept = []
            for cand in self.candidates(words[i], tag):
                trial = list(words)
                trial[i] = match_case(words[i], cand)
                if self.tagger(trial)[i] == tag:  # the replacement keeps its tag in the new sentence
                    kept.append(trial[i])
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
    glove_topk: int = 10,
    bertscore_model: str | None = BERTSCORE_MODEL,
    bertscore_layer: int = BERTSCORE_LAYER,
    bertscore_threshold: float | None = None,
    device: str = "auto",
    seed: int = 42,
    log: Callable[[str], None] = print,
) -> tuple[RuleBasedAugmenter, dict]:
    """Pick the route (``auto``: the paper's when all its resources exist), build it, describe it."""
    if route not in ROUTES:
        raise DUCHError(f"unknown --route {route!r}; choose one of: {', '.join(ROUTES)}")
    missing = []
    if glove_path is None:
        missing.append(
            f"GloVe vectors {GLOVE_NAME}: with network get glove.6B.zip from the Stanford GloVe page "
            f"(glove.6B.200d.txt) or `python -m gensim.downloader --download {GLOVE_NAME}`, then pass --glove PATH"
        )
    elif not Path(glove_path).is_file():
        missing.append(f"GloVe vectors file {glove_path} does not exist (--glove)")
    tagger_missing = nltk_tagger_missing()
    if tagger_missing:
        missing.append(tagger_missing)

    scorer = None
    if bertscore_model and (route == "glove" or (route == "auto" and not missing) or Path(bertscore_model).is_dir()):
        try:
            from utils.runtime import resolve_device

            scorer = BertScorer(bertscore_model, bertscore_layer, resolve_device(device))
        except DUCHError as err:
            missing.append(str(err))
    elif route in ("glove", "auto") and not bertscore_model:
        missing.append(bertscore_missing_message(BERTSCORE_MODEL))

    if route == "glove" and missing:
        raise DUCHError("the glove route needs resources that are missing: " + "; ".join(missing))
    use_glove = route == "glove" or (route == "auto" and not missing)
    provenance: dict = {"seed": seed}
    if use_glove:
        neighbours = GloveNeighbours(glove_path, glove_min_sim, glove_topk)
        aug = RuleBasedAugmenter(NltkTagger(), neighbours.candidates, scorer, bertscore_threshold, seed)
        provenance.update(
            route="glove",
            candidates={"source": "glove", "path": str(glove_path), "min_cosine": glove_min_sim, "topk": glove_topk},
            tagger=NltkTagger.name,
        )
    else:
        if route == "auto":
            log("rule-based: paper route (GloVe + POS tagger + BERTScore) unavailable; missing:")
            for m in missing:
                log(f"  - {m}")
        lexicon = Lexicon.load(lexicon_path)
        tagger = LexiconTagger(lexicon.tags, lexicon.fixed_phrases, lexicon.clause_openers)
        aug = RuleBasedAugmenter(tagger, lexicon.candidates, scorer, bertscore_threshold, seed)
        provenance.update(
            route="lexicon",
            candidates={"source": "lexicon", "path": str(lexicon.path), "sha256": lexicon.sha256},
            tagger=LexiconTagger.name,
            paper_route_missing=missing,
        )
    provenance["chooser"] = (
        {"method": "bertscore-f1", "model": scorer.model_ref, "layer": scorer.layer, "threshold": bertscore_threshold}
        if scorer is not None
        else {"method": "seeded-random"}
    )
    log(f"rule-based: route {provenance['route']} (tagger {provenance['tagger']}, "
        f"chooser {provenance['chooser']['method']})")
    return aug, provenance
