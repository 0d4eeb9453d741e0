"""Values that cannot be right are refused at the door (configs/checks.py, configs/train.py check_values, and the
checks of each entry point), a loss that turns non-finite stops the run naming epoch and term, and the lexicon
caption augmentation is linear in caption length."""
import json
import time

import numpy as np
import pytest

from configs.checks import SEED_MAX, check_finite, check_int, check_seed
from tests.conftest import run_main
from utils.errors import DUCHError

RUN = "demo_8_test_default"


def test_check_helpers():
    for bad in (float("nan"), float("inf"), -float("inf"), "1", None, True):
        with pytest.raises(DUCHError):
            check_finite("--alpha", bad, 0.0)
    with pytest.raises(DUCHError, match="at least 0"):
        check_finite("--alpha", -1.0, 0.0)
    assert check_finite("--alpha", 0, 0.0) == 0.0
    for bad in (-1, SEED_MAX + 1, 1.5, "3", True):
        with pytest.raises(DUCHError, match="--seed"):
            check_seed(bad)
    assert check_seed(0) == 0 and check_seed(SEED_MAX) == SEED_MAX
    with pytest.raises(DUCHError, match="--batch-size must be at least 1, got 0"):
        check_int("--batch-size", 0, 1)


@pytest.mark.parametrize("flags,message", [
    (["--alpha", "nan"], "--alpha must be a finite number"),
    (["--gamma", "inf"], "--gamma must be a finite number"),
    (["--beta", "-1"], "--beta must be at least 0"),
    (["--contrastive-weights", "1", "nan", "1"], "--contrastive-weights (number 2)"),
    (["--tau", "1e-9"], "--tau must be at least 0.02"),
    (["--batch-size", "0"], "--batch-size must be at least"),
    (["--seed", "-1"], "--seed must be in 0..4294967295"),
    (["--seed", str(2 ** 32)], "--seed must be in 0..4294967295"),
    (["--device", "mps"], "--device 'mps': use auto, cpu, cuda or cuda:N"),
    (["--device", "xpu"], "--device 'xpu'"),
    (["--device", "meta"], "--device 'meta'"),
])
def test_main_refuses_values_at_the_door(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run_main("--dataset", "demo", "--data-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path / "runs"), *flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_resolve_device_refuses_devices_the_project_cannot_use():
    from utils.runtime import resolve_device

    for name in ("mps", "xpu", "meta", "nonsense"):
        with pytest.raises(DUCHError, match="--device"):
            resolve_device(name)
    assert resolve_device("cpu").type == "cpu"


def test_hand_edited_config_json_is_named(demo_features, tmp_path, capsys):
    out = tmp_path / "runs"
    run_main("--dataset", "demo", "--bit", "8", "--data-dir", str(demo_features), "--out-dir", str(out),
             "--epochs", "1",
             "--batch-size", "32")
    path = out / RUN / "config.json"
    config = json.loads(path.read_text())
    capsys.readouterr()
    cases = (("batch_size", "64", "--batch-size must be an integer"), ("alpha", "0.1", "--alpha must be a number"),
             ("contrastive_weights", 1, "contrastive_weights must be a list"), ("seed", -5, "--seed"))
    for key, value, message in cases:
        path.write_text(json.dumps({**config, key: value}))
        with pytest.raises(SystemExit) as exit_info:
            run_main("--dataset", "demo", "--bit", "8", "--out-dir", str(out), "--test")
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_non_finite_loss_stops_the_run_naming_epoch_and_term(demo_features, tmp_path, monkeypatch, capsys):
    from utils.train.trainer import DUCHTrainer

    real = DUCHTrainer.train_epoch

    def nan_in_epoch_2(self, epoch):
        sums = real(self, epoch)
        return {**sums, "quantization": float("nan")} if epoch == 1 else sums

    monkeypatch.setattr(DUCHTrainer, "train_epoch", nan_in_epoch_2)
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_main("--dataset", "demo", "--bit", "8", "--data-dir", str(demo_features), "--out-dir", str(out),
                 "--epochs", "3",
                 "--batch-size", "32")
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "epoch 2: the quantization loss is nan" in err
    history = [json.loads(line) for line in (out / RUN / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1]  # the saved state is the last finite epoch


def test_bit_length_that_cannot_fit_says_what_it_needs():
    import torch

    from configs.train import TrainConfig
    from utils.train.runner import check_model_fits

    with pytest.raises(DUCHError, match=r"--bit 10000000: the networks would need about [0-9.]+ GiB"):
        check_model_fits(TrainConfig(bit=10_000_000), {"image": 512, "caption": 768}, torch.device("cpu"))
    check_model_fits(TrainConfig(bit=64), {"image": 512, "caption": 768}, torch.device("cpu"))


def test_standardisation_overflow_is_refused():
    from utils.data.features import standardise
    from utils.search.encoders import FeatureStats

    huge = np.random.default_rng(0).normal(size=(2000, 64)).astype(np.float32) * np.float32(1e18)
    with pytest.raises(DUCHError, match="too large to standardise"):
        standardise(huge)
    with pytest.raises(DUCHError, match="too large to standardise"):
        FeatureStats.of(huge)
    ordinary = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    assert abs(float(standardise(ordinary).std()) - 1) < 1e-5


def test_crop_larger_than_the_image_is_refused(tmp_path):
    from PIL import Image

    from utils.data.images import check_images_readable

    path = tmp_path / "small.png"
    Image.new("RGB", (120, 150), (1, 2, 3)).save(path)
    with pytest.raises(DUCHError, match=r"small.png is 150x120 \(HxW\), smaller than --crop-size 200 200"):
        check_images_readable([path], crop_size=(200, 200))
    assert check_images_readable([path], crop_size=(150, 120))


def test_images_augment_batch_size_0_is_refused_not_replaced(tmp_path):
    from utils.preprocess.image_features import ImageFeatureOptions, encode_images

    with pytest.raises(DUCHError, match="--batch-size must be >= 1"):
        encode_images(ImageFeatureOptions(dataset="demo", data_dir=str(tmp_path), batch_size=0))
    with pytest.raises(DUCHError, match="--seed must be in"):
        encode_images(ImageFeatureOptions(dataset="demo", data_dir=str(tmp_path), seed=-1))


def test_search_door_checks(tmp_path):
    from utils.search.index import check_text_model_exists
    from utils.search.query import require_text

    for text in ("", "   ", "?!.,", " . . "):
        with pytest.raises(DUCHError, match="empty text query"):
            require_text(text)
    require_text("a river.")
    for name in (str(tmp_path / "nonexistent"), "./nope", "no-such-org/no-such-model-xyz"):
        with pytest.raises(DUCHError, match="--text-model"):
            check_text_model_exists(name)
    check_text_model_exists(str(tmp_path))  # an existing folder is accepted here (loaded at the first query)


def test_nprobe_and_map_k_at_the_door(tiny_run, capsys):
    import evaluate as evaluate_script
    import search

    with pytest.raises(SystemExit) as exit_info:
        search.main(search.get_args_parser().parse_args(
            ["query", "--index", str(tiny_run["index"]), "--row", "0", "--modality", "image", "--nprobe", "0"]))
    assert exit_info.value.code == 2 and "--nprobe must be 1..65536" in capsys.readouterr().err
    from utils.retrieval.metrics import check_map_ks

    with pytest.raises(DUCHError, match="at most"):
        check_map_ks([10 ** 18])
    with pytest.raises(SystemExit):
        evaluate_script.main(evaluate_script.get_args_parser().parse_args(["--codes", "x.npz", "--map-k", "0"]))


# ------------------------------------------------------------------------------ the hang: linear augmentation

def test_lexicon_augmentation_is_linear_in_caption_length():
    from utils.preprocess.rule_based import LexiconTagger, build_augmenter

    augment = build_augmenter("lexicon")[0]
    sentence = "there is a large green field next to a river with many buildings and some cars parked there . "

    def seconds(n_words):
        text = " ".join((sentence * (n_words // 19 + 1)).split()[:n_words])
        start = time.perf_counter()
        augment(text, 0)
        return time.perf_counter() - start

    seconds(200)  # warm up
    small, large = seconds(1000), seconds(10000)
    assert large < 20 * small + 0.5, (small, large)  # 10x the words: about 10x the time (quadratic would be 100x)
    tagger = augment.tagger
    assert isinstance(tagger, LexiconTagger)
    words = sentence.split() * 3
    assert [tagger.tag_at(words, i) for i in range(len(words))] == tagger(words)  # the window gives the same tags


def test_whole_sentence_tagger_has_a_named_limit():
    from utils.preprocess.rule_based import MAX_WORDS_WHOLE_SENTENCE_TAGGER, RuleBasedAugmenter

    augment = RuleBasedAugmenter(tagger=lambda words: ["NN"] * len(words), candidates=lambda w, t: [])
    with pytest.raises(DUCHError, match=f"limited to {MAX_WORDS_WHOLE_SENTENCE_TAGGER} tokens"):
        augment("word " * (MAX_WORDS_WHOLE_SENTENCE_TAGGER + 1), 7)
