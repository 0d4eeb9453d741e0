"""captions_augment.py: rule-based route on a test lexicon, back-translation with tiny MarianMT models built here."""
import json
import shutil

import pytest

import captions_augment
from utils.preprocess import backtranslation as bt
from utils.preprocess import caption_augment
from utils.preprocess.rule_based import (
    DEFAULT_LEXICON,
    Lexicon,
    LexiconTagger,
    RuleBasedAugmenter,
)

CAPTIONS = {
    ("agricultural", 0): [
        "There is a piece of farmland .",
        "Some trees surrounded the farmland .",
        "A farmland is surrounded by trees .",
        "It is a green farmland .",
        "there is a farmland with trees .",
    ],
    ("river", 1): [
        "A river goes through the trees .",
        "A white picture .",
        "A calm blue picture .",
        "The river is surrounded by trees .",
        "A wide river .",
    ],
}

TEST_LEXICON = {
    "tags": {"there": "EX", "is": "VBZ", "goes": "VBZ"},
    "synonyms": {
        "NN": {"farmland": ["cropland", "field"], "river": ["stream"], "piece": ["patch"]},
        "NNS": {"trees": ["woods"]},
        "VBN": {"surrounded": ["encircled", "enclosed"]},
    },
}


def write_dataset(folder, per_image=5, images_per_class=1):
    images, sentid = [], 0
    for (cls, code), caps in CAPTIONS.items():
        for k in range(images_per_class):
            j = len(images)
            sents = [{"raw": c, "imgid": j, "sentid": sentid + i} for i, c in enumerate(caps[:per_image])]
            sentid += len(sents)
            images.append({"filename": f"{j}.tif", "imgid": j, "classcode": code, "classname": cls,
                           "split": "train", "sentids": [s["sentid"] for s in sents], "sentences": sents})
    data = {"dataset": "UCM", "num_classes": 2, "classes": {"0": "agricultural", "1": "river"}, "images": images}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "UCM.json").write_text(json.dumps(data))
    return data


def run(argv):
    return captions_augment.main(captions_augment.get_args_parser().parse_args(argv))


@pytest.fixture
def lexicon_path(tmp_path):
    path = tmp_path / "lexicon.json"
    path.write_text(json.dumps(TEST_LEXICON))
    return path


def rb_args(data_dir, lexicon_path, *extra):
    return ["--dataset", "ucm", "--data-dir", str(data_dir), "--txt-aug", "rule-based",
            "--route", "lexicon", "--lexicon", str(lexicon_path), "--device", "cpu", *extra]


def read_out(data_dir):
    return json.loads((data_dir / "augmented_UCM.json").read_text())


# ----------------------------------------------------------------------------- rule-based


def test_rule_based_rules_provenance_and_unchanged_share(tmp_path, lexicon_path, capsys):
    data_dir = tmp_path / "d"
    original = write_dataset(data_dir)
    run(rb_args(data_dir, lexicon_path))
    out = read_out(data_dir)
    lex = Lexicon.load(lexicon_path)
    for img_in, img_out in zip(original["images"], out["images"]):
        for s_in, s_out in zip(img_in["sentences"], img_out["sentences"]):
            assert s_out["raw"] == s_in["raw"] and s_out["sentid"] == s_in["sentid"]
            raw, aug = s_in["raw"].split(" "), s_out["aug_rb"].split(" ")
            assert len(raw) == len(aug)
            for k, (a, b) in enumerate(zip(raw, aug)):
                if a == b:
                    continue
                if a.lower() == "there":  # "there is" -> "it is", case kept
                    assert b == ("It" if a == "There" else "it") and raw[k + 1] == "is"
                    continue
                tag = lex.tags[a.lower()]
                assert tag in ("NN", "NNS", "VBN")
                assert b in TEST_LEXICON["synonyms"][tag][a.lower()]  # same-tag candidate only
    first = out["images"][0]["sentences"][0]["aug_rb"]
    assert first.startswith("It is a patch of ") and first.split(" ")[5] in ("cropland", "field")
    assert out["images"][1]["sentences"][1]["aug_rb"] == "A white picture ."

    prov = out["augmentation_provenance"]["aug_rb"]
    assert prov["route"] == "lexicon" and prov["tagger"] == "lexicon" and prov["seed"] == 42
    assert prov["candidates"]["sha256"] == lex.sha256 and prov["input"] == "UCM.json"
    # exactly the two captions without lexicon words stay unchanged: 2 of 10, all in class river
    assert prov["unchanged"]["overall"] == pytest.approx(0.2)
    assert prov["unchanged"]["per_class"] == {"agricultural": 0.0, "river": pytest.approx(0.4)}
    printed = capsys.readouterr().out
    assert "aug_rb: 20.0% of 10 sentences left unchanged" in printed
    assert "river" in printed and "40.0%" in printed and "route lexicon" in printed


