"""The paper's rule-based caption augmentation, through the libraries the original release used.

Resources: GloVe ``glove-wiki-gigaword-200`` as gensim ``KeyedVectors``; NLTK's ``word_tokenize``
(Punkt sentences + the Treebank word tokenizer, which keeps hyphenated words) and its averaged-
perceptron tagger; ``bert_score.BERTScorer(lang="en", rescale_with_baseline=True)``. Each is found
locally first (a given path, gensim-data's / NLTK's / Hugging Face's cache) and else downloaded with
the library's own downloader when its server is reachable; ``describe_paper_resources`` says which,
without loading anything, so that ``--route auto`` can decide before the long work.

The algorithm is the original's (docs/method.md): every position is tagged and replaced independently
on the untouched tokens; GloVe is looked up case-sensitively (``most_similar``, top 10, cosine >=
0.65); a neighbour is a candidate when the tagger gives it the same tag in the new sentence; the
replacement is the candidate with the best BERTScore F1 against the untouched sentence, or, in the
thresholded mode, a random choice (one ``random.Random(seed)`` stream, as the original's
``random.seed(42)``) among the candidates with F1 > T; "there" tagged EX before a VBZ becomes "it";
the tokens are joined by single spaces.
"""
from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from models.hub import hub_offline, suggest_model
from utils.errors import DUCHError

GLOVE_NAME = "glove-wiki-gigaword-200"
GLOVE_MIN_SIM = 0.65
GLOVE_TOPN = 10  # gensim's most_similar default, as the original called it
NOUN_TAGS = ("NN", "NNS", "NNP", "NNPS")
VERB_TAGS = ("VB", "VBD", "VBG", "VBN")
REPLACEABLE_TAGS = NOUN_TAGS + VERB_TAGS
BERTSCORE_LANG = "en"
BERTSCORE_MODEL = "roberta-large"  # bert_score's model for lang="en" ...
PAPER_BERTSCORE_THRESHOLD = 0.75
# NLTK data: (resource path for nltk.data.find, package name for nltk.download)
NLTK_TAGGER = ("taggers/averaged_perceptron_tagger_eng/", "averaged_perceptron_tagger_eng")
NLTK_PUNKT = ("tokenizers/punkt_tab/english/", "punkt_tab")
# hosts the libraries' own downloaders fetch from
GENSIM_HOST, NLTK_HOST, HF_HOST = "github.com", "raw.githubusercontent.com", "huggingface.co"


def network_reachable(host: str, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host``:443 opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Resource:
    """One resource of the paper route: ``present`` (with where), ``download`` (from where), or ``missing``."""

    what: str
    status: str
    where: str = ""
    how: str = ""  # how to provide it, when missing

    def describe(self) -> str:
        if self.status == "present":
            return f"{self.what}: {self.where}"
        if self.status == "download":
            return f"{self.what}: will be downloaded ({self.where})"
        return f"{self.what}: missing; {self.how}"


# ----------------------------------------------------------------------------- GloVe (gensim)


def gensim_data_dir() -> Path:
    """gensim-data's cache folder (``GENSIM_DATA_DIR``, default ``~/gensim-data``), as gensim.downloader uses."""
    return Path(os.environ.get("GENSIM_DATA_DIR", Path("~/gensim-data").expanduser()))


def gensim_cached_file(name: str = GLOVE_NAME) -> Path:
    return gensim_data_dir() / name / f"{name}.gz"


def find_glove(path: str | Path | None) -> Resource:
    what = f"GloVe vectors {GLOVE_NAME}"
    how = (f"with network run `python -m gensim.downloader --download {GLOVE_NAME}` (into {gensim_data_dir()}), "
           "or pass --glove PATH to a GloVe / word2vec vectors file (e.g. glove.6B.200d.txt)")
    if path is not None:
        if Path(path).is_file():
            return Resource(what, "present", str(path))
        raise DUCHError(f"GloVe vectors file {path} does not exist (--glove); {how}")
    cached = gensim_cached_file()
    if cached.is_file():
        return Resource(what, "present", str(cached))
    if network_reachable(GENSIM_HOST):
        return Resource(what, "download", f"gensim.downloader into {gensim_data_dir()}")
    return Resource(what, "missing", how=how)


def load_glove(resource: Resource):
    """gensim ``KeyedVectors`` from the resource: a word2vec/GloVe text file (plain or .gz/.bz2), word2vec
    binary, or gensim-data's download. gensim's own pickled ``.kv`` files are refused (no pickles here)."""
    from gensim.models import KeyedVectors

    if resource.status == "download":
        import gensim.downloader

        print(f"downloading {GLOVE_NAME} with gensim.downloader")
        path = gensim.downloader.load(GLOVE_NAME, return_path=True)
    else:
        path = resource.where
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:1] == b"\x80":
        raise DUCHError(
            f"{path} is a gensim native KeyedVectors file, a Python pickle, which this project does not load; "
            f"convert it once to word2vec text: python -c \"from gensim.models import KeyedVectors as K; "
            f"K.load('{path}').save_word2vec_format('{path}.txt')\" and pass --glove {path}.txt"
        )
    binary = path.suffix == ".bin"
    try:
        if binary:
            return KeyedVectors.load_word2vec_format(str(path), binary=True)
        first = _first_line(path).split()
        has_header = len(first) == 2 and all(p.isdigit() for p in first)
        return KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=not has_header)
    except (ValueError, UnicodeDecodeError, EOFError, OSError) as err:
        raise DUCHError(f"cannot read GloVe vectors file {path} ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); expected GloVe or word2vec text, or word2vec binary "
                        "(.bin)") from None


