"""The paper's rule-based route through gensim, NLTK and bert-score, with tiny resources built here:
a word2vec vectors file, an NLTK data folder (a small trained perceptron tagger, an empty Punkt model)
and a tiny random BERT as the BERTScore model."""
from __future__ import annotations

import copy
import csv
import gzip
import json
import random

import numpy as np
import pytest
import torch

from tests.test_captions_augment import CAPTIONS, read_out, run, write_dataset
from tests.tiny_bert import TEST_WORDS, save_tiny_bert
from utils.errors import DUCHError
from utils.preprocess import rule_based_glove as paper
from utils.preprocess.rule_based import build_augmenter

# tag of each word of the tiny tagger's training sentences (its tagdict then holds them all)
TAGS = {
    "There": "EX", "there": "EX", "is": "VBZ", "It": "PRP", "it": "PRP", "a": "DT", "A": "DT", "The": "DT",
    "the": "DT", "Some": "DT", "of": "IN", "by": "IN", "with": "IN", "through": "IN", "near": "IN", ".": ".",
    "piece": "NN", "patch": "NN", "farmland": "NN", "Farmland": "NN", "cropland": "NN", "field": "NN", "river": "NN",
    "stream": "NN", "lot": "NN", "road-side": "NN", "roadside": "NN", "picture": "NN", "forest": "NN",
    "trees": "NNS", "woods": "NNS", "surrounded": "VBN", "encircled": "VBN", "enclosed": "VBN", "goes": "VBZ",
    "green": "JJ", "lush": "JJ", "white": "JJ", "calm": "JJ", "blue": "JJ", "wide": "JJ", "flows": "VBZ",
}
# 3-d vectors: neighbours by cosine; "lush" is near "farmland" but an adjective, "forest" near "trees" but NN
VECTORS = {
    "farmland": [1, 0, 0], "cropland": [0.95, 0.3, 0], "field": [0.9, 0.1, 0.4], "lush": [0.97, 0.05, 0.2],
    "trees": [0, 1, 0], "woods": [0.1, 0.95, 0.1], "forest": [0.05, 0.98, 0.0],
    "surrounded": [0, 0, 1], "encircled": [0.1, 0.1, 0.95], "enclosed": [0.2, 0, 0.9],
    "piece": [1, 1, 0], "patch": [0.9, 1, 0.1], "river": [0, 1, 1], "stream": [0.1, 0.9, 1],
    "road-side": [1, 0, 1], "roadside": [0.95, 0.1, 1], "picture": [-1, 0, 0], "goes": [0, -1, 0],
    "flows": [0.1, -0.95, 0.1],
}
SENTENCES = [c for caps in CAPTIONS.values() for c in caps] + [
    "There is a road-side lot .", "Farmland near a river .", "A farmland . There is a stream .",
]


def write_vectors(path, header=True):
    lines = [f"{len(VECTORS)} 3"] if header else []
    lines += [f"{w} {' '.join(str(float(v)) for v in vec)}" for w, vec in VECTORS.items()]
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def nltk_data(tmp_path_factory):
    """An NLTK data folder: a perceptron tagger trained on TAGS, and an empty (parameter-free) Punkt model."""
    from nltk.tag.perceptron import PerceptronTagger

    root = tmp_path_factory.mktemp("nltk_data")
    words = list(TAGS)
    sentences = [[(w, TAGS[w]) for w in words[i:i + 6]] for i in range(0, len(words), 6)] * 25
    state = random.getstate()
    random.seed(0)
    tagger = PerceptronTagger(load=False)
    tagger.train(sentences, nr_iter=3)
    random.setstate(state)
    folder = root / "taggers" / "averaged_perceptron_tagger_eng"
    folder.mkdir(parents=True)
    for obj, name in zip(tagger.encode_json_obj(), tagger.param_files("eng")):
        (folder / name).write_text(json.dumps(obj))
    punkt = root / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (punkt / name).write_text("")
    return root


