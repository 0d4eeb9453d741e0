"""main.py end to end: run folder contents, --test, --resume, and every bad input at the door."""
import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from configs.datasets import get_dataset
from tests.conftest import SMALL, run_main
from utils.demo.synthetic import make_synthetic_features

TRAIN = ("--dataset", "demo", "--bit", "8", "--epochs", "3", "--batch-size", "32", "--valid-freq", "2")


def train_args(data_dir, out_dir, *extra):
    return (*TRAIN, "--data-dir", str(data_dir), "--out-dir", str(out_dir), *extra)


@pytest.fixture(scope="module")
def trained(demo_features, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    metrics = run_main(*train_args(demo_features, out))
    return out / "demo_8_test_default", metrics


def test_run_folder_contents(trained):
    run_dir, metrics = trained
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "split.json", "history.jsonl", "checkpoint_best.pt", "checkpoint_last.pt", "metrics.json",
            "codes.npz", "pr_curves.png", "p_at_k.png", "losses.png", "train.log"} <= names
    config = json.loads((run_dir / "config.json").read_text())
    assert config["bit"] == 8 and config["seed"] == 42 and config["original_quirks"] is False
    assert config["resolved_device"] == "cpu" and "torch" in config["versions"]
    assert config["files"]["caption_aug"].endswith("caption_emb_DEMO_aug_rb.h5")
    split = json.loads((run_dir / "split.json").read_text())
    n = SMALL["n_images"]
    assert len(split["train"]) == n // 2 and len(split["query"]) + len(split["db"]) == n - n // 2
    assert len(split["train_captions"]) == len(split["train"]) and len(split["db_captions"]) == len(split["db"])
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # 1-based, as in the log and metrics.json
    assert set(history[0]["loss"]) == {"total", "contrastive", "adversarial", "quantization", "bit_balance",
                                       "discriminator"}
    assert "valid" in history[1] and "valid" in history[2] and "valid" not in history[0]
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        payload = torch.load(run_dir / name, weights_only=True)
        assert payload["bit"] == 8
    saved = json.loads((run_dir / "metrics.json").read_text())
    for k in ("map@20", "map@10"):
        assert set(saved[k]) == {"i2t", "t2i", "i2i", "t2t", "avg"}
        assert saved[k]["avg"] == pytest.approx(np.mean([saved[k][d] for d in ("i2t", "t2i", "i2i", "t2t")]))
    assert set(saved["p@k"]["i2t"])
    assert len(saved["precision_radius"]["t2i"]) == 9 and len(saved["recall_radius"]["i2i"]) == 9
    codes = np.load(run_dir / "codes.npz")
    assert codes["q_img"].dtype == np.int8 and codes["q_img"].shape == (len(split["query"]), 8)
    assert codes["db_txt"].shape == (len(split["db"]), 8) and set(np.unique(codes["db_txt"])) <= {-1, 1}
    assert codes["q_labels"].shape == (len(split["query"]),)
    # class-structured features: far above chance after three epochs
    assert metrics["map@20"]["avg"] > 2 * np.mean(list(metrics["chance"].values()))


def test_test_mode_reproduces_metrics(trained, demo_features, capsys):
    run_dir, metrics = trained
    again = run_main(*train_args(demo_features, run_dir.parent, "--test"))
    assert again["map@20"] == metrics["map@20"] and again["map@10"] == metrics["map@10"]
    out = capsys.readouterr().out
    assert "I->T" in out and "T->T" in out and "chance" in out


def test_resume_gives_the_same_codes(demo_features, tmp_path, monkeypatch):
    from utils.train.trainer import DUCHTrainer

    schedule = ("--epochs", "4", "--valid-freq", "3")
    full = tmp_path / "full"
    run_main(*train_args(demo_features, full, *schedule))
    original_epoch = DUCHTrainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original_epoch(self, epoch)

    part = tmp_path / "part"
    monkeypatch.setattr(DUCHTrainer, "train_epoch", interrupted)
    with pytest.raises(SystemExit) as exc:  # Ctrl-C: a message saying how to resume, exit 130
        run_main(*train_args(demo_features, part, *schedule))
    assert exc.value.code == 130
    monkeypatch.setattr(DUCHTrainer, "train_epoch", original_epoch)
    run_dir = part / "demo_8_test_default"
    state = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    assert (state["epoch"], state["best_epoch"]) == (3, 3)  # three finished epochs, the third validated (1-based)
    with pytest.raises(SystemExit):  # refuses to start over without --resume or --overwrite
        run_main(*train_args(demo_features, part, *schedule))
    run_main(*train_args(demo_features, part, *schedule, "--resume"))
    a, b = np.load(full / "demo_8_test_default" / "codes.npz"), np.load(run_dir / "codes.npz")
    for key in ("q_img", "q_txt", "db_img", "db_txt"):
        assert np.array_equal(a[key], b[key])
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]
    # docs/method.md: validation every valid_freq epochs and at the last; the best epoch survives the resume
    assert [record["epoch"] for record in history if "valid" in record] == [3, 4]
    best = [re.findall(r"best epoch (\d+)",
                       (d / "train.log").read_text())[-1] for d in (full / "demo_8_test_default", run_dir)]
    assert best[0] == best[1]


