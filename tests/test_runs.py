"""Runs you can trust: --test and --resume bound to the run's config.json, warnings, provenance, file modes,
the folded last batch, other encoders' widths, names in any case, tau, fix-it commands and plots."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from configs.datasets import get_dataset
from configs.train import TrainConfig
from tests.conftest import SMALL, run_main
from tests.test_main import _copy_features, expect_error, train_args
from utils.data.splits import make_split
from utils.demo.synthetic import make_synthetic_features

ROOT = Path(__file__).resolve().parents[1]
RUN = "demo_8_test_default"


@pytest.fixture(scope="module")
def seeded_run(demo_features, tmp_path_factory):
    """A 2-epoch run trained with --seed 7 (not the default) on a copy of the demo features."""
    base = tmp_path_factory.mktemp("seeded")
    data = _copy_features(demo_features, base / "data")
    out = base / "runs"
    metrics = run_main(*train_args(data, out, "--seed", "7", "--epochs", "2", "--valid-freq", "1"))
    return data, out, out / RUN, metrics


# ---- 1. --test and --resume are bound to the run ----------------------------------------------------
def test_test_uses_the_runs_seed_and_data_dir(seeded_run):
    data, out, run_dir, metrics = seeded_run
    split = (run_dir / "split.json").read_text()
    # no --seed typed: the run's seed 7 is used (the default 42 would split the data differently)
    again = run_main(*train_args(data, out, "--test", "--epochs", "2", "--valid-freq", "1"))
    assert again["map@20"] == metrics["map@20"]
    assert (run_dir / "split.json").read_text() == split
    codes = np.load(run_dir / "codes.npz")
    assert codes["q_rows"].tolist() == json.loads(split)["query"]


def test_test_without_data_dir_reads_it_from_config(tmp_path, monkeypatch):
    data = tmp_path / "elsewhere"
    make_synthetic_features(get_dataset("ucm"), data, n_images=30, image_dim=16, caption_dim=24)
    out = tmp_path / "runs"
    common = ("--dataset", "ucm", "--bit", "8", "--epochs", "1", "--batch-size", "8", "--out-dir", str(out))
    metrics = run_main(*common, "--data-dir", str(data))
    monkeypatch.chdir(tmp_path)  # the default data/ does not exist here
    assert run_main(*common, "--test")["map@20"] == metrics["map@20"]


def test_test_refuses_flags_that_contradict_the_run(seeded_run, capsys):
    data, out, run_dir, _ = seeded_run
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.json")}
    err = expect_error(capsys, *train_args(data, out, "--test", "--seed", "42"),
                       match="--seed 42 contradicts the run's --seed 7")
    assert err.count("\n") == 1 and "config.json" in err
    expect_error(capsys, *train_args(data, out, "--test", "--seed", "7", "--original-quirks"),
                 match="--original-quirks contradicts the run's no --original-quirks")
    other = _copy_features(data, data.parent / "other_data")
    expect_error(capsys, *train_args(other, out, "--test", "--seed", "7"), match="--data-dir")
    expect_error(capsys, *train_args(data, out, "--test", "--seed", "7", "--alpha", "0.5"),
                 match="--alpha 0.5 contradicts")
    expect_error(capsys, *train_args(data, out, "--test", "--resume"), match="cannot be combined with --resume")
    assert {p.name: p.read_bytes() for p in run_dir.glob("*.json")} == before  # nothing overwritten


def test_checkpoint_last_results_go_to_files_that_say_so(seeded_run):
    data, out, run_dir, _ = seeded_run
    best = (run_dir / "metrics.json").read_bytes()
    metrics = run_main(*train_args(data, out, "--test", "--checkpoint", "last", "--seed", "7", "--epochs", "2",
                                   "--valid-freq", "1"))
    assert (run_dir / "metrics.json").read_bytes() == best
    saved = json.loads((run_dir / "metrics_last.json").read_text())
    assert saved["model"] == {"checkpoint": "checkpoint_last.pt", "epoch": 2} == metrics["model"]
    for name in ("codes_last.npz", "pr_curves_last.png", "p_at_k_last.png", "test_last.log", "test_config_last.json"):
        assert (run_dir / name).is_file(), name


def test_resume_may_only_raise_epochs_and_records_it(demo_features, tmp_path, capsys):
    out = tmp_path / "runs"
    run_main(*train_args(demo_features, out, "--epochs", "2"))
    run_dir = out / RUN
    config = (run_dir / "config.json").read_bytes()
    expect_error(capsys, *train_args(demo_features, out, "--resume", "--epochs", "1"),
                 match="--resume can only raise that")
    expect_error(capsys, *train_args(demo_features, out, "--resume", "--epochs", "3", "--batch-size", "16"),
                 match="--batch-size 16 contradicts the run's --batch-size 32")
    expect_error(capsys, *train_args(demo_features, out, "--resume", "--overwrite"), match="pass one of them")
    assert (run_dir / "config.json").read_bytes() == config  # never rewritten by a refused resume
    # --resume with only the flags that name the run: the rest comes from config.json
    run_main("--dataset", "demo", "--bit", "8", "--data-dir", str(demo_features), "--out-dir", str(out), "--resume",
             "--epochs", "3")
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["epochs"] == 3 and saved["batch_size"] == 32
    assert saved["resumed"][0]["epochs"] == [2, 3] and saved["resumed"][0]["after_epoch"] == 2
    assert [json.loads(x)["epoch"] for x in (run_dir / "history.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert "--epochs raised from 2 to 3" in capsys.readouterr().out


def test_interrupted_overwrite_keeps_the_previous_run_whole(demo_features, tmp_path, monkeypatch):
    from utils.train.trainer import DUCHTrainer

    out = tmp_path / "runs"
    run_main(*train_args(demo_features, out, "--epochs", "1"))
    (out / RUN / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in (out / RUN).iterdir()}
    original = DUCHTrainer.train_epoch

    def interrupted(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(DUCHTrainer, "train_epoch", interrupted)
    with pytest.raises(SystemExit):
        run_main(*train_args(demo_features, out, "--epochs", "1", "--overwrite"))
    monkeypatch.setattr(DUCHTrainer, "train_epoch", original)
    assert {p.name: p.read_bytes() for p in (out / RUN).iterdir()} == before  # the new run never took its place
    assert sorted(p.name for p in out.iterdir()) == [RUN]  # no staging folder, no lock left


# ---- 3. the last batch of one sample is folded into the one before -----------------------------------
def test_last_batch_of_one_sample_is_trained(demo_features):
    from utils.train.run_data import RunData
    from utils.train.trainer import DUCHTrainer, batch_indices

    assert [len(b) for b in batch_indices(torch.arange(61), 20)] == [20, 20, 21]
    assert [len(b) for b in batch_indices(torch.arange(60), 20)] == [20, 20, 20]
    assert [len(b) for b in batch_indices(torch.arange(7), 20)] == [7]
    cfg = TrainConfig(dataset="demo", data_dir=str(demo_features), bit=8, batch_size=59, epochs=1)  # 60 train images
    torch.manual_seed(0)
    data = RunData(cfg, torch.device("cpu"))
    trainer = DUCHTrainer(cfg, data.train_views, data.query, data.db, torch.device("cpu"))
    trainer.train_epoch(0)
    for view, buffer in trainer.buffers.items():
        assert (buffer.abs().sum(dim=1) > 0).all(), view  # every sample's outputs were computed
    assert (trainer.B != 0).all()


# ---- 4. other encoders: any width per modality; mismatches refused -----------------------------------
def test_checkpoint_of_other_widths_is_refused(demo_features, tmp_path, capsys):
    data = _copy_features(demo_features, tmp_path / "data")
    run_main(*train_args(data, tmp_path / "o", "--epochs", "1"))
    n = SMALL["n_images"]
    rng = np.random.default_rng(0)
    for name in ("caption_emb_DEMO_aug.h5", "caption_emb_DEMO_aug_rb.h5"):  # re-embedded with another text model
        with h5py.File(data / name, "w") as f:
            f.create_dataset("caption_emb", data=rng.normal(size=(5 * n, 12)).astype(np.float32))
    expect_error(capsys, *train_args(data, tmp_path / "o", "--test", "--epochs", "1"),
                 match="input files changed since it was made")
    config_path = tmp_path / "o" / RUN / "config.json"  # a run recorded before fingerprints: the widths still tell
    config = json.loads(config_path.read_text())
    del config["inputs"]
    config_path.write_text(json.dumps(config))
    expect_error(capsys, *train_args(data, tmp_path / "o", "--test", "--epochs", "1"),
                 match="was trained on features of width 24/40")
    with h5py.File(data / "caption_emb_DEMO_aug_rb.h5", "w") as f:
        f.create_dataset("caption_emb", data=rng.normal(size=(5 * n, 13)).astype(np.float32))
    expect_error(capsys, *train_args(data, tmp_path / "p", "--epochs", "1"),
                 match="both views of a modality must come from the same encoder")


# ---- 5. file modes, no stray folders -------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    from utils.io import write_h5, write_json
    from utils.train.checkpoints import save_checkpoint

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_h5(tmp_path / "b.h5", "k", np.ones((2, 2)))
        save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(1)})
    finally:
        os.umask(old)
    for name in ("a.json", "b.h5", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_run_files_are_readable_by_the_group(seeded_run):
    _, _, run_dir, _ = seeded_run
    for name in ("config.json", "metrics.json", "codes.npz", "checkpoint_best.pt", "pr_curves.png"):
        assert (run_dir / name).stat().st_mode & 0o044 == 0o044, name


def test_mistyped_data_dir_and_failed_training_leave_nothing(demo_features, tmp_path, capsys):
    out = tmp_path / "runs"
    expect_error(capsys, *train_args(tmp_path / "dta", out), match="does not exist")
    assert not (tmp_path / "dta").exists() and not out.exists()
    data = _copy_features(demo_features, tmp_path / "data")
    (data / "image_emb_DEMO_aug_aug_center.h5").unlink()
    expect_error(capsys, *train_args(data, out), match="image_emb_DEMO_aug_aug_center.h5")
    assert not out.exists()  # neither the run folder nor the out-dir made for it
    out.mkdir()
    expect_error(capsys, *train_args(data, out), match="image_emb_DEMO_aug_aug_center.h5")
    assert out.is_dir() and not any(out.iterdir())


def test_fewer_than_ten_images(tmp_path, capsys):
    make_synthetic_features(get_dataset("demo"), tmp_path, n_images=8, n_classes=2, image_dim=8, caption_dim=8)
    expect_error(capsys, *train_args(tmp_path, tmp_path / "o"), match="8 images; training and testing need at least 10")


# ---- 6. warnings in the console and config.json --------------------------------------------------
def test_warnings(demo_features, tmp_path, capsys):
    data = _copy_features(demo_features, tmp_path / "data")
    split = make_split(SMALL["n_images"], 42)
    meta = json.loads((data / "augmented_DEMO.json").read_text())
    lonely = SMALL["n_classes"]  # a class of its own for every query: nothing in the database is relevant
    for j in split.query:
        meta["images"][j]["classcode"] = lonely
    meta["num_classes"] = lonely + 1
    (data / "augmented_DEMO.json").write_text(json.dumps(meta))
    with h5py.File(data / "image_emb_DEMO_aug_center_crop_only.h5", "a") as f:
        f["image_emb"].attrs["weights"] = "none (random initialisation)"  # as images_augment.py --weights none writes
    run_main("--dataset", "demo", "--data-dir", str(data), "--out-dir", str(tmp_path / "o"), "--bit", "12", "--epochs",
             "1", "--batch-size", "500")
    out = capsys.readouterr().out
    warnings = json.loads((tmp_path / "o" / "demo_12_test_default" / "config.json").read_text())["warnings"]
    expected = ("--bit 12 is not a multiple of 8", "--batch-size 500 is larger than the 60 training images",
                "no query has a relevant database item",
                "image_emb_DEMO_aug_center_crop_only.h5 was made by an encoder with RANDOM weights")
    for text in expected:
        assert any(text in w for w in warnings), text
        assert text in out, text
    assert json.loads((tmp_path / "o" / "demo_12_test_default" / "metrics.json").read_text())["warnings"] == warnings


def test_demo_random_text_encoder_is_read_from_its_record(tmp_path):
    from utils.data.features import random_encoder_warning

    path = tmp_path / "caption_emb_DEMO_aug.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("caption_emb", data=np.ones((2, 2), np.float32)).attrs["model"] = "/d/models/random-bert"
    assert random_encoder_warning(path, "caption_emb") is None
    (tmp_path / "demo_encoders.json").write_text(json.dumps({"text_model": "/d/models/random-bert",
                                                             "text_source": "random tiny BERT"}))
    assert "RANDOM weights" in random_encoder_warning(path, "caption_emb")


def test_bit_below_eight_warns():
    from utils.train.run_data import run_warnings

    class Data:  # only what run_warnings reads
        split = make_split(40, 42)
        features = type("F", (), {"labels": np.arange(40) % 2, "warnings": []})

    assert any("--bit 4 is below 8" in w for w in run_warnings(TrainConfig(bit=4, batch_size=8), Data))
    assert run_warnings(TrainConfig(bit=16, batch_size=8), Data) == []


# ---- 7. provenance: rows in codes.npz, command line and commit, one log line per epoch ---------------
def test_provenance_and_one_based_epochs(seeded_run):
    data, out, run_dir, metrics = seeded_run
    split = json.loads((run_dir / "split.json").read_text())
    codes = np.load(run_dir / "codes.npz")
    assert codes["q_rows"].tolist() == split["query"] and codes["db_rows"].tolist() == split["db"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["argv"] == list(sys.argv) and "git_commit" in config
    if (ROOT / ".git").exists():
        assert config["git_commit"] and len(config["git_commit"].split("-")[0]) == 40
    lines = [line for line in (run_dir / "train.log").read_text().splitlines() if ": loss total " in line]
    assert len(lines) == 2 and "epoch 1/2: loss total" in lines[0] and "epoch 2/2" in lines[1]
    assert "x adversarial" in lines[0] and "lr 0.0001" in lines[0] and lines[0].endswith(" s")
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    best = torch.load(run_dir / "checkpoint_best.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    assert [h["epoch"] for h in history] == [1, 2] and last["epoch"] == 2
    assert metrics["model"]["epoch"] == best["epoch"] in (1, 2)


# ---- 8. plots --------------------------------------------------------------------------------------
def assert_drawn_png(path: Path, min_size=(500, 400)):
    """A real plot: decodes, is at least ``min_size`` pixels, and is not one colour."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape[1] >= min_size[0] and pixels.shape[0] >= min_size[1], (path.name, pixels.shape)
    assert (pixels < 128).mean() > 0.005 and (pixels > 200).mean() > 0.5, path.name  # dark lines on white