def test_rule_based_deterministic_and_seeded(tmp_path, lexicon_path):
    outs = {}
    for name, seed in (("a", "42"), ("b", "42"), ("c", "7")):
        write_dataset(tmp_path / name, images_per_class=4)
        run(rb_args(tmp_path / name, lexicon_path, "--seed", seed))
        outs[name] = [s["aug_rb"] for im in read_out(tmp_path / name)["images"] for s in im["sentences"]]
    assert outs["a"] == outs["b"]
    assert outs["a"] != outs["c"]


def test_refuse_overwrite_then_overwrite(tmp_path, lexicon_path, capsys):
    write_dataset(tmp_path)
    run(rb_args(tmp_path, lexicon_path))
    before = (tmp_path / "augmented_UCM.json").read_text()
    with pytest.raises(SystemExit) as exc:
        run(rb_args(tmp_path, lexicon_path))
    assert exc.value.code == 2
    assert "already has 'aug_rb'" in capsys.readouterr().err
    assert (tmp_path / "augmented_UCM.json").read_text() == before
    run(rb_args(tmp_path, lexicon_path, "--overwrite"))
    assert read_out(tmp_path)["augmentation_provenance"]["aug_rb"]["input"] == "UCM.json"  # rebuilt from the source


def test_augmented_file_is_bound_to_its_source(tmp_path, lexicon_path, capsys):
    """A source edited after augmentation (a split changed) is noticed by every reader of the augmented file;
    --overwrite rebuilds from the source and keeps another key only while the source is the same."""
    from configs.datasets import get_dataset
    from utils.data.dataset_json import load_dataset_json

    write_dataset(tmp_path)
    run(rb_args(tmp_path, lexicon_path))
    out = read_out(tmp_path)
    assert out["source"]["path"] == str((tmp_path / "UCM.json").resolve()) and out["source"]["dataset"] == "ucm"
    # another key, made on the same source, survives a rebuild of aug_rb
    out["images"][0]["sentences"][0]["aug_bt_prob"] = "kept"
    out["augmentation_provenance"]["aug_bt_prob"] = {"method": "backtranslation-prob"}
    (tmp_path / "augmented_UCM.json").write_text(json.dumps(out))
    run(rb_args(tmp_path, lexicon_path, "--overwrite"))
    assert read_out(tmp_path)["images"][0]["sentences"][0]["aug_bt_prob"] == "kept"
    source = json.loads((tmp_path / "UCM.json").read_text())
    source["images"][1]["split"] = "test"  # the user moves an image to test
    (tmp_path / "UCM.json").write_text(json.dumps(source))
    fix = f"python captions_augment.py --dataset ucm --txt-aug rule-based --data-dir {tmp_path} --overwrite"
    with pytest.raises(Exception, match="which has changed since") as err:
        load_dataset_json(tmp_path / "augmented_UCM.json", ds=get_dataset("ucm"))
    assert fix in str(err.value)
    with pytest.raises(SystemExit) as exc:  # adding a key to the stale file is refused the same way
        run(["--dataset", "ucm", "--data-dir", str(tmp_path), "--txt-aug", "backtranslation-prob", "--device", "cpu"])
    assert exc.value.code == 2 and fix in capsys.readouterr().err
    run(rb_args(tmp_path, lexicon_path, "--overwrite"))
    rebuilt = read_out(tmp_path)
    assert rebuilt["images"][1]["split"] == "test" and "aug_bt_prob" not in rebuilt["images"][0]["sentences"][0]
    assert "other augmented captions are not kept" in capsys.readouterr().err
    assert load_dataset_json(tmp_path / "augmented_UCM.json")["images"][1]["split"] == "test"