@pytest.fixture
def use_nltk_data(nltk_data, monkeypatch):
    import nltk
    import nltk.tag
    import nltk.tokenize

    monkeypatch.setattr(nltk.data, "path", [str(nltk_data)])
    nltk.tag._get_tagger.cache_clear()
    nltk.tokenize._get_punkt_tokenizer.cache_clear()
    yield nltk_data
    nltk.tag._get_tagger.cache_clear()
    nltk.tokenize._get_punkt_tokenizer.cache_clear()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, and an empty gensim-data cache, unless a test says otherwise."""
    monkeypatch.setattr(paper, "network_reachable", lambda host, timeout=3.0: False)
    monkeypatch.setenv("GENSIM_DATA_DIR", str(tmp_path / "gensim-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def scorer_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("bertscore") / "tiny-scorer",
                          list(TEST_WORDS) + [w.lower() for w in TAGS] + list(VECTORS), num_layers=4)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    from gensim.models import KeyedVectors

    return KeyedVectors.load_word2vec_format(str(write_vectors(tmp_path_factory.mktemp("v") / "v.txt")))


@pytest.fixture(scope="module")
def bertscore(scorer_dir):
    return paper.make_bertscore(str(scorer_dir), layer=2, device="cpu", log=lambda m: None)


# ----------------------------------------------------------------------------- the original, re-derived


def original_process_tokens(text, kv, scorer, glove_sim_threshold=0.65, bert_score_threshold=None):
    """The original release's TextAugmenterRuleBased, transcribed: per position, on the untouched tokens."""
    import nltk

    tokens = nltk.word_tokenize(text)
    new_tokens = []
    pos_tags = nltk.pos_tag(tokens)
    for idx, (token, tag) in enumerate(pos_tags):
        if tag in ["NN", "NNS", "NNP", "NNPS"] or tag in ["VB", "VBD", "VBG", "VBN"]:
            try:
                similar = kv.most_similar(tokens[idx])
            except KeyError:
                similar = None
            replacement = None
            if similar is not None:
                cands = []
                for word, score in similar:
                    if score < glove_sim_threshold:
                        continue
                    new = copy.deepcopy(tokens)
                    new[idx] = word
                    if nltk.pos_tag(new)[idx][1] == tag:
                        cands.append(word)
                if cands:
                    refs = [" ".join(tokens)] * len(cands)
                    sents = [" ".join(tokens[:idx] + [c] + tokens[idx + 1:]) for c in cands]
                    f1 = scorer.score(sents, refs)[2].detach().cpu().numpy()
                    if bert_score_threshold is None:
                        replacement = cands[np.argmax(f1)]
                    else:
                        valid = [i for i, f in enumerate(f1) if f > bert_score_threshold]
                        replacement = cands[random.choice(valid)] if valid else None
            new_tokens.append(token if replacement is None else replacement)
        elif tag == "EX" and pos_tags[idx + 1][1] == "VBZ":
            new_tokens.append("it")
        else:
            new_tokens.append(token)
    return " ".join(new_tokens)


def make_aug(vectors, bertscore, threshold=None):
    return paper.PaperAugmenter(vectors, bertscore, paper.nltk_tokenize, paper.nltk_tag, threshold=threshold, seed=42)


def test_matches_original_argmax(use_nltk_data, vectors, bertscore):
    aug = make_aug(vectors, bertscore)
    ours = [aug(s, i) for i, s in enumerate(SENTENCES)]
    theirs = [original_process_tokens(s, vectors, bertscore.scorer) for s in SENTENCES]
    assert ours == theirs
    assert sum(o != " ".join(s.split()) for o, s in zip(ours, SENTENCES)) >= 8  # the rule really acted
    assert ours[0].startswith("it is a ")  # "There is" -> "it is", as the original (lower-case)
    assert aug.stats["replaced_words"] > 0 and aug.stats["there_is"] >= 3


def test_matches_original_thresholded_random_choice(use_nltk_data, vectors, bertscore):
    scores = []

    class Recording:
        def f1(self, ref, cands):
            out = bertscore.f1(ref, cands)
            scores.extend(out)
            return out

    for i, s in enumerate(SENTENCES):
        make_aug(vectors, Recording())(s, i)
    threshold = float(np.median(scores))  # some candidates pass, some do not
    aug = make_aug(vectors, bertscore, threshold)
    ours = [aug(s, i) for i, s in enumerate(SENTENCES)]
    random.seed(42)
    theirs = [original_process_tokens(s, vectors, bertscore.scorer, bert_score_threshold=threshold) for s in SENTENCES]
    assert ours == theirs
    assert ours != [make_aug(vectors, bertscore)(s, i) for i, s in enumerate(SENTENCES)]