@pytest.mark.render_plots
def test_a_run_renders_its_plots(demo_features, tmp_path):
    """One epoch (one point per curve) and the --checkpoint last test: every PNG is drawn."""
    out = tmp_path / "o"
    run_main(*train_args(demo_features, out, "--epochs", "1"))
    run_main(*train_args(demo_features, out, "--epochs", "1", "--test", "--checkpoint", "last"))
    names = ("pr_curves", "p_at_k", "losses", "pr_curves_last", "p_at_k_last")
    for name in names:
        assert_drawn_png(out / RUN / f"{name}.png")
    assert {p.stem for p in (out / RUN).glob("*.png")} == set(names)


@pytest.mark.render_plots
def test_plots_show_chance_and_weighted_losses(seeded_run, tmp_path):
    from utils.train.plots import plot_losses, plot_p_at_k, plot_pr_curves

    _, _, run_dir, _ = seeded_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    for plot in (plot_pr_curves, plot_p_at_k):
        labels = plot(metrics, tmp_path / "x.png")
        assert {"I->T", "T->I", "I->I", "T->T"} <= set(labels) and any(label.startswith("chance") for label in labels)
        assert_drawn_png(tmp_path / "x.png")
    labels = plot_losses(history, tmp_path / "l.png",
                         weights={"adversarial": 0.01, "quantization": 0.001, "bit_balance": 0.01})
    assert_drawn_png(tmp_path / "l.png")
    assert labels[0].startswith("total = L_c + alpha L_adv") and "alpha L_adv (x 0.01)" in labels
    assert "discriminator loss (own optimiser, not in total)" in labels