def test_replacement_must_keep_its_tag_in_the_new_sentence():
    def tagger(words):
        return ["JJ" if w == "wrongtag" else ("NN" if w in ("river", "stream") else "X") for w in words]

    aug = RuleBasedAugmenter(tagger, lambda w, t: ["wrongtag", "stream"])
    assert all(aug("A river here .", i) == "A stream here ." for i in range(20))


def test_bertscore_choice_and_threshold():
    class Scorer:
        def f1(self, ref, cands):
            return [0.9 if "brook" in c else 0.8 for c in cands]

    def tagger(words):
        return ["NN" if w in ("river", "stream", "brook") else "X" for w in words]

    cands = lambda w, t: ["stream", "brook"]  # noqa: E731
    assert RuleBasedAugmenter(tagger, cands, Scorer())("A river .", 0) == "A brook ."
    assert RuleBasedAugmenter(tagger, cands, Scorer(), threshold=0.95)("A river .", 0) == "A river ."


def test_shipped_lexicon_is_consistent_and_keeps_names():
    lex = Lexicon.load(DEFAULT_LEXICON)  # raises if a word form has two tags
    tagger = LexiconTagger(lex.tags, lex.fixed_phrases, lex.clause_openers)
    aug = RuleBasedAugmenter(tagger, lex.candidates)
    out = aug("Many mobile homes arranged in lines in the mobile home park .", 0)
    assert "mobile homes" in out and "mobile home park" in out and "arranged" not in out
    assert aug("There is a piece of farmland .", 0).startswith("It is a ")
    assert aug("Trees and there is a river .", 0).startswith("Trees and it is a ")
    assert " there is in " in aug("A villa and cars parked there is in the area .", 0)  # adverb "there"


def test_missing_json_and_wrong_caption_count(tmp_path, lexicon_path, capsys):
    with pytest.raises(SystemExit):
        run(rb_args(tmp_path, lexicon_path))
    err = capsys.readouterr().err
    assert "UCM.json" in err and "--data-dir" in err
    write_dataset(tmp_path, per_image=4)
    with pytest.raises(SystemExit):
        run(rb_args(tmp_path, lexicon_path))
    assert "4 captions" in capsys.readouterr().err


# ----------------------------------------------------------------------------- back-translation

PAIRS = [("en", "es"), ("es", "en"), ("en", "de"), ("de", "en"), ("es", "de")]
CORPUS = [c for caps in CAPTIONS.values() for c in caps] + [
    "hay un rio en el bosque .", "es una playa con arena blanca .", "ein fluss fliesst durch den wald .",
    "es gibt viele autos auf dem parkplatz .", "un campo verde con arboles .",
]


