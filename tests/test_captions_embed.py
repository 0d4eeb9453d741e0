"""captions_embed.py and models/text_encoder.py, offline, with a tiny random BERT."""
from __future__ import annotations

import json
import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch

import captions_embed
from models import text_encoder
from models.text_encoder import embed_captions, load_text_model, preprocess_caption
from tests.tiny_bert import save_tiny_bert
from utils.errors import DUCHError
from utils.preprocess import caption_features

# 3 images x 5 captions of varied length; "A Farm." (row 0) and "a farm" (row 7) must embed alike
CAPTIONS = [
    ["A Farm.", "there is a piece of farmland", "green fields near a road!", "many trees", "a farm with two houses"],
    ["a river with water", "some houses near the river , and trees", "a farm", "Is it a beach?", "the sea"],
    ["many cars in a parking lot", "a plane", "two planes near the runway of an airport", "roads", "white car ."],
]
NUM_LAYERS = 4  # tiny model: 5 hidden states (embeddings + 4 layers)
HIDDEN = 32


def make_json(path, with_aug: bool = True, counts=(5, 5, 5)):
    images = []
    for j, (caps, n) in enumerate(zip(CAPTIONS, counts)):
        sentences = []
        for i, raw in enumerate(caps[:n]):
            sentence = {"raw": raw, "imgid": j, "sentid": 5 * j + i}
            if with_aug:
                sentence["aug_rb"] = "it is " + raw
            sentences.append(sentence)
        images.append({"filename": f"{j + 1}.tif", "imgid": j, "classcode": j, "classname": f"c{j}",
                       "split": "train", "sentids": list(range(5 * j, 5 * j + n)), "sentences": sentences})
    path.write_text(json.dumps({"dataset": "UCM", "images": images}), encoding="utf-8")
    return path


def flat(key="raw"):
    return [("it is " + c if key == "aug_rb" else c) for caps in CAPTIONS for c in caps]


def run_main(argv):
    return captions_embed.main(captions_embed.get_args_parser().parse_args(argv))


def read(path):
    with h5py.File(path, "r") as f:
        dset = f["caption_emb"]
        return dset[()], dict(dset.attrs), dset.dtype


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_layers=NUM_LAYERS)


@pytest.fixture(scope="session")
def text_model(tiny_bert_dir):
    return load_text_model(str(tiny_bert_dir), "cpu")


def reference(text_model, texts, k=4, quirk=False, max_length=64):
    """Straightforward computation: one caption at a time (default) or fixed 64-token padding (quirk)."""
    tok, model = text_model.tokenizer, text_model.model
    rows = []
    with torch.no_grad():
        if quirk:
            enc = tok([preprocess_caption(t) for t in texts], padding="max_length", max_length=max_length,
                      truncation=True, return_tensors="pt")
            assert enc["input_ids"].shape[1] == max_length
            hs = model(**enc, output_hidden_states=True).hidden_states
            return torch.stack(hs[-k:]).sum(0).mean(dim=1).numpy()
        for t in texts:
            enc = tok([preprocess_caption(t)], truncation=True, max_length=max_length, return_tensors="pt")
            hs = model(**enc, output_hidden_states=True).hidden_states
            rows.append(torch.stack(hs[-k:]).sum(0).mean(dim=1)[0].numpy())
    return np.stack(rows)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, tiny_bert_dir):
    """Default mode end to end: UCM.json without, augmented_UCM.json with an aug_rb key."""
    data_dir = tmp_path_factory.mktemp("data_default")
    make_json(data_dir / "UCM.json", with_aug=False)
    make_json(data_dir / "augmented_UCM.json", with_aug=True)
    outputs = run_main(["--data-dir", str(data_dir), "--model", str(tiny_bert_dir), "--device", "cpu",
                        "--batch-size", "4", "--no-progress"])
    return data_dir, outputs


def test_preprocess_caption():
    assert preprocess_caption("There is A Farm, here! Ok? yes.") == "there is a farm here ok yes"
    assert preprocess_caption("it's a road-side") == "it's a road-side"  # only . , ! ? are removed