def test_positions_are_independent_case_sensitive_and_hyphen_kept(use_nltk_data, vectors, bertscore):
    seen = []

    class Recording:
        def f1(self, ref, cands):
            seen.append((ref, list(cands)))
            return bertscore.f1(ref, cands)

    aug = make_aug(vectors, Recording())
    out = aug("Some trees surrounded the farmland .", 0)
    ref, cands = seen[0]
    ref_tokens = ref.split()
    assert ref == "Some trees surrounded the farmland ."
    for c in cands:  # every trial sentence differs from the untouched one at exactly one position
        assert sum(a != b for a, b in zip(c.split(), ref_tokens)) == 1
    positions = {next(k for k, (a, b) in enumerate(zip(c.split(), ref_tokens)) if a != b) for c in cands}
    assert positions == {1, 2, 4}  # trees, surrounded, farmland: all replaceable, scored independently
    assert "lush" not in " ".join(cands) and "forest" not in " ".join(cands)  # tag changes: not candidates
    assert all(w not in out.split() for w in ("trees", "surrounded", "farmland"))
    # case-sensitive lookup: "Farmland" is not in the (lower-case) vectors, so it stays
    assert aug("Farmland near a river .", 1).startswith("Farmland near a ")
    # word_tokenize keeps the hyphenated word, which has its own vector
    assert paper.nltk_tokenize("There is a road-side lot .") == ["There", "is", "a", "road-side", "lot", "."]
    out = aug("There is a road-side lot .", 2).split()
    assert len(out) == 6 and out[3] in [w for w, _ in vectors.most_similar("road-side")]


def test_bertscore_rescaled_with_baseline_matches_hand_computation(scorer_dir, tmp_path):
    import bert_score

    folder = tmp_path / "bert-base-uncased"  # a local folder named as a hub model gets that model's baseline
    folder.symlink_to(scorer_dir, target_is_directory=True)
    logs = []
    bs = paper.make_bertscore(str(folder), layer=2, device="cpu", log=logs.append)
    shipped = paper.shipped_baseline("bert-base-uncased")
    assert bs.baseline == str(shipped) and bs.info["rescale_with_baseline"] and not logs
    assert shipped.parent.parent == paper.Path(bert_score.__file__).parent / "rescale_baseline"
    with open(shipped) as f:
        row = list(csv.DictReader(f))[2]
    base_f = float(row["F"])

    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(str(scorer_dir)), AutoModel.from_pretrained(str(scorer_dir))

    def vecs(text):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc, output_hidden_states=True).hidden_states[2][0]
        return torch.nn.functional.normalize(h, dim=-1)

    ref, cands = "a farm with trees", ["a farmland with trees", "a river near the sea"]
    got = bs.f1(ref, cands)
    for cand, value in zip(cands, got):
        sim = vecs(cand) @ vecs(ref).T
        p, r = sim[1:-1].max(1).values.mean(), sim[:, 1:-1].max(0).values.mean()  # [CLS], [SEP] matched, not counted
        raw = float(2 * p * r / (p + r))
        assert value == pytest.approx((raw - base_f) / (1 - base_f), abs=1e-4)


def test_bertscore_without_baseline_says_so(scorer_dir):
    logs = []
    bs = paper.make_bertscore(str(scorer_dir), layer=2, device="cpu", log=logs.append)
    assert bs.baseline is None and not bs.info["rescale_with_baseline"]
    assert any("NOT rescaled" in m and "--bertscore-baseline" in m for m in logs)
    with pytest.raises(DUCHError, match="--bertscore-layer"):
        paper.make_bertscore(str(scorer_dir), layer=None, device="cpu", log=logs.append)
    with pytest.raises(DUCHError, match="--bertscore-layer 9"):
        paper.make_bertscore(str(scorer_dir), layer=9, device="cpu", log=logs.append)


def test_glove_formats_and_pickle_refused(tmp_path):
    for name, header in (("w2v.txt", True), ("glove.6B.200d.txt", False), ("w2v.txt.gz", True)):
        kv = paper.load_glove(paper.Resource("glove", "present", str(write_vectors(tmp_path / name, header))))
        assert kv.most_similar("farmland", topn=1)[0][0] in ("lush", "cropland")
        assert len(kv.index_to_key) == len(VECTORS)
    from gensim.models import KeyedVectors

    kv.save(str(tmp_path / "native.kv"))
    with pytest.raises(DUCHError, match="pickle.*save_word2vec_format"):
        paper.load_glove(paper.Resource("glove", "present", str(tmp_path / "native.kv")))
    (tmp_path / "bad.txt").write_text("not vectors at all\n")
    with pytest.raises(DUCHError, match="cannot read GloVe vectors file"):
        paper.load_glove(paper.Resource("glove", "present", str(tmp_path / "bad.txt")))
    assert isinstance(kv, KeyedVectors)


def test_glove_lookup_order(tmp_path, monkeypatch):
    with pytest.raises(DUCHError, match="does not exist"):
        paper.find_glove(tmp_path / "nope.txt")
    assert paper.find_glove(None).status == "missing"
    monkeypatch.setattr(paper, "network_reachable", lambda host, timeout=3.0: host == paper.GENSIM_HOST)
    assert paper.find_glove(None).status == "download"
    cached = paper.gensim_cached_file()
    cached.parent.mkdir(parents=True)
    write_vectors(cached)
    found = paper.find_glove(None)
    assert found.status == "present" and found.where == str(cached)

    import gensim.downloader

    calls = []
    monkeypatch.setattr(gensim.downloader, "load", lambda name, return_path=False: calls.append((name, return_path))
                        or str(cached))
    kv = paper.load_glove(paper.Resource("glove", "download"))
    assert calls == [(paper.GLOVE_NAME, True)] and "farmland" in kv.key_to_index