@pytest.fixture(scope="module")
def mt_dir(tmp_path_factory):
    """Tiny random MarianMT models opus-mt-<src>-<tgt>, with a real sentencepiece vocabulary."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    root = tmp_path_factory.mktemp("mt")
    (root / "corpus.txt").write_text("\n".join(CORPUS * 3))
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "sp"), vocab_size=60, model_type="unigram",
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
    )
    sp = spm.SentencePieceProcessor(model_file=str(root / "sp.model"))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    models = root / "models"
    for n, (src, tgt) in enumerate(PAIRS):
        d = models / bt.model_name(src, tgt)
        d.mkdir(parents=True)
        shutil.copy(root / "sp.model", d / "source.spm")
        shutil.copy(root / "sp.model", d / "target.spm")
        (d / "vocab.json").write_text(json.dumps(vocab))
        MarianTokenizer(str(d / "source.spm"), str(d / "target.spm"), str(d / "vocab.json"),
                        source_lang=src, target_lang=tgt).save_pretrained(d)
        torch.manual_seed(n)
        cfg = MarianConfig(
            vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1, num_beams=1,
        )
        MarianMTModel(cfg).save_pretrained(d)
    return models


def bt_args(data_dir, mt_dir, txt_aug, *extra):
    return ["--dataset", "ucm", "--data-dir", str(data_dir), "--txt-aug", txt_aug, "--mt-model-dir", str(mt_dir),
            "--device", "cpu", "--batch-size", "2", "--max-new-tokens", "6", *extra]


@pytest.fixture
def loads(monkeypatch):
    """Records which translation models are loaded, in order."""
    seen = []
    real = caption_augment.load_translator

    def spy(src, tgt, **kw):
        seen.append((src, tgt))
        return real(src, tgt, **kw)

    monkeypatch.setattr(caption_augment, "load_translator", spy)
    return seen


def test_bt_prob_weights_lowercase_and_accumulate(tmp_path, mt_dir, lexicon_path, loads):
    write_dataset(tmp_path)
    run(rb_args(tmp_path, lexicon_path))
    run(bt_args(tmp_path, mt_dir, "backtranslation-prob", "--bt-langs", "es:1", "de:0"))
    out = read_out(tmp_path)
    assert loads == [("en", "es"), ("es", "en")]  # weight 0: never picked, never loaded
    sents = [s for im in out["images"] for s in im["sentences"]]
    assert all("aug_rb" in s and "aug_bt_prob" in s for s in sents)
    assert all(s["aug_bt_prob"] == s["aug_bt_prob"].lower() for s in sents)
    prov = out["augmentation_provenance"]
    assert set(prov) == {"aug_rb", "aug_bt_prob"}
    assert prov["aug_bt_prob"]["language_counts"] == {"es": 10, "de": 0}
    caches = sorted(p.name for p in (tmp_path / ".cache").iterdir())
    assert caches == ["translations_UCM_opus-mt-en-es.json", "translations_UCM_opus-mt-es-en.json"]


def test_language_draw_is_proportional_and_seeded():
    langs = bt.draw_languages(20000, {"es": 1, "de": 3, "fr": 0}, seed=42)
    assert "fr" not in langs
    assert langs.count("de") / len(langs) == pytest.approx(0.75, abs=0.015)
    assert langs == bt.draw_languages(20000, {"es": 1, "de": 3, "fr": 0}, seed=42)


def test_bt_chain_models_in_order(tmp_path, mt_dir, loads):
    write_dataset(tmp_path)
    run(bt_args(tmp_path, mt_dir, "backtranslation-chain"))
    assert loads == [("en", "es"), ("es", "de"), ("de", "en")]
    out = read_out(tmp_path)
    assert out["augmentation_provenance"]["aug_bt_chain"]["chain"] == ["en", "es", "de", "en"]
    assert all(s["aug_bt_chain"] == s["aug_bt_chain"].lower() for im in out["images"] for s in im["sentences"])
    caches = {p.name for p in (tmp_path / ".cache").iterdir()}
    assert caches == {f"translations_UCM_opus-mt-{p}.json" for p in ("en-es", "es-de", "de-en")}


def test_bt_cache_resume_after_interrupt(tmp_path, mt_dir, monkeypatch):
    write_dataset(tmp_path / "ref")
    run(bt_args(tmp_path / "ref", mt_dir, "backtranslation-chain", "--flush-every", "1"))
    expected = read_out(tmp_path / "ref")

    data_dir = tmp_path / "run"
    write_dataset(data_dir)
    real = bt.MarianTranslator.translate
    calls = []

    def failing(self, texts):
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        calls.append((self.name, list(texts)))
        return real(self, texts)

    monkeypatch.setattr(bt.MarianTranslator, "translate", failing)
    with pytest.raises(RuntimeError, match="injected"):
        run(bt_args(data_dir, mt_dir, "backtranslation-chain", "--flush-every", "1"))
    assert not (data_dir / "augmented_UCM.json").exists()
    cached = json.loads((data_dir / ".cache" / "translations_UCM_opus-mt-en-es.json").read_text())
    assert len(cached["translations"]) == 4  # two batches of two were flushed

    done = []

    def counting(self, texts):
        done.append((self.name, list(texts)))
        return real(self, texts)

    monkeypatch.setattr(bt.MarianTranslator, "translate", counting)
    run(bt_args(data_dir, mt_dir, "backtranslation-chain", "--flush-every", "1"))
    first_model = [t for name, texts in done if name == "opus-mt-en-es" for t in texts]
    assert len(first_model) == 10 - 4 and not set(first_model) & set(cached["translations"])
    got = read_out(data_dir)
    assert [s["aug_bt_chain"] for im in got["images"] for s in im["sentences"]] == [
        s["aug_bt_chain"] for im in expected["images"] for s in im["sentences"]
    ]


def test_missing_model_is_one_clear_error(tmp_path, mt_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_dataset(tmp_path)
    broken = tmp_path / "models"
    (broken / "opus-mt-en-es").mkdir(parents=True)  # present but empty
    with pytest.raises(SystemExit) as exc:
        run(bt_args(tmp_path, broken, "backtranslation-chain"))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Helsinki-NLP/opus-mt-en-es" in err and "huggingface-cli download" in err
    # no local folder at all: the hub name is tried (offline here) and named in the error
    assert bt.resolve_model_ref("en", "fr", mt_dir) == "Helsinki-NLP/opus-mt-en-fr"
    with pytest.raises(SystemExit):
        run(bt_args(tmp_path, mt_dir, "backtranslation-chain", "--bt-chain", "fr"))
    err = capsys.readouterr().err
    assert "Helsinki-NLP/opus-mt-en-fr" in err and "--mt-model-dir" in err


# ----------------------------------------------------------------------------- the original's back-translation


class FakePool:
    """Translates by a visible rule: longer, mixed-case output, so cutting and lower-casing show."""

    def translate(self, texts, src, tgt):
        return [f"{t} [{src.upper()}>{tgt.upper()}] Some Longer Tail Text" for t in texts]


def original_backtranslate(sents, lang_weights, pool):
    """The original's TextAugmenterBacktranslation.backtranslate, transcribed (random.seed(42) in its main)."""
    import random

    import numpy as np

    random.seed(42)
    langs_list, weights = list(lang_weights.keys()), list(lang_weights.values())
    langs = random.choices(langs_list, weights=weights, k=len(sents))
    texts, langs_arr = np.array(sents), np.array(langs)
    idxs = {lang: np.where(langs_arr == lang) for lang in langs_list}
    back = {}
    for lang in langs_list:
        fwd = pool.translate([str(t) for t in texts[idxs[lang]]], "en", lang)
        back[lang] = pool.translate(fwd, lang, "en")
    result = np.zeros_like(sents)
    for lang in langs_list:
        result[idxs[lang]] = np.array(back[lang])
    return [str(s).lower() for s in result], langs