# ---- 9. names in any case, closest-name suggestions, tau ----------------------------------------------
def test_names_in_any_case(demo_features, tmp_path):
    run_main("--dataset", "DEMO", "--preset", "Default", "--model", "DUCH", "--bit", "8", "--epochs", "1",
             "--batch-size", "32",
             "--data-dir", str(demo_features), "--out-dir", str(tmp_path))
    assert json.loads((tmp_path / RUN / "config.json").read_text())["model"] == "duch"


def test_unknown_names_suggest_the_closest(tmp_path, capsys):
    expect_error(capsys, "--dataset", "ucn", "--out-dir", str(tmp_path),
                 match="unknown dataset 'ucn' (did you mean 'ucm'?)")
    expect_error(capsys, "--dataset", "demo", "--preset", "defualt", "--out-dir", str(tmp_path),
                 match="(did you mean 'default'?)")
    expect_error(capsys, "--dataset", "demo", "--model", "duhc", "--out-dir", str(tmp_path),
                 match="(did you mean 'duch'?)")


def test_tau_reaches_the_contrastive_loss(demo_features, monkeypatch):
    from utils.train import losses
    from utils.train.run_data import RunData
    from utils.train.trainer import DUCHTrainer

    torch.manual_seed(0)
    a, b, c, d = (torch.randn(6, 8) for _ in range(4))
    at_one = losses.ntxent(a, c) + losses.ntxent(a, b) + losses.ntxent(c, d)
    assert torch.equal(losses.contrastive_loss(a, b, c, d), at_one)  # tau = 1: the original's formula, unchanged
    half = losses.contrastive_loss(a, b, c, d, tau=0.5)
    assert torch.allclose(half, losses.ntxent(a, c, 0.5) + losses.ntxent(a, b, 0.5) + losses.ntxent(c, d, 0.5))
    assert not torch.allclose(half, at_one)
    seen = []
    original = losses.contrastive_loss
    monkeypatch.setattr(losses, "contrastive_loss", lambda *args: seen.append(args[-1]) or original(*args))
    cfg = TrainConfig(dataset="demo", data_dir=str(demo_features), bit=8, batch_size=32, tau=0.3)
    data = RunData(cfg, torch.device("cpu"))
    DUCHTrainer(cfg, data.train_views, data.query, data.db, torch.device("cpu")).train_epoch(0)
    assert seen and set(seen) == {0.3}