# ----------------------------------------------------------------------------- through the script


def glove_args(data_dir, vectors_file, scorer_dir, *extra):
    return ["--dataset", "ucm", "--data-dir", str(data_dir), "--txt-aug", "rule-based", "--glove", str(vectors_file),
            "--bertscore-model", str(scorer_dir), "--bertscore-layer", "2", "--device", "cpu", *extra]


def test_script_paper_route(use_nltk_data, tmp_path, scorer_dir, vectors, bertscore, capsys):
    write_dataset(tmp_path)
    vectors_file = write_vectors(tmp_path / "glove.txt")
    run(glove_args(tmp_path, vectors_file, scorer_dir))  # --route auto: everything is present
    out = read_out(tmp_path)
    prov = out["augmentation_provenance"]["aug_rb"]
    assert prov["route"] == "glove" and prov["candidates"]["lookup"] == "case-sensitive"
    assert prov["chooser"]["package"] == "bert-score" and prov["chooser"]["rescale_with_baseline"] is False
    assert "fallback" not in prov
    expected = [original_process_tokens(c, vectors, bertscore.scorer) for caps in CAPTIONS.values() for c in caps]
    assert [s["aug_rb"] for im in out["images"] for s in im["sentences"]] == expected
    assert "NOT rescaled" in capsys.readouterr().out


def test_auto_falls_back_loudly(use_nltk_data, tmp_path, scorer_dir, capsys):
    write_dataset(tmp_path)
    run(["--dataset", "ucm", "--data-dir", str(tmp_path), "--txt-aug", "rule-based", "--device", "cpu",
         "--bertscore-model", str(scorer_dir), "--bertscore-layer", "2"])  # no GloVe anywhere, no network
    prov = read_out(tmp_path)["augmentation_provenance"]["aug_rb"]
    assert prov["route"] == "lexicon" and "lexicon route used instead" in prov["fallback"]
    assert any("GloVe" in m and "gensim.downloader" in m for m in prov["paper_route_missing"])
    err = capsys.readouterr().err
    assert "WARNING" in err and "NOT used" in err and "glove-wiki-gigaword-200" in err


def test_glove_route_names_missing_resources(tmp_path):
    with pytest.raises(DUCHError) as exc:
        build_augmenter(route="glove", glove_path=None, bertscore_model="roberta-large", log=lambda m: None)
    msg = str(exc.value)
    assert "glove-wiki-gigaword-200" in msg and "--glove" in msg and "roberta-large" in msg
    assert "averaged_perceptron_tagger_eng" in msg or "punkt_tab" in msg or "NLTK" in msg
    with pytest.raises(DUCHError, match="does not exist"):
        build_augmenter(route="glove", bertscore_model=str(tmp_path / "no_model"), log=lambda m: None)
    assert "did you mean 'roberta-large'" in paper.find_bertscore_model("roberta-larg").how
    assert "did you mean" not in paper.find_bertscore_model("roberta-large").how  # a known name, just not here
    with pytest.raises(DUCHError, match="did you mean 'glove'"):
        build_augmenter(route="glvoe", log=lambda m: None)


def test_tiny_roberta_named_like_the_default_model(tmp_path):
    """bert_score's RoBERTa path (prefix space) with a local folder called roberta-large: its layer table and
    shipped baseline are used, and a tokenizer without a length limit is capped to the model's positions."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder = tmp_path / "roberta-large"
    folder.mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([s.lower() for s in SENTENCES] * 3, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tok = RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                               eos_token_id=2)).save_pretrained(str(folder))
    with pytest.raises(DUCHError, match="--bertscore-layer 17"):  # roberta-large's layer, beyond this tiny model
        paper.make_bertscore(str(folder), device="cpu", log=lambda m: None)
    bs = paper.make_bertscore(str(folder), layer=3, device="cpu", log=lambda m: None)
    assert bs.baseline == str(paper.shipped_baseline("roberta-large")) and bs.scorer._tokenizer.model_max_length == 64
    same, other = bs.f1("there is a piece of farmland .", ["there is a piece of farmland .", "a river ."])
    assert same == pytest.approx(1.0, abs=1e-5) and other < same
    long_caption = " ".join(["farmland"] * 200)  # longer than the position table: truncated, not a crash
    assert np.isfinite(bs.f1(long_caption, [long_caption])[0])