def test_bt_prob_draws_and_cut_as_the_original():
    sents = [c for caps in CAPTIONS.values() for c in caps] * 3
    weights = {"es": 1.0, "de": 2.0, "fr": 0.0}
    expected, expected_langs = original_backtranslate(sents, weights, FakePool())
    got, langs = bt.backtranslate_prob(sents, FakePool(), weights, 42, original_quirks=True)
    assert langs == expected_langs and got == expected
    width = max(len(s) for s in sents)
    assert all(len(g) <= width for g in got) and any(len(g) == width for g in got)  # really cut
    default, _ = bt.backtranslate_prob(sents, FakePool(), weights, 42)
    assert all(d.endswith("some longer tail text") for d in default)  # our default keeps the whole output
    assert [d[:width] for d in default] == got


def test_bt_chain_not_lowercased_in_quirk_mode(tmp_path, monkeypatch):
    class FakeTranslator:
        def __init__(self, src, tgt, **kw):
            self.src, self.tgt, self.ref, self.generation = src, tgt, f"fake/{src}-{tgt}", {}
            self.name = bt.model_name(src, tgt)

        def translate(self, texts):
            return [f"{t} {self.tgt.upper()}" for t in texts]

    monkeypatch.setattr(caption_augment, "load_translator", FakeTranslator)
    write_dataset(tmp_path)
    run(["--dataset", "ucm", "--data-dir", str(tmp_path), "--txt-aug", "backtranslation-chain", "--device", "cpu",
         "--original-quirks"])
    out = read_out(tmp_path)
    first = out["images"][0]["sentences"][0]
    assert first["aug_bt_chain"] == first["raw"] + " ES DE EN"
    assert out["augmentation_provenance"]["aug_bt_chain"]["original_quirks"] is True
    run(["--dataset", "ucm", "--data-dir", str(tmp_path), "--txt-aug", "backtranslation-chain", "--device", "cpu",
         "--overwrite"])
    assert read_out(tmp_path)["images"][0]["sentences"][0]["aug_bt_chain"] == (first["raw"] + " ES DE EN").lower()