# ---- 10. fix-it commands keep the user's folders ----------------------------------------------------
def test_fix_it_commands_keep_data_dir_and_out_dir(demo_features, tmp_path, capsys):
    from configs import files

    ucm = get_dataset("ucm")
    assert files.image_emb_command(ucm, "aug_center") == "python images_augment.py --dataset ucm --img-aug aug_center"
    assert files.image_emb_command(ucm, "aug_center",
                                   "data") == "python images_augment.py --dataset ucm --img-aug aug_center"
    assert files.caption_emb_command(ucm, "aug_rb", "/my data").count("--data-dir '/my data'") == 2
    assert files.image_emb_command(ucm, "rotation_cc", "/d",
                                   rot_deg=(-10, -5)).endswith("--rot-deg -10 -5 --data-dir /d")
    assert files.image_emb_command_for_file(ucm, "/d/image_emb_UCM_aug_jitter_cc_1.0.h5",
                                            data_dir="/d").endswith("--jit-str 1.0 --data-dir /d")
    data = _copy_features(demo_features, tmp_path / "mine")
    (data / "caption_emb_DEMO_aug_rb.h5").unlink()
    err = expect_error(capsys, *train_args(data, tmp_path / "o"), match="caption_emb_DEMO_aug_rb.h5")
    assert f"captions_augment.py --dataset demo --txt-aug rule-based --data-dir {data}" in err
    assert f"captions_embed.py --dataset demo --data-dir {data}" in err
    err = expect_error(capsys, *train_args(data, tmp_path / "o", "--test"), match="no trained model")
    assert f"--data-dir {data}" in err and f"--out-dir {tmp_path / 'o'}" in err