def _first_line(path: Path) -> str:
    from gensim import utils

    with utils.open(str(path), "rb") as f:
        return f.readline().decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- NLTK


def find_nltk(resource: tuple[str, str]) -> Resource:
    import nltk

    path, package = resource
    what = f"NLTK data {package}"
    try:
        return Resource(what, "present", str(nltk.data.find(path)))
    except LookupError:
        pass
    if network_reachable(NLTK_HOST):
        return Resource(what, "download", "nltk.download")
    return Resource(what, "missing", how=f"with network run `python -m nltk.downloader {package}`, "
                                           "or copy it into a folder on NLTK_DATA")


def ensure_nltk(resource: Resource, package: str) -> None:
    if resource.status == "download":
        import nltk

        if not nltk.download(package, quiet=True):
            raise DUCHError(f"nltk.download({package!r}) failed; run `python -m nltk.downloader {package}`")


# ----------------------------------------------------------------------------- BERTScore (bert-score)


def find_bertscore_model(ref: str) -> Resource:
    what = f"BERTScore model {ref}"
    how = f"with network run `huggingface-cli download {ref} --local-dir DIR` and pass --bertscore-model DIR"
    path = Path(ref).expanduser()
    if path.is_dir():
        return Resource(what, "present", str(path))
    if path.is_absolute() or ref.startswith((".", "~")) or ref.count("/") > 1:
        raise DUCHError(f"BERTScore model folder {ref} does not exist (--bertscore-model)")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref, "config.json")
    except Exception:  # an odd name is simply not cached
        cached = None
    if isinstance(cached, str):
        return Resource(what, "present", f"Hugging Face cache ({Path(cached).parent})")
    if not hub_offline() and network_reachable(HF_HOST):
        return Resource(what, "download", "Hugging Face Hub")
    return Resource(what, "missing", how=how + suggest_model(ref))


def shipped_baseline(model_name: str, lang: str = BERTSCORE_LANG) -> Path | None:
    """bert_score's own rescale baseline file for a model name (the package ships them), or None."""
    import bert_score

    path = Path(bert_score.__file__).parent / "rescale_baseline" / lang / f"{model_name}.tsv"
    return path if path.is_file() else None


@dataclass
class BertScore:
    """``bert_score.BERTScorer`` with the model, layer and baseline resolved; ``f1(reference, candidates)``."""

    scorer: object
    model: str
    layer: int
    baseline: str | None  # the rescale baseline file, or None: F1 not rescaled
    info: dict = field(default_factory=dict)

    def f1(self, reference: str, candidates: Sequence[str]) -> list[float]:
        if not candidates:
            return []
        _, _, f1 = self.scorer.score(list(candidates), [reference] * len(candidates))
        return [float(v) for v in f1]