def test_end_to_end_files_shapes_and_provenance(default_run):
    data_dir, outputs = default_run
    # augmented JSON preferred over UCM.json: its aug_rb set is embedded; absent sets are not
    assert sorted(p.name for p in outputs.values()) == ["caption_emb_UCM_aug.h5", "caption_emb_UCM_aug_rb.h5"]
    assert sorted(p.name for p in data_dir.glob("caption_emb_*")) == sorted(p.name for p in outputs.values())
    assert not list(data_dir.glob(".*.tmp"))
    for key in ("raw", "aug_rb"):
        emb, attrs, dtype = read(outputs[key])
        assert emb.shape == (15, HIDDEN) and dtype == np.float32
        assert np.isfinite(emb).all()
        assert attrs["sentence_key"] == key and attrs["operator"] == "sum"
        assert attrs["hidden_states"] == 4 and attrs["max_length"] == 64 and attrs["original_quirks"] == 0
        assert "attention mask" in attrs["pooling"]
        assert attrs["source_json"].endswith("augmented_UCM.json")
    raw, _, _ = read(outputs["raw"])
    rb, _, _ = read(outputs["aug_rb"])
    assert np.abs(raw - rb).max() > 1e-3  # different sentences, different vectors


def test_random_weights_are_recorded_and_warned_about(default_run, tiny_bert_dir, tmp_path):
    """A model whose config.json says its weights are random gives caption files that say so, which main.py
    warns about; the same model without that line gives files that do not."""
    from utils.data.features import random_encoder_warning

    _, outputs = default_run
    _, attrs, _ = read(outputs["raw"])
    assert bool(attrs["random_weights"]) is True
    assert "RANDOM weights" in random_encoder_warning(outputs["raw"], "caption_emb")
    unmarked = tmp_path / "bert"
    shutil.copytree(tiny_bert_dir, unmarked)
    config = json.loads((unmarked / "config.json").read_text())
    del config["duch_random_weights"]
    (unmarked / "config.json").write_text(json.dumps(config))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    make_json(data_dir / "UCM.json", with_aug=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-weights warning
        out = run_main(["--data-dir", str(data_dir), "--model", str(unmarked), "--device", "cpu", "--no-progress"])
    _, attrs, _ = read(out["raw"])
    assert bool(attrs["random_weights"]) is False and random_encoder_warning(out["raw"], "caption_emb") is None
    with pytest.warns(UserWarning, match="RANDOM weights"):
        run_main(["--data-dir", str(data_dir), "--model", str(tiny_bert_dir), "--device", "cpu", "--no-progress",
                  "--overwrite"])


def test_rows_in_json_order_and_match_reference(default_run, text_model):
    """Row 5*j+i is sentence i of image j, equal to a one-caption-at-a-time reference."""
    _, outputs = default_run
    emb, _, _ = read(outputs["raw"])
    np.testing.assert_allclose(emb, reference(text_model, flat("raw")), rtol=1e-5, atol=1e-5)
    rb, _, _ = read(outputs["aug_rb"])
    np.testing.assert_allclose(rb, reference(text_model, flat("aug_rb")), rtol=1e-5, atol=1e-5)


def test_preprocessing_really_applied(default_run, text_model):
    _, outputs = default_run
    emb, _, _ = read(outputs["raw"])
    assert CAPTIONS[0][0] == "A Farm." and CAPTIONS[1][2] == "a farm"
    np.testing.assert_allclose(emb[0], emb[7], rtol=1e-6, atol=1e-6)
    # without the punctuation removal the two would differ ("." is a token of its own)
    tok, model = text_model.tokenizer, text_model.model
    with torch.no_grad():
        enc = tok(["A Farm."], return_tensors="pt")
        unprocessed = torch.stack(model(**enc, output_hidden_states=True).hidden_states[-4:]).sum(0).mean(1)[0]
    assert np.abs(unprocessed.numpy() - emb[7]).max() > 1e-3


def test_per_batch_padding_equals_fixed_padding(text_model):
    texts = flat("raw") + flat("aug_rb")
    per_batch = embed_captions(text_model, texts, batch_size=4, progress=False)
    unsorted = embed_captions(text_model, texts, batch_size=4, sort_by_length=False, progress=False)
    fixed = embed_captions(text_model, texts, batch_size=4, pad_to_max_length=True, sort_by_length=False,
                           progress=False)
    np.testing.assert_allclose(per_batch, fixed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(unsorted, fixed, rtol=1e-5, atol=1e-5)
    assert np.abs(fixed).max() > 0.1  # not trivially zero


def test_sum_concat_and_hidden_states_count(text_model):
    texts = flat("raw")[:6]
    concat = embed_captions(text_model, texts, hidden_states=3, operator="concat", progress=False)
    summed = embed_captions(text_model, texts, hidden_states=3, operator="sum", progress=False)
    last = embed_captions(text_model, texts, hidden_states=1, progress=False)
    assert concat.shape == (6, 3 * HIDDEN) and summed.shape == (6, HIDDEN)
    blocks = concat.reshape(6, 3, HIDDEN)
    # concat keeps the last 3 hidden states in order; sum is their sum; k=1 is the very last one
    np.testing.assert_allclose(blocks.sum(1), summed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blocks[:, -1], last, rtol=1e-5, atol=1e-5)
    all_five = embed_captions(text_model, texts, hidden_states=NUM_LAYERS + 1, operator="concat", progress=False)
    np.testing.assert_allclose(all_five[:, -3 * HIDDEN:], concat, rtol=1e-5, atol=1e-5)
    assert np.abs(all_five[:, :HIDDEN] - blocks[:, 0]).max() > 1e-3
    with pytest.raises(DUCHError, match="hidden states"):
        embed_captions(text_model, texts, hidden_states=NUM_LAYERS + 2, progress=False)


def test_concat_width_through_cli(tmp_path, tiny_bert_dir):
    make_json(tmp_path / "UCM.json", with_aug=False)
    outputs = run_main(["--data-dir", str(tmp_path), "--model", str(tiny_bert_dir), "--device", "cpu",
                        "--operator", "concat", "--hidden-states", "2", "--no-progress"])
    assert list(outputs) == ["raw"]  # no augmented set in this JSON
    emb, attrs, _ = read(outputs["raw"])
    assert emb.shape == (15, 2 * HIDDEN) and attrs["operator"] == "concat"


def test_quirk_mode_matches_reference_and_differs(tmp_path, tiny_bert_dir, text_model, default_run):
    make_json(tmp_path / "augmented_UCM.json", with_aug=True)
    outputs = run_main(["--data-dir", str(tmp_path), "--model", str(tiny_bert_dir), "--device", "cpu",
                        "--original-quirks", "--batch-size", "4", "--no-progress"])
    quirk, attrs, _ = read(outputs["raw"])
    assert attrs["original_quirks"] == 1 and "padding included" in attrs["pooling"]
    np.testing.assert_allclose(quirk, reference(text_model, flat("raw"), quirk=True), rtol=1e-5, atol=1e-5)
    default, _, _ = read(default_run[1]["raw"])
    assert np.abs(quirk - default).max() > 1e-2


def test_refuses_overwrite_before_work(tmp_path, capsys):
    make_json(tmp_path / "augmented_UCM.json", with_aug=True)
    blocker = tmp_path / "caption_emb_UCM_aug_rb.h5"
    blocker.write_bytes(b"mine")
    # the model does not exist either: refusing happens first, before loading anything
    with pytest.raises(SystemExit) as exc:
        run_main(["--data-dir", str(tmp_path), "--model", str(tmp_path / "no_model"), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and "--overwrite" in err and "caption_emb_UCM_aug.h5" not in err
    assert blocker.read_bytes() == b"mine"
    assert not (tmp_path / "caption_emb_UCM_aug.h5").exists()


def test_overwrite_replaces(tmp_path, tiny_bert_dir):
    make_json(tmp_path / "UCM.json", with_aug=False)
    target = tmp_path / "caption_emb_UCM_aug.h5"
    target.write_bytes(b"old")
    run_main(["--data-dir", str(tmp_path), "--model", str(tiny_bert_dir), "--device", "cpu",
              "--overwrite", "--no-progress"])
    assert read(target)[0].shape == (15, HIDDEN)


def test_missing_local_model_gets_no_download_hint(tmp_path, capsys, monkeypatch):
    make_json(tmp_path / "UCM.json", with_aug=False)
    missing = tmp_path / "no_such_model"
    with pytest.raises(SystemExit) as exc:
        run_main(["--data-dir", str(tmp_path), "--model", str(missing), "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: text model folder") and str(missing) in err and "does not exist" in err
    assert "download" not in err and "Traceback" not in err and len(err.splitlines()) == 1
    # a relative path whose parent folder exists is a path too, not a hub name
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DUCHError, match="does not exist") as exc:
        load_text_model("models/bert-base-uncased")
    assert "download" not in str(exc.value)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(DUCHError, match="empty_dir has no config.json"):
        load_text_model(str(empty))


def test_folder_without_tokenizer_is_named_clearly(tmp_path, tiny_bert_dir):
    import shutil

    folder = tmp_path / "no_tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert_dir / name, folder / name)
    # transformers would build an empty tokenizer here and turn every word into [UNK]
    with pytest.raises(DUCHError, match="holds no tokenizer files"):
        load_text_model(str(folder))
    # a fast-tokenizer class without tokenizer.json: transformers' multi-line "Couldn't instantiate the backend
    # tokenizer" message, whole, on one line, naming the folder
    shutil.copy(tiny_bert_dir / "vocab.txt", folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    with pytest.raises(DUCHError) as exc:
        load_text_model(str(folder))
    msg = str(exc.value)
    assert "no_tokenizer" in msg and "\n" not in msg and "tokenizer.json" in msg
    assert "to a fast one." in msg  # not cut off


def test_max_length_beyond_positions(tmp_path, tiny_bert_dir, capsys):
    make_json(tmp_path / "UCM.json", with_aug=False)
    with pytest.raises(SystemExit) as exc:
        run_main(["--data-dir", str(tmp_path), "--model", str(tiny_bert_dir), "--device", "cpu",
                  "--max-length", "500", "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' own loading bar
    assert err.startswith("error: --max-length 500") and "128" in err
    assert not list(tmp_path.glob("caption_emb_*"))


def test_none_caption_refused_before_loading(tmp_path, capsys):
    path = make_json(tmp_path / "UCM.json", with_aug=False)
    data = json.loads(path.read_text())
    data["images"][2]["sentences"][1]["raw"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as exc:
        run_main(["--data-dir", str(tmp_path), "--model", str(tmp_path / "not_loaded")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3.tif" in err and "sentence" in err and "not_loaded" not in err


def test_per_set_resume_after_interrupt(tmp_path, tiny_bert_dir, monkeypatch, capsys):
    make_json(tmp_path / "augmented_UCM.json", with_aug=True)
    argv = ["--data-dir", str(tmp_path), "--model", str(tiny_bert_dir), "--device", "cpu", "--no-progress"]
    real = caption_features.embed_captions
    calls = []

    def interrupted_after_first(text_model, texts, **kw):
        calls.append(kw["desc"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(text_model, texts, **kw)

    monkeypatch.setattr(caption_features, "embed_captions", interrupted_after_first)
    with pytest.raises(SystemExit) as exc:
        run_main(argv)
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert err.count("interrupted:") == 1 and "Traceback" not in err and "aug_rb" in err
    raw_file, rb_file = tmp_path / "caption_emb_UCM_aug.h5", tmp_path / "caption_emb_UCM_aug_rb.h5"
    assert raw_file.is_file() and not rb_file.exists() and not list(tmp_path.glob(".*.tmp"))
    raw_bytes = raw_file.read_bytes()

    calls.clear()
    monkeypatch.setattr(caption_features, "embed_captions", lambda tm, texts,
                        **kw: calls.append(kw["desc"]) or real(tm, texts, **kw))
    run_main(argv)  # resumes: only the missing set
    assert calls == ["embed aug_rb"] and raw_file.read_bytes() == raw_bytes
    assert "kept" in capsys.readouterr().out
    calls.clear()
    run_main(argv)  # nothing left
    assert calls == []
    run_main(argv + ["--overwrite"])  # recomputes every set
    assert calls == ["embed raw", "embed aug_rb"]
    np.testing.assert_allclose(read(rb_file)[0], reference(read(rb_file)[0] is not None and load_text_model(
        str(tiny_bert_dir)), flat("aug_rb")), rtol=1e-5, atol=1e-5)
    # a kept file must have been made with the same settings
    with pytest.raises(SystemExit) as exc:
        run_main(argv + ["--hidden-states", "2"])
    assert exc.value.code == 2
    assert "hidden_states 4 (now 2)" in capsys.readouterr().err


def test_help_shows_purpose_and_defaults():
    text = captions_embed.get_args_parser().format_help()
    assert captions_embed.PURPOSE in " ".join(text.split())
    options = text.split("options:")[1]
    for option in ("--model", "--max-length", "--hidden-states", "--operator", "--batch-size", "--device"):
        assert "(default:" in options[options.index(option):][:300], option


def test_uncached_hub_model_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DUCHError, match="duch-tests/not-a-cached-model.*download it once with network"):
        load_text_model("duch-tests/not-a-cached-model")


def test_unknown_model_name_suggests_the_closest(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DUCHError, match="did you mean 'bert-base-uncased'"):
        load_text_model("bert-base-uncasd")


def test_missing_json(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_main(["--data-dir", str(tmp_path), "--model", "unused"])
    err = capsys.readouterr().err
    assert "UCM.json" in err and "augmented_UCM.json" in err and "--data-dir" in err


def test_caption_count_other_than_five(tmp_path, capsys):
    make_json(tmp_path / "UCM.json", counts=(5, 4, 5))
    with pytest.raises(SystemExit):
        run_main(["--data-dir", str(tmp_path), "--model", "unused"])
    err = capsys.readouterr().err
    assert "image 1" in err and "4 captions" in err and "exactly 5" in err


def test_offline_demo_text_model(monkeypatch, tmp_path):
    import importlib.util

    package = tmp_path / "site" / text_encoder.DEMO_TEXT_PACKAGE
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location(text_encoder.DEMO_TEXT_PACKAGE, package / "__init__.py")
    monkeypatch.setattr(text_encoder.importlib.util, "find_spec",
                        lambda name: spec if name == text_encoder.DEMO_TEXT_PACKAGE else None)
    for name in ("config.json", "vocab.txt"):
        (package / "model" / name).write_text("{}")
    assert text_encoder.offline_demo_text_model() is None  # no weights file yet
    (package / "model" / "model.safetensors").write_bytes(b"")
    assert text_encoder.offline_demo_text_model() == (package / "model").resolve()
    (package / "model" / "vocab.txt").unlink()
    assert text_encoder.offline_demo_text_model() is None
    monkeypatch.setattr(text_encoder.importlib.util, "find_spec", lambda name: None)  # package not installed
    assert text_encoder.offline_demo_text_model() is None


@pytest.mark.parametrize("name,is_path", [
    ("bert-base-uncased", False), ("sentence-transformers/all-MiniLM-L6-v2", False),  # hub ids
    ("models/bert/base", True), ("./bert", True), ("~/bert", True), ("/opt/bert", True), ("C:\\bert", True),
])
def test_model_names_that_can_only_be_folders(name, is_path):
    assert text_encoder._looks_like_path(name) is is_path