# ---- 11. --help ---------------------------------------------------------------------------------
def test_help_shows_purpose_and_defaults():
    proc = subprocess.run([sys.executable, "main.py", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    assert "DUCH: train (default) or test (--test)" in proc.stdout
    import main

    for action in main.get_args_parser()._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), action.dest


def test_test_refuses_when_the_runs_files_resolve_elsewhere(demo_features, tmp_path, monkeypatch, capsys):
    data = _copy_features(demo_features, tmp_path / "data")
    (data / "mine.h5").write_bytes((data / "image_emb_DEMO_aug_aug_center.h5").read_bytes())
    monkeypatch.chdir(data)  # a relative --img-aug-emb found in the working folder
    argv = train_args(data, tmp_path / "o", "--epochs", "1", "--img-aug-emb", "mine.h5")
    run_main(*argv)
    monkeypatch.chdir(tmp_path)  # now the same name means <data-dir>/mine.h5 ... which is the same file
    run_main(*argv, "--test")
    (data / "other").mkdir()
    (data / "other" / "mine.h5").write_bytes((data / "mine.h5").read_bytes())
    monkeypatch.chdir(data / "other")  # and here another file of that name
    expect_error(capsys, *argv, "--test", match="now resolve to other files (image_aug:")


def test_interrupt_before_the_first_epoch_leaves_nothing(demo_features, tmp_path, monkeypatch, capsys):
    from utils.train import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "RunData", interrupted)
    with pytest.raises(SystemExit) as exc:
        run_main(*train_args(demo_features, tmp_path / "o"))
    assert exc.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_overwrite_with_bad_data_keeps_the_old_run(demo_features, tmp_path, capsys):
    data = _copy_features(demo_features, tmp_path / "data")
    out = tmp_path / "runs"
    run_main(*train_args(data, out, "--epochs", "1"))
    (data / "caption_emb_DEMO_aug.h5").unlink()
    expect_error(capsys, *train_args(data, out, "--epochs", "1", "--overwrite"), match="caption_emb_DEMO_aug.h5")
    assert (out / RUN / "checkpoint_best.pt").is_file() and (out / RUN / "metrics.json").is_file()