def make_bertscore(ref: str = BERTSCORE_MODEL, layer: int | None = None, baseline: str | None = None,
                   device: str = "cpu", log: Callable[[str], None] = print) -> BertScore:
    """``BERTScorer(lang="en", rescale_with_baseline=True)`` for ``ref`` (hub name or local folder).

    bert_score names its layer table and baseline files by hub name. A local folder gets them by its
    folder name (a folder called ``roberta-large`` is taken for roberta-large); ``layer`` and
    ``baseline`` override. Without a baseline file the F1 is not rescaled, which is said loudly.
    """
    from bert_score import BERTScorer
    from bert_score.utils import model2layers

    path = Path(ref).expanduser()
    name = path.name if path.is_dir() else ref
    if layer is None:
        layer = model2layers.get(name)
        if layer is None:
            raise DUCHError(f"bert_score has no layer for model {ref!r}{suggest_model(name)}; "
                            "pass --bertscore-layer N")
    if baseline is None:
        found = shipped_baseline(name)
        baseline = str(found) if found is not None else None
    elif not Path(baseline).is_file():
        raise DUCHError(f"BERTScore baseline file {baseline} does not exist (--bertscore-baseline)")
    try:
        scorer = BERTScorer(model_type=str(path) if path.is_dir() else ref, num_layers=layer, lang=BERTSCORE_LANG,
                            rescale_with_baseline=baseline is not None, baseline_path=baseline, device=str(device))
    except AssertionError as err:  # bert_score checks the layer with assert
        raise DUCHError(f"--bertscore-layer {layer}: {err}") from None
    except Exception as err:  # OSError, ValueError, offline-hub errors: the model is not there
        raise DUCHError(f"BERTScore model {ref!r} could not be loaded ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}){suggest_model(ref)}") from None
    _cap_tokenizer_length(scorer)
    if baseline is not None:
        import warnings

        with warnings.catch_warnings():  # bert_score wraps a read-only pandas array: a harmless torch warning
            warnings.simplefilter("ignore", UserWarning)
            scorer.baseline_vals  # noqa: B018 (read once here, cached by bert_score)
    if baseline is None:
        log(f"WARNING: no BERTScore rescale baseline for {ref!r} (bert_score ships them for hub names only): "
            "F1 is NOT rescaled, so --bertscore-threshold applies to raw F1; pass --bertscore-baseline FILE")
    info = {"package": "bert-score", "model": ref, "layer": layer, "lang": BERTSCORE_LANG,
            "rescale_with_baseline": baseline is not None, "baseline": baseline, "idf": False}
    return BertScore(scorer, ref, layer, baseline, info)