@pytest.mark.parametrize("bad", [["es=1"], ["es:x"], ["es", "de;2"]])
def test_bt_langs_syntax_error(tmp_path, capsys, bad):
    write_dataset(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run(["--dataset", "ucm", "--data-dir", str(tmp_path), "--txt-aug", "backtranslation-prob", "--bt-langs", *bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "LANG:WEIGHT" in err and "model" not in err and len(err.strip().splitlines()) == 1


def test_unknown_names_suggest_the_closest(tmp_path, capsys):
    write_dataset(tmp_path)
    for flag, bad, good in (("--route", "glvoe", "glove"), ("--txt-aug", "rule-base", "rule-based")):
        with pytest.raises(SystemExit) as exc:
            run(["--dataset", "ucm", "--data-dir", str(tmp_path), flag, bad])
        assert exc.value.code == 2
        assert f"did you mean {good!r}" in capsys.readouterr().err


def test_interrupt_is_one_line_exit_130_nothing_written(tmp_path, lexicon_path, monkeypatch, capsys):
    write_dataset(tmp_path)

    def interrupted(self, text, index):
        raise KeyboardInterrupt

    monkeypatch.setattr(RuleBasedAugmenter, "__call__", interrupted)
    with pytest.raises(SystemExit) as exc:
        run(rb_args(tmp_path, lexicon_path))
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert err.count("interrupted:") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["UCM.json", "lexicon.json"]


def test_none_caption_is_one_clear_error(tmp_path, lexicon_path, capsys):
    data = write_dataset(tmp_path)
    data["images"][1]["sentences"][2]["raw"] = None
    (tmp_path / "UCM.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit) as exc:
        run(rb_args(tmp_path, lexicon_path))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1.tif" in err and "sentence" in err
    assert not (tmp_path / "augmented_UCM.json").exists()


def test_help_shows_purpose_and_defaults():
    text = captions_augment.get_args_parser().format_help()
    assert captions_augment.PURPOSE in " ".join(text.split())
    for option in ("--batch-size", "--seed", "--route", "--glove-min-sim", "--bt-langs", "--flush-every"):
        block = text.split("options:")[1]
        block = block[block.index(option):]
        assert "(default:" in block[:400], option