def expect_error(capsys, *argv, match):
    with pytest.raises(SystemExit) as exc:
        run_main(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert match in err, err
    return err


def _copy_features(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for p in Path(src).iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_missing_feature_file_names_file_and_command(demo_features, tmp_path, capsys):
    data = _copy_features(demo_features, tmp_path / "data")
    (data / "caption_emb_DEMO_aug_rb.h5").unlink()
    err = expect_error(capsys, *train_args(data, tmp_path / "out"), match="caption_emb_DEMO_aug_rb.h5")
    assert "captions_augment.py --dataset demo --txt-aug rule-based" in err and "captions_embed.py" in err
    (data / "image_emb_DEMO_aug_center_crop_only.h5").unlink()
    expect_error(capsys, *train_args(data, tmp_path / "out"),
                 match="images_augment.py --dataset demo --img-aug center_crop_only")


def test_missing_json(tmp_path, capsys):
    expect_error(capsys, *train_args(tmp_path, tmp_path / "out"), match="augmented_DEMO.json")


def _write(path, key, array):
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array)


def test_row_mismatch_width_and_nan(demo_features, tmp_path, capsys):
    data = _copy_features(demo_features, tmp_path / "data")
    n = SMALL["n_images"]
    _write(data / "caption_emb_DEMO_aug.h5", "caption_emb", np.ones((n, SMALL["caption_dim"]), np.float32))
    expect_error(capsys, *train_args(data, tmp_path / "o"), match=f"{n} rows")
    _write(data / "caption_emb_DEMO_aug.h5", "caption_emb",
           np.random.rand(5 * n, SMALL["caption_dim"] + 1).astype(np.float32))
    expect_error(capsys, *train_args(data, tmp_path / "o"), match="width")
    bad = np.random.rand(5 * n, SMALL["caption_dim"]).astype(np.float32)
    bad[3, 1] = np.nan
    _write(data / "caption_emb_DEMO_aug.h5", "caption_emb", bad)
    expect_error(capsys, *train_args(data, tmp_path / "o"), match="NaN or inf")


def test_ucm_trains_on_other_encoder_widths_and_records_them(tmp_path, capsys):
    make_synthetic_features(get_dataset("ucm"), tmp_path, n_images=42, image_dim=100, caption_dim=384)
    run_main("--dataset", "ucm", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"), "--epochs", "1",
             "--batch-size", "8", "--bit", "8")
    config = json.loads((tmp_path / "o" / "ucm_8_test_default" / "config.json").read_text())
    assert config["feature_widths"] == {"image": 100, "caption": 384}
    assert "not the 768 of the paper's BERT-base" in capsys.readouterr().out


def test_unknown_dataset_preset_model(tmp_path, capsys):
    expect_error(capsys, "--dataset", "mnist", "--out-dir", str(tmp_path), match="unknown dataset 'mnist'")
    expect_error(capsys, "--dataset", "demo", "--preset", "fancy", "--out-dir", str(tmp_path),
                 match="unknown preset 'fancy'")
    expect_error(capsys, "--dataset", "demo", "--model", "jdsh", "--out-dir", str(tmp_path),
                 match="unknown model 'jdsh'")


def test_test_without_model_and_with_other_bits(trained, demo_features, tmp_path, capsys):
    expect_error(capsys, *train_args(demo_features, tmp_path, "--test"), match="no trained model")
    run_dir, _ = trained
    argv = [a if a != "8" else "16" for a in train_args(demo_features, tmp_path, "--test")]
    other = tmp_path / "demo_16_test_default"  # a run folder holding another run's 8-bit checkpoint
    other.mkdir()
    (other / "checkpoint_best.pt").write_bytes((run_dir / "checkpoint_best.pt").read_bytes())
    expect_error(capsys, *argv, match="has no config.json")
    config = json.loads((run_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "bit": 16}))
    expect_error(capsys, *argv, match="8-bit model but the run is set to 16 bits")


def test_out_dir_not_writable(demo_features, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    expect_error(capsys, *train_args(demo_features, blocker / "runs"), match="not writable")


def test_cli_prints_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "main.py", "--dataset", "nope", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error: unknown dataset 'nope'")


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    from utils.train.checkpoints import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})

    def killed_mid_write(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]  # no temporary left behind


def test_checkpoint_with_pickled_objects_is_refused(tmp_path, capsys):
    from utils.errors import DUCHError
    from utils.train.checkpoints import load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"obj": Path("x")}, path)  # an arbitrary Python object needs full unpickling
    with pytest.raises(DUCHError, match="weights_only"):
        load_checkpoint(path)


def test_original_quirks_run_never_reads_the_augmented_captions(demo_features, tmp_path):
    data = _copy_features(demo_features, tmp_path / "data")
    (data / "caption_emb_DEMO_aug_rb.h5").unlink()  # txt2 = txt1: the file is not needed
    run_main(*train_args(data, tmp_path / "out", "--original-quirks", "--epochs", "1"))
    config = json.loads((tmp_path / "out" / "demo_8_test_default" / "config.json").read_text())
    assert config["original_quirks"] is True