def _cap_tokenizer_length(scorer) -> None:
    """bert_score truncates at ``tokenizer.model_max_length``; a folder without that setting would overflow."""
    tok, config = scorer._tokenizer, getattr(scorer._model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if positions and tok.model_max_length > positions:
        offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        tok.model_max_length = positions - offset


# ----------------------------------------------------------------------------- the rule


@dataclass
class PaperAugmenter:
    """The original's ``process_tokens`` for one caption; ``stats`` counts what it did."""

    vectors: object  # gensim KeyedVectors (``most_similar``)
    scorer: object  # ``f1(reference, candidates)``
    tokenize: Callable[[str], list[str]]
    tag: Callable[[list[str]], list[tuple[str, str]]]
    min_sim: float = GLOVE_MIN_SIM
    topn: int = GLOVE_TOPN
    threshold: float | None = None
    seed: int = 42
    stats: dict = field(default_factory=lambda: {"replaced_words": 0, "there_is": 0})

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self._similar: dict[str, list] = {}

    def similar(self, token: str) -> list:
        """``most_similar(token)`` as the original: case-sensitive, absent words have none."""
        if token not in self._similar:
            try:
                self._similar[token] = list(self.vectors.most_similar(token, topn=self.topn))
            except KeyError:
                self._similar[token] = []
        return self._similar[token]

    def candidates(self, tokens: list[str], idx: int, tag: str) -> list[str]:
        kept = []
        for word, score in self.similar(tokens[idx]):
            if score < self.min_sim:
                continue
            trial = list(tokens)
            trial[idx] = word
            if self.tag(trial)[idx][1] == tag:
                kept.append(word)
        return kept

    def __call__(self, text: str, index: int = 0) -> str:
        tokens = self.tokenize(text)
        tags = [t for _, t in self.tag(tokens)]
        out = list(tokens)
        per_position: list[tuple[int, list[str]]] = []
        for idx, tag in enumerate(tags):
            if tag in REPLACEABLE_TAGS:
                cands = self.candidates(tokens, idx, tag)
                if cands:
                    per_position.append((idx, cands))
            elif tag == "EX" and idx + 1 < len(tags) and tags[idx + 1] == "VBZ":
                out[idx] = "it"
                self.stats["there_is"] += 1
        if per_position:
            reference = " ".join(tokens)
            trials = [" ".join(tokens[:idx] + [c] + tokens[idx + 1:]) for idx, cands in per_position for c in cands]
            scores = iter(self.scorer.f1(reference, trials))  # one call per caption, positions in order
            for idx, cands in per_position:
                f1 = np.asarray([next(scores) for _ in cands])
                choice = self._select(f1, cands)
                if choice is not None:
                    out[idx] = choice
                    self.stats["replaced_words"] += 1
        return " ".join(out)

    def _select(self, f1: np.ndarray, cands: list[str]) -> str | None:
        if self.threshold is None:
            return cands[int(np.argmax(f1))]
        valid = [i for i, f in enumerate(f1) if f > self.threshold]
        if not valid:
            return None
        return cands[self.rng.choice(valid)]


def nltk_tokenize(text: str) -> list[str]:
    import nltk

    return nltk.word_tokenize(text)


def nltk_tag(tokens: list[str]) -> list[tuple[str, str]]:
    import nltk

    return nltk.pos_tag(tokens)


def describe_paper_resources(glove_path, bertscore_model: str) -> dict[str, Resource]:
    """Where each resource of the paper route comes from, without loading any (errors for a bad explicit path)."""
    return {
        "glove": find_glove(glove_path),
        "tokenizer": find_nltk(NLTK_PUNKT),
        "tagger": find_nltk(NLTK_TAGGER),
        "bertscore": find_bertscore_model(bertscore_model),
    }


def build_paper_augmenter(resources: dict[str, Resource], bertscore_model: str, bertscore_layer: int | None,
                          bertscore_baseline: str | None, threshold: float | None, min_sim: float, topn: int,
                          seed: int, device: str, log: Callable[[str], None] = print) -> tuple[PaperAugmenter, dict]:
    ensure_nltk(resources["tokenizer"], NLTK_PUNKT[1])
    ensure_nltk(resources["tagger"], NLTK_TAGGER[1])
    log(f"rule-based: loading {resources['glove'].describe()}")
    vectors = load_glove(resources["glove"])
    scorer = make_bertscore(bertscore_model, bertscore_layer, bertscore_baseline, device, log)
    aug = PaperAugmenter(vectors, scorer, nltk_tokenize, nltk_tag, min_sim, topn, threshold, seed)
    provenance = {
        "route": "glove",
        "candidates": {"source": "gensim KeyedVectors", "name": GLOVE_NAME, "from": resources["glove"].where,
                       "words": len(vectors.index_to_key), "min_cosine": min_sim, "topn": topn,
                       "lookup": "case-sensitive"},
        "tokenizer": "nltk.word_tokenize (Punkt + Treebank)",
        "tagger": "nltk.pos_tag (averaged perceptron)",
        "chooser": {"method": "bertscore-f1 " + ("random among F1 > threshold" if threshold is not None else "argmax"),
                    "threshold": threshold, **scorer.info},
        "resources": {k: r.describe() for k, r in resources.items()},
    }
    return aug, provenance
