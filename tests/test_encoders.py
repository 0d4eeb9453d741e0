"""Other encoders than the paper's (images_augment.py / captions_embed.py / main.py --encoder) and the float
reference (main.py --method float): tiny random CLIP and SigLIP checkpoints and a torchvision network with
random weights, built here; nothing is downloaded."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import captions_embed
import images_augment
from configs.datasets import get_dataset
from configs.encoders import encoder_tag, image_encoder_kind, text_encoder_of
from configs.files import IMAGE_EMB_KEY, caption_emb_name, image_emb_name, parse_image_emb_name
from models.clip_encoder import build_random_clip, embed_texts, load_clip_checkpoint
from tests.conftest import run_main
from utils.errors import DUCHError
from utils.io import read_h5, read_h5_attrs

DEMO = get_dataset("demo")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """12 demo images with their captions, and a tiny CLIP and a tiny SigLIP checkpoint."""
    from utils.demo.scenes import make_demo_dataset

    root = tmp_path_factory.mktemp("encoders")
    return {"root": root, "data": make_demo_dataset(root / "data", images_per_class=2),
            "clip": build_random_clip(root / "tiny-clip", "clip"),
            "siglip": build_random_clip(root / "tiny-siglip", "siglip")}


def encode_images(data, encoder, *extra, weights=None):
    args = ["--dataset", "demo", "--data-dir", str(data), "--encoder", str(encoder), "--num-workers", "0",
            "--no-progress", "--device", "cpu", "--overwrite", *extra]  # tests share the data folder, in any order
    if weights:
        args += ["--weights", weights]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights
        out = images_augment.main(images_augment.get_args_parser().parse_args(args))
    with h5py.File(out, "r") as f:
        return out, f[IMAGE_EMB_KEY][:], dict(f[IMAGE_EMB_KEY].attrs)


def embed_captions(data, encoder, *extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return captions_embed.main(captions_embed.get_args_parser().parse_args(
            ["--dataset", "demo", "--data-dir", str(data), "--encoder", str(encoder), "--no-progress", "--device",
             "cpu", *extra]))


def test_names_kinds_and_tags(tmp_path):
    assert image_encoder_kind("resnet18") == "paper"
    assert image_encoder_kind("vit_b_16") == "torchvision"
    assert image_encoder_kind("openai/clip-vit-base-patch32") == "checkpoint"
    assert image_encoder_kind(str(tmp_path)) == "checkpoint"
    assert encoder_tag("resnet18") is None and encoder_tag("bert") is None
    assert encoder_tag("openai/clip-vit-base-patch32") == "clip-vit-base-patch32"
    assert encoder_tag(str(tmp_path / "georsclip")) == "georsclip"
    assert text_encoder_of("resnet50", None) == "bert"
    assert text_encoder_of("org/clip", None) == "org/clip"
    assert text_encoder_of("org/clip", "bert") == "bert"
    # the paper's files keep the authors' names; another encoder's never meet them
    assert image_emb_name(DEMO, "aug_center") == "image_emb_DEMO_aug_aug_center.h5"
    assert image_emb_name(DEMO, "aug_center", encoder="resnet50") == "image_emb_DEMO_aug_aug_center.resnet50.h5"
    assert caption_emb_name(DEMO, "aug_rb", "org/clip") == "caption_emb_DEMO_aug_rb.clip.h5"
    assert encoder_tag("weights/rsclip") == encoder_tag("/elsewhere/rsclip/") == "rsclip"  # the name, not the cwd
    assert parse_image_emb_name(DEMO, "image_emb_DEMO_aug_blur_cc_3_3_1.1_1.3.resnet50.h5") == {
        "img_aug": "blur_cc", "blur_val": [3.0, 3.0, 1.1, 1.3], "encoder": "resnet50"}


def test_torchvision_network_with_its_own_preprocessing(setting):
    """A torchvision network loses its last linear layer; its weights enum's transforms follow the set."""
    from torchvision.models import MobileNet_V3_Small_Weights

    from utils.data.images import load_image
    from utils.data.transforms import build_transform

    out, features, attrs = encode_images(setting["data"], "mobilenet_v3_small", "--img-aug", "no_aug",
                                         weights="none")
    assert out.name == "image_emb_DEMO_aug_no_aug.mobilenet_v3_small.h5"
    assert features.shape == (12, 1024) and attrs["width"] == 1024 and attrs["encoder_kind"] == "torchvision"
    assert "crop [224]" in attrs["preprocessing"]
    # the first row by hand: the same random network (seed 42), the enum's preprocessing
    from models.image_encoder import build_torchvision_encoder

    torch.manual_seed(42)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model, _, _, _ = build_torchvision_encoder("mobilenet_v3_small", "none")
    data = json.loads((setting["data"] / "DEMO.json").read_text())
    image = load_image(setting["data"] / "images" / data["images"][0]["filename"])
    x = MobileNet_V3_Small_Weights.DEFAULT.transforms()(image)[None]
    paper = build_transform("no_aug")(image)[None]  # the paper's resize to 224 x 224: another input
    with torch.inference_mode():
        expected, other = model.eval()(x).numpy()[0], model(paper).numpy()[0]
    scale = np.abs(expected).max()  # random weights: tiny activations, so tolerances scale with them
    np.testing.assert_allclose(features[0], expected, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(other - expected).max() > 1e-2 * scale


@pytest.mark.parametrize("encoder", ["mobilenet_v3_small", "clip"])
def test_search_encodes_new_images_and_sentences_as_the_files_were_made(setting, encoder, monkeypatch, tmp_path):
    """The recipes search.py reads from a feature file's attributes give back the file's own rows; a checkpoint
    named by a relative folder is found again from another working folder."""
    from utils.search.encoders import ImageEncoderSpec, TextEncoderSpec

    data = setting["data"]
    name = setting.get(encoder, encoder)
    if encoder == "clip":
        monkeypatch.chdir(setting["root"])
        name = "./tiny-clip"
    out, features, attrs = encode_images(data, name, "--img-aug", "center_crop_only",
                                         weights="none" if encoder != "clip" else None)
    monkeypatch.chdir(tmp_path)
    spec = ImageEncoderSpec.from_attrs(read_h5_attrs(out, IMAGE_EMB_KEY))
    assert spec.encoder == str(name) and spec.width == features.shape[1]
    images = json.loads((data / "DEMO.json").read_text())["images"]
    paths = [data / "images" / images[i]["filename"] for i in (0, 7)]
    again = spec.encode(spec.build("cpu"), paths, "cpu")
    scale = np.abs(features).max()
    np.testing.assert_allclose(again, features[[0, 7]], rtol=1e-4, atol=1e-4 * scale)
    if encoder == "clip":
        written = embed_captions(data, setting["clip"])
        rows = read_h5(written["raw"], "caption_emb")[:2]
        text_spec = TextEncoderSpec.from_attrs(read_h5_attrs(written["raw"], "caption_emb"))
        sentences = [s["raw"] for s in images[0]["sentences"][:2]]
        np.testing.assert_allclose(text_spec.embed(text_spec.load("cpu"), sentences), rows, rtol=1e-4, atol=1e-5)


def test_unknown_torchvision_name_and_paper_only_flags(setting, capsys):
    cases = {("--encoder", "resnet51"): "did you mean 'resnet50'",
             ("--encoder", "mobilenet_v3_small", "--original-quirks"): "does not apply"}
    for extra, expected in cases.items():
        with pytest.raises(SystemExit) as exc:
            images_augment.main(images_augment.get_args_parser().parse_args(
                ["--dataset", "demo", "--data-dir", str(setting["data"]), "--weights", "none", *extra]))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and expected in err


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_checkpoint_image_rows_are_the_projected_vision_embeddings(setting, family):
    out, features, attrs = encode_images(setting["data"], setting[family], "--img-aug", "no_aug")
    checkpoint = load_clip_checkpoint(str(setting[family]), text=False)
    assert out.name == f"image_emb_DEMO_aug_no_aug.tiny-{family}.h5"
    assert features.shape == (12, checkpoint.width) and attrs["encoder_kind"] == "checkpoint"
    from utils.data.images import load_image

    data = json.loads((setting["data"] / "DEMO.json").read_text())
    image = load_image(setting["data"] / "images" / data["images"][3]["filename"])
    pixels = checkpoint.image_processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        output = checkpoint.model.get_image_features(pixel_values=pixels)
    expected = (output if torch.is_tensor(output) else output.pooler_output).numpy()[0]
    np.testing.assert_allclose(features[3], expected, rtol=1e-4, atol=1e-5)


def test_checkpoint_text_follows_the_checkpoint(setting):
    """CLIP: a caption's vector does not depend on its batch mates (padding is masked); SigLIP: captions padded
    to the full length and the last position pooled, as it was trained."""
    clip = load_clip_checkpoint(str(setting["clip"]), images=False)
    texts = ["a river flows through green fields", "many buildings", "x" * 300]
    together = embed_texts(clip, texts, batch_size=3)
    alone = np.concatenate([embed_texts(clip, [t], batch_size=1) for t in texts])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    # a torchrun rank's share: its run of the one-process batches, with their rows
    shares = [embed_texts(clip, texts, batch_size=1, shard=(rank, 2)) for rank in (0, 1)]
    rows = np.concatenate([r for r, _ in shares])
    assert sorted(rows.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(np.concatenate([v for _, v in shares]), alone[rows], rtol=1e-4, atol=1e-5)
    siglip = load_clip_checkpoint(str(setting["siglip"]), images=False)
    assert siglip.pads_to_max_length and siglip.max_tokens == 32
    tokens = siglip.tokenizer(texts[:1], padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        output = siglip.model.get_text_features(input_ids=tokens["input_ids"])
    expected = (output if torch.is_tensor(output) else output.pooler_output).numpy()
    np.testing.assert_allclose(embed_texts(siglip, texts[:1]), expected, rtol=1e-4, atol=1e-5)


def test_missing_or_wrong_checkpoint_is_one_line(setting, tmp_path, capsys, monkeypatch):
    from tests.tiny_bert import save_tiny_bert

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    no_processor = tmp_path / "no-processor"
    no_processor.mkdir()
    (no_processor / "config.json").write_text("{}")
    bert = save_tiny_bert(tmp_path / "bert")
    cases = {str(tmp_path / "absent" / "model"): "does not exist", "someone/not-a-model": "someone/not-a-model",
             str(no_processor): "preprocessor_config.json", str(bert): "not a CLIP-family"}
    for name, expected in cases.items():
        with pytest.raises(DUCHError, match=expected):
            load_clip_checkpoint(name, text=False) if name != str(bert) else load_clip_checkpoint(name, images=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        embed_captions(setting["data"], "someone/not-a-model")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "someone/not-a-model" in err and "\n" not in err and "Traceback" not in err


def test_clip_features_train_test_float_compare_and_search(setting, tmp_path):
    """One checkpoint through every script: features, DUCH, --test, the float reference, the comparison table,
    and a search index that encodes new sentences and images with the same towers."""
    from tests.test_search import run_search
    from utils.train.compare import compare_runs

    data, clip = setting["data"], setting["clip"]
    encode_images(data, clip, "--img-aug", "center_crop_only")
    written = embed_captions(data, clip)
    assert written["raw"].name == "caption_emb_DEMO_aug.tiny-clip.h5"
    runs = tmp_path / "runs"
    common = ["--dataset", "demo", "--preset", "no_aug", "--data-dir", str(data), "--out-dir", str(runs),
              "--encoder", str(clip)]
    run_main(*common, "--bit", "16", "--epochs", "2", "--batch-size", "4", "--valid-freq", "1")
    run_dir = runs / "demo_16_test_no_aug@tiny-clip"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["encoder"] == config["text_encoder"] == str(clip)
    assert config["feature_widths"] == {"image": 16, "caption": 16}
    run_main(*common, "--bit", "16", "--test")
    with pytest.raises(SystemExit):  # the run is bound to its encoders
        run_main(*common[:-2], "--bit", "16", "--test", "--encoder", "resnet50")
    metrics = run_main(*common, "--method", "float")
    float_dir = runs / "float_demo_test_no_aug@tiny-clip"
    assert metrics["float"]["shared_space"] and metrics["float"]["bytes_per_item"] == {"image": 64, "caption": 64}
    assert set(metrics["map@20"]) == {"i2t", "t2i", "i2i", "t2t", "avg"} and metrics["recall"]["index"]["mr"] >= 0
    # the float metrics are those of the cosine engine on the same split's raw features
    from utils.retrieval.cosine import cosine_metrics

    split = json.loads((float_dir / "split.json").read_text())
    images = read_h5(data / "image_emb_DEMO_aug_center_crop_only.tiny-clip.h5", IMAGE_EMB_KEY)
    labels = np.array([i["classcode"] for i in json.loads((data / "DEMO.json").read_text())["images"]])
    q, db = split["query"], split["db"]
    direct = cosine_metrics(images[q], images[db], labels[q], labels[db])
    assert metrics["map@20"]["i2i"] == pytest.approx(direct["map@20"], abs=1e-12)
    compare = compare_runs([run_dir, float_dir], tmp_path / "compare")
    table = (tmp_path / "compare" / "compare_demo.md").read_text()
    assert "| duch @tiny-clip |" in table and "float @tiny-clip (float32, 128 B/item)" in table
    assert "16 bits 2 B" in table and compare["figures"]
    run_search("index", "--run", run_dir, "--no-progress")
    manifest = json.loads((run_dir / "index" / "manifest.json").read_text())
    assert manifest["encoders"]["image"]["encoder"] == str(clip) and manifest["encoders"]["image"]["width"] == 16
    assert manifest["encoders"]["text"]["encoder"] == str(clip)
    text = run_search("query", "--index", run_dir / "index", "--text", "a river", "-k", "3", "--quiet")[0]
    image = run_search("query", "--index", run_dir / "index", "--image", sorted((data / "images").iterdir())[0],
                       "-k", "3", "--quiet")[0]
    assert len(text["results"]) == 3 and len(image["results"]) == 3
    # the service encodes a sentence with the same tower: the same answer as the command line
    from tests.test_serve import Served
    from utils.search.server import SearchService, create_app

    service = SearchService(run_dir / "index", "cpu")
    server = Served(service, create_app(service))
    try:
        status, answer = server.get("/api/search", text="a river", target="images", k=3)
        described = server.get("/api/index")[1]["encoders"]
    finally:
        server.stop()
    assert status == 200 and answer == json.loads(json.dumps(text))
    assert described["image"]["encoder"] == described["text"]["encoder"] == str(clip)


def test_grid_scores_the_float_reference_once_for_every_bit_length(setting, tmp_path):
    data, clip = setting["data"], setting["clip"]
    encode_images(data, clip, "--img-aug", "center_crop_only")
    embed_captions(data, clip)
    argv = ["--dataset", "demo", "--preset", "no_aug", "--data-dir", str(data), "--out-dir", str(tmp_path),
            "--encoder", str(clip), "--method", "duch", "float", "--bit", "8", "16", "--epochs", "1",
            "--batch-size", "4"]
    first = run_main(*argv)
    assert sorted(Path(run).name for run in first["runs"]) == [
        "demo_16_test_no_aug@tiny-clip", "demo_8_test_no_aug@tiny-clip", "float_demo_test_no_aug@tiny-clip"]
    assert set(run_main(*argv)["runs"].values()) == {"finished"}  # nothing scored or trained again
    table = (tmp_path / "compare_test_no_aug_demo.md").read_text()
    float_row = next(line for line in table.splitlines() if line.startswith("| float @tiny-clip"))
    assert float_row.count(" / ") == 2  # the same reference in the 8-bit and the 16-bit column


def test_float_reference_of_two_spaces_reports_unimodal_directions(setting, tmp_path):
    """ResNet18 images with CLIP captions: no shared space, so I->T and T->I are n/a and no recall is claimed."""
    data = setting["data"]
    encode_images(data, "resnet18", "--img-aug", "center_crop_only", weights="none")
    embed_captions(data, setting["clip"])
    metrics = run_main("--dataset", "demo", "--preset", "no_aug", "--data-dir", str(data), "--out-dir",
                       str(tmp_path), "--text-encoder", str(setting["clip"]), "--method", "float")
    assert metrics["map@20"]["i2t"] is None and metrics["map@20"]["avg"] is None
    assert metrics["map@20"]["i2i"] is not None and isinstance(metrics["recall"], str)
    assert (tmp_path / "float_demo_test_no_aug@resnet18+tiny-clip" / "metrics.json").is_file()


def test_cosine_engine_equals_the_hamming_engine_on_codes():
    """On +-1 codes of 4, 16 and 64 bits (whose cosines are exact) cosine ranks are Hamming ranks, ties and all:
    every figure of the float engine equals the counting engine's."""
    from utils.retrieval.cosine import cosine_metrics, cosine_recall
    from utils.retrieval.metrics import retrieval_metrics
    from utils.retrieval.recall import instance_recall

    rng = np.random.default_rng(0)
    for bits, n_q, n_db in ((4, 20, 100), (16, 50, 300), (64, 30, 1500)):
        q = np.where(rng.random((n_q, bits)) < 0.5, -1, 1).astype(np.float32)
        db = np.where(rng.random((n_db, bits)) < 0.5, -1, 1).astype(np.float32)
        for q_lab, db_lab in ((rng.integers(0, 5, n_q), rng.integers(0, 5, n_db)),
                              ((rng.random((n_q, 4)) < 0.4).astype(int), (rng.random((n_db, 4)) < 0.4).astype(int))):
            ours = cosine_metrics(q, db, q_lab, db_lab, map_ks=(20, 10, 1200))
            theirs = retrieval_metrics(q, db, q_lab, db_lab, map_ks=(20, 10, 1200))
            for key in ("map@20", "map@10", "map@1200", "map_cut@20", "map_cut@1200", "chance"):
                assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key
            assert ours["p@k"] == pytest.approx(theirs["p@k"], abs=1e-12)
        images = db[:60]
        captions = np.repeat(images, 5, axis=0) * np.where(rng.random((300, bits)) < 0.2, -1, 1)
        owner = np.repeat(np.arange(60), 5)
        ours, theirs = cosine_recall(images, captions, owner), instance_recall(images, captions, owner)
        for form in ("index", "tie_aware"):
            for direction in ("i2t", "t2i"):
                assert ours[form][direction] == pytest.approx(theirs[form][direction], abs=1e-9)
            assert ours[form]["mr"] == pytest.approx(theirs[form]["mr"], abs=1e-9)
