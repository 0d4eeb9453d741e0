"""DJSRH and JDSH as the DUCH authors ran them: similarity matrices on hand-worked cases, one training step
against a reference written here from the formulas (tiny networks, float64), resume, --test and search's
loader on a baseline run, the grid (skip, resume) and the comparison table on fixed metrics."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from configs.baselines import method_params
from configs.published import published
from configs.train import TrainConfig
from tests.conftest import run_main
from utils.train import losses_djsrh, losses_jdsh
from utils.train.trainer_baselines import BaselineTrainer, full_batches

SQ2 = math.sqrt(2.0)
# two items: images orthogonal, captions at 45 degrees
IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
TXT = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)


# ---- similarity matrices, by hand -------------------------------------------------------------------
def test_djsrh_similarity_hand_worked():
    # S_I = [[1, -1], [-1, 1]], S_T = [[1, c], [c, 1]] with c = 2 cos 45 - 1 = sqrt2 - 1; beta = 1/2:
    # S~ off-diagonal a = (sqrt2 - 2) / 2, diagonal 1; eta = 1/2, n = 2, mu = 2: S = S~ + S~ S~^T / 2
    # diagonal 1 + (1 + a^2) / 2 = 9/4 - sqrt2/2, off-diagonal a + a = sqrt2 - 2
    S = losses_djsrh.similarity(IMG, TXT, beta=0.5, eta=0.5, mu=2.0)
    expected = torch.tensor([[2.25 - SQ2 / 2, SQ2 - 2], [SQ2 - 2, 2.25 - SQ2 / 2]], dtype=torch.float64)
    assert torch.allclose(S, expected, atol=1e-12)
    # beta weighs the image side: beta = 1 leaves S_I alone (eta = 0, mu = 1)
    assert torch.allclose(
        losses_djsrh.similarity(IMG, TXT, 1.0, 0.0, 1.0), torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    )


def test_jdsh_similarity_hand_worked():
    # rows of S_I normalised: (1, -1)/sqrt2, (-1, 1)/sqrt2; of S_T: (1, c)/|.|, (c, 1)/|.|, c = sqrt2 - 1;
    # S_high = [[q, -q], [-q, q]] with q = (1 - c) / (sqrt2 sqrt(1 + c^2)) = sqrt(2 - sqrt2) / 2 = sin(22.5 deg)
    q = math.sin(math.pi / 8)
    p = {"alpha": 0.5, "beta": 0.5, "lamb": 1.0, "mu": 1.0, "reweight": False}
    S = losses_jdsh.similarity(IMG, TXT, p)
    off = 0.5 * (-1) + 0.5 * (SQ2 - 1) - q
    assert torch.allclose(S, torch.tensor([[1 + q, off], [off, 1 + q]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(losses_jdsh.similarity(IMG, TXT, {**p, "mu": 1.5}), 1.5 * S)


def test_jdsh_reweighting_hand_worked():
    p = {
        "loc_left": -0.5,
        "alpha_left": 1.0,
        "scale_left": 0.1,  # left = -0.6
        "loc_right": 0.0,
        "beta_right": 2.0,
        "scale_right": 0.1,  # right = 0.2
        "l1": 0.3,
        "l2": 0.4,
        "min": -0.64,
        "max": 0.75,
    }
    S = torch.tensor([[-1.0, 0.0], [0.5, -0.6]], dtype=torch.float64)
    out = losses_jdsh.reweight(S, p)
    expected = [
        [-(1 + 0.3 * math.exp(1 - 0.64)), 0.0],
        [(1 + 0.4 * math.exp(0.5 - 0.75)) * 0.5, -0.6],
    ]  # -0.6 is not < left
    assert torch.allclose(out, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_jdsh_default_similarity_by_hand():
    """Two pairs: images orthogonal, captions identical. S_I = 2 cos - 1 = [[1, -1], [-1, 1]], S_T = all ones,
    rownorm(S_I) rownorm(S_T)^T = 0, so S = 1.5 (0.2 S_I + 0.4 S_T) = [[0.9, 0.3], [0.3, 0.9]] with the authors'
    final weights (0.4 / 0.3 / 0.3 would give [[1.05, 0.15], [0.15, 1.05]])."""
    p = method_params("jdsh", "ucm")
    img = torch.tensor([[3.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    txt = torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    S = losses_jdsh.similarity(img, txt, p)
    assert torch.allclose(S, torch.tensor([[0.9, 0.3], [0.3, 0.9]], dtype=torch.float64), atol=1e-12)


def test_authors_settings():
    d, j, jr = method_params("djsrh", "ucm"), method_params("jdsh", "ucm"), method_params("jdsh", "rsicd")
    assert (d["beta"], d["eta"], d["mu"], d["lambda1"], d["lambda2"]) == (0.6, 0.4, 1.5, 0.1, 0.1)
    # the weights of the authors' final configuration (UCM and RSICD alike)
    for p in (j, jr):
        weights = (p["alpha"], p["beta"], p["lamb"], p["mu"], p["intra"], p["reweight"])
        assert weights == (0.2, 0.4, 0.4, 1.5, 0.1, False)
    assert (jr["loc_left"], jr["scale_left"], jr["scale_right"]) == (-0.46, 0.072, 0.088)
    for p in (d, j):
        assert (
            p["epochs"],
            p["batch_size"],
            p["lr_img"],
            p["lr_txt"],
            p["momentum"],
            p["weight_decay"],
            p["hidden"],
        ) == (300, 32, 0.01, 0.01, 0.9, 5e-4, 4096)
    assert method_params("djsrh", "demo") == d  # datasets without their own configuration take UCM's


def test_full_batches_drop_the_remainder():
    order = torch.randperm(10)
    batches = full_batches(order, 4)
    assert [len(b) for b in batches] == [4, 4] and torch.equal(torch.cat(batches), order[:8])
    assert [len(b) for b in full_batches(order, 32)] == [10]  # fewer samples than a batch: one batch of all


# ---- one training step against the formulas ---------------------------------------------------------
N_TRAIN, BITS, D_IMG, D_TXT = 9, 5, 4, 6
IDX = [7, 1, 4, 0, 8, 2]
EPOCH = 3  # alpha = sqrt(EPOCH + 1) = 2


class TinyNet(nn.Module):
    """L2-normalise -> Linear -> tanh(alpha h): the baselines' network without its hidden layer."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, BITS)
        self.alpha = 1.0

    def forward(self, x):
        return torch.tanh(self.alpha * self.lin(nn.functional.normalize(x, dim=1)))


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image_net, self.text_net = TinyNet(D_IMG), TinyNet(D_TXT)

    def set_alpha(self, epoch):
        self.image_net.alpha = self.text_net.alpha = math.sqrt(epoch + 1)


def make_trainer(method, **overrides):
    params = {**method_params(method, "ucm"), "lr_img": 0.05, "lr_txt": 0.03, "weight_decay": 0.01, **overrides}
    cfg = TrainConfig(dataset="ucm", bit=BITS, method=method, method_params=params, batch_size=len(IDX))
    g = torch.Generator().manual_seed(3)
    views = {
        "i1": torch.randn(N_TRAIN, D_IMG, generator=g, dtype=torch.float64),
        "t1": torch.randn(N_TRAIN, D_TXT, generator=g, dtype=torch.float64),
    }
    trainer = BaselineTrainer(cfg, views, None, None, torch.device("cpu"), model=TinyModel().double())
    trainer.model.set_alpha(EPOCH)
    return trainer, params, views


def cos(u, v):
    return float(u @ v / (u.norm() * v.norm()))


def reference_S(method, img, txt, p):
    """The similarity matrix entry by entry (python floats)."""
    n = len(img)
    s_i = [[2 * cos(img[a], img[b]) - 1 for b in range(n)] for a in range(n)]
    s_t = [[2 * cos(txt[a], txt[b]) - 1 for b in range(n)] for a in range(n)]
    if method == "djsrh":
        st = [[p["beta"] * s_i[a][b] + (1 - p["beta"]) * s_t[a][b] for b in range(n)] for a in range(n)]
        return [
            [
                p["mu"] * ((1 - p["eta"]) * st[a][b] + p["eta"] * sum(st[a][k] * st[b][k] for k in range(n)) / n)
                for b in range(n)
            ]
            for a in range(n)
        ]
    norm_i = [math.sqrt(sum(v * v for v in row)) for row in s_i]
    norm_t = [math.sqrt(sum(v * v for v in row)) for row in s_t]
    high = [
        [sum(s_i[a][k] * s_t[b][k] for k in range(n)) / (norm_i[a] * norm_t[b]) for b in range(n)] for a in range(n)
    ]
    out = []
    for a in range(n):
        row = []
        for b in range(n):
            v = p["alpha"] * s_i[a][b] + p["beta"] * s_t[a][b] + p["lamb"] * (high[a][b] + high[b][a]) / 2
            if p["reweight"]:
                left = p["loc_left"] - p["alpha_left"] * p["scale_left"]
                right = p["loc_right"] + p["beta_right"] * p["scale_right"]
                if v < left:
                    v = (1 + p["l1"] * math.exp(-(v - p["min"]))) * v
                elif v > right:
                    v = (1 + p["l2"] * math.exp(v - p["max"])) * v
            row.append(p["mu"] * v)
        out.append(row)
    return out


def reference_step(method, trainer, params, views):
    """Loss terms and the parameters after one SGD step with momentum (first step: p - lr (grad + wd p))."""
    names = dict(trainer.model.named_parameters())
    p = {k: v.detach().clone().requires_grad_(True) for k, v in names.items()}
    img, txt = views["i1"][IDX], views["t1"][IDX]
    S = torch.tensor(reference_S(method, img, txt, params), dtype=torch.float64)
    alpha = math.sqrt(EPOCH + 1)

    def code(x, prefix):
        x = x / x.norm(dim=1, keepdim=True)
        return torch.tanh(alpha * (x @ p[f"{prefix}.lin.weight"].T + p[f"{prefix}.lin.bias"]))

    ci, ct = code(img, "image_net"), code(txt, "text_net")
    n = len(IDX)

    def mse(a_rows, b_rows, transpose=False):
        total = 0
        for a in range(n):
            for b in range(n):
                u, v = (a_rows[b], b_rows[a]) if transpose else (a_rows[a], b_rows[b])
                total = total + ((u @ v) / (u.norm() * v.norm()) - S[a, b]) ** 2
        return total / (n * n)

    ii, it, tt = mse(ci, ci), mse(ci, ct), mse(ct, ct)
    if method == "djsrh":
        terms = {"image_image": ii, "image_text": it, "text_text": tt}
        total = params["lambda1"] * ii + it + params["lambda2"] * tt
    else:
        diag = sum((ci[k] @ ct[k]) / (ci[k].norm() * ct[k].norm()) for k in range(n)) / n
        # B_T B_I^T entry (a, b) is <t_a, i_b>: the transpose of B_I B_T^T
        cross = it + mse(ct, ci) - diag
        terms = {"image_image": ii, "image_text": cross, "text_text": tt}
        total = params["intra"] * ii + cross + params["intra"] * tt
    terms["total"] = total
    total.backward()
    terms = {k: v.detach() for k, v in terms.items()}
    after = {}
    for k, t in p.items():
        lr = params["lr_img"] if k.startswith("image_net") else params["lr_txt"]
        after[k] = (t - lr * (t.grad + params["weight_decay"] * t)).detach()
    return {k: v.item() for k, v in terms.items()}, after


@pytest.mark.parametrize(
    "method,overrides", [("djsrh", {}), ("jdsh", {}), ("jdsh", {"reweight": True, "loc_left": 0.0, "loc_right": 0.2})]
)
def test_one_training_step_matches_the_formulas(method, overrides):
    trainer, params, views = make_trainer(method, **overrides)
    expected_terms, expected_params = reference_step(method, trainer, params, views)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    terms = trainer._train_step(torch.tensor(IDX))
    assert {k: float(v) for k, v in terms.items()} == pytest.approx(expected_terms, rel=1e-10)
    for name, value in trainer.model.named_parameters():
        assert not torch.allclose(value, before[name])  # every parameter moved ...
        assert torch.allclose(value.detach(), expected_params[name], atol=1e-12), name  # ... as the formulas say


def test_jdsh_reweighting_reaches_the_step():
    """The thresholds chosen in the parametrised step above do reweight some pairs of that batch."""
    trainer, params, views = make_trainer("jdsh", reweight=True, loc_left=0.0, loc_right=0.2)
    plain = losses_jdsh.similarity(views["i1"][IDX], views["t1"][IDX], {**params, "reweight": False})
    assert not torch.allclose(plain, losses_jdsh.similarity(views["i1"][IDX], views["t1"][IDX], params))


# ---- main.py: train, resume, test, search's loader ----------------------------------------------------
SCHEDULE = ("--dataset", "demo", "--bit", "8", "--batch-size", "16", "--param", "hidden=32")


def base_args(data, out, method, *extra):
    return (*SCHEDULE, "--method", method, "--data-dir", str(data), "--out-dir", str(out), "--device", "cpu", *extra)


@pytest.mark.parametrize("method", ["djsrh", "jdsh"])
def test_resume_gives_the_same_model(method, demo_features, tmp_path, monkeypatch):
    full, part = tmp_path / "full", tmp_path / "part"
    run_main(*base_args(demo_features, full, method, "--epochs", "3"))
    original = BaselineTrainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(BaselineTrainer, "train_epoch", interrupted)
    with pytest.raises(SystemExit) as exc:
        run_main(*base_args(demo_features, part, method, "--epochs", "3"))
    assert exc.value.code == 130
    monkeypatch.setattr(BaselineTrainer, "train_epoch", original)
    name = f"{method}_demo_8_test_default"
    state = torch.load(part / name / "checkpoint_last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["method"] == method and state["hidden"] == 32
    run_main(*base_args(demo_features, part, method, "--epochs", "3", "--resume"))
    a = torch.load(full / name / "checkpoint_last.pt", weights_only=True)
    b = torch.load(part / name / "checkpoint_last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    codes_a, codes_b = np.load(full / name / "codes.npz"), np.load(part / name / "codes.npz")
    for key in ("q_img", "q_txt", "db_img", "db_txt"):
        assert np.array_equal(codes_a[key], codes_b[key])
    config = json.loads((part / name / "config.json").read_text())
    assert config["method"] == method and config["method_params"]["hidden"] == 32 and config["batch_size"] == 16
    assert (
        config["valid_freq"] == 300 and config["resumed"][0]["after_epoch"] == 2
    )  # the authors' interval: the last epoch only
    history = [json.loads(line) for line in (part / name / "history.jsonl").read_text().splitlines()]
    assert set(history[0]["loss"]) == {"total", "image_image", "image_text", "text_text"}
    assert [h["epoch"] for h in history if "valid" in h] == [3]


def test_baseline_run_tests_and_loads_in_search(demo_features, tmp_path, capsys):
    from utils.search.index import TrainedRun

    metrics = run_main(*base_args(demo_features, tmp_path, "jdsh", "--epochs", "2"))
    run_dir = tmp_path / "jdsh_demo_8_test_default"
    again = run_main("--test", "--method", "jdsh", "--dataset", "demo", "--bit", "8", "--out-dir", str(tmp_path))
    assert again["map@20"] == metrics["map@20"]
    model = TrainedRun.open(run_dir).load_model("cpu")
    codes = np.load(run_dir / "codes.npz")
    split = json.loads((run_dir / "split.json").read_text())
    from configs.datasets import get_dataset
    from utils.data.features import load_features, resolve_files

    ds = get_dataset("demo")
    feats = load_features(ds, resolve_files(ds, demo_features, "default"), "default")
    img, txt = model.encode(
        torch.as_tensor(feats.image[split["query"]]), torch.as_tensor(feats.caption[split["query_captions"]])
    )
    assert np.array_equal(img.numpy().astype(np.int8), codes["q_img"]) and np.array_equal(
        txt.numpy().astype(np.int8), codes["q_txt"]
    )
    # the method names the run folder and is part of the run: --test with another method finds no run
    with pytest.raises(SystemExit):
        run_main("--test", "--method", "djsrh", "--dataset", "demo", "--bit", "8", "--out-dir", str(tmp_path))
    assert "no trained model" in capsys.readouterr().err


def test_param_errors_are_one_line(demo_features, tmp_path, capsys):
    for extra, match in (
        (("--param", "nope=1"), "has no such setting"),
        (("--param", "mu=x"), "expected a float"),
        (("--param", "mu"), "KEY=VALUE"),
    ):
        with pytest.raises(SystemExit) as exc:
            run_main(*base_args(demo_features, tmp_path, "djsrh", "--epochs", "1", *extra))
        assert exc.value.code == 2 and match in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_main("--dataset", "demo", "--data-dir", str(demo_features), "--out-dir", str(tmp_path), "--param", "mu=1")
    assert "baseline" in capsys.readouterr().err


# ---- the grid -----------------------------------------------------------------------------------------
def test_grid_skips_finished_and_resumes_interrupted(demo_features, tmp_path):
    out = tmp_path / "grid"
    # an interrupted run: set to 2 epochs, 1 finished (its config says 2, its history 1, no metrics.json)
    run_main(*base_args(demo_features, out, "djsrh", "--epochs", "1"))
    run_dir = out / "djsrh_demo_8_test_default"
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "epochs": 2}))
    (run_dir / "metrics.json").unlink()
    grid = (
        "--dataset",
        "demo",
        "--bit",
        "8",
        "16",
        "--method",
        "djsrh",
        "jdsh",
        "--batch-size",
        "16",
        "--param",
        "hidden=32",
        "--data-dir",
        str(demo_features),
        "--out-dir",
        str(out),
        "--device",
        "cpu",
        "--epochs",
        "2",
    )
    first = run_main(*grid)
    assert first["runs"][str(run_dir)] == "interrupted"
    assert sorted(first["runs"].values()) == ["interrupted", "new", "new", "new"]
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["resumed"][0]["after_epoch"] == 1
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint_last.pt")}
    second = run_main(*grid)
    assert set(second["runs"].values()) == {"finished"}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint_last.pt")} == stamps  # nothing retrained
    table = (out / "compare_test_default_demo.md").read_text()
    assert "| djsrh |" in table and "| jdsh |" in table and "8 bits I->T / T->I" in table and "16 bits avg" in table
    assert {p.name for p in out.glob("compare_*.png")} == {
        "compare_test_default_demo_8.png",
        "compare_test_default_demo_16.png",
    }
    metrics = json.loads((out / "jdsh_demo_16_test_default" / "metrics.json").read_text())["map@20"]
    rows = list(csv.DictReader(io.StringIO((out / "compare_test_default_demo.csv").read_text())))
    row = next(r for r in rows if r["method"] == "jdsh" and r["bit"] == "16")
    assert float(row["i2t_mean"]) == pytest.approx(metrics["i2t"], abs=1e-6)
    assert float(row["avg_mean"]) == pytest.approx(
        np.mean([metrics[d] for d in ("i2t", "t2i", "i2i", "t2t")]), abs=1e-6
    )


def test_grid_refuses_resume_and_test_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_main("--method", "djsrh", "jdsh", "--resume", "--out-dir", str(tmp_path))
    assert "grid" in capsys.readouterr().err


# ---- the table writer on fixed metrics -------------------------------------------------------------------
def fake_result(method, bit, seed, i2t, t2i, i2i, t2t, dataset="ucm"):
    from utils.train.compare import RunResult

    return RunResult(None, dataset, method, bit, seed, i2t, t2i, (i2t + t2i + i2i + t2t) / 4)


def test_table_on_fixed_metrics():
    from utils.train.compare import cells, csv_table, markdown_table

    results = [
        fake_result("duch", 64, 1, 0.80, 0.90, 0.70, 0.60),
        fake_result("duch", 64, 2, 0.70, 0.80, 0.70, 0.60),
        fake_result("djsrh", 16, 1, 0.50, 0.40, 0.30, 0.20),
        fake_result("jdsh", 64, 1, 0.61, 0.62, 0.63, 0.64),
    ]
    table = cells(results)["ucm"]
    md = markdown_table("ucm", table)
    lines = md.splitlines()
    assert lines[2] == "| method | 16 bits I->T / T->I | 16 bits avg | 64 bits I->T / T->I | 64 bits avg |"
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[4:]}
    assert list(rows) == ["duch", "djsrh", "jdsh"]  # methods in the order of METHODS
    # duch 64: two seeds, mean 0.75 / 0.85, sample std 0.0707; avg of the four directions 0.75 and 0.7, mean 0.725
    paper = published("ucm", "duch", 64)
    assert f"0.750 ± 0.071 / 0.850 ± 0.071 [{paper[0]:.3f} / {paper[1]:.3f}] (n=2)" in rows["duch"]
    assert "0.725 ± 0.035" in rows["duch"]
    assert "| - [0.760 / 0.799] | - |" in rows["duch"]  # the paper's 16-bit cell, no run of ours
    assert "0.500 / 0.400 (n=1) | 0.350 |" in rows["djsrh"] and "[0.820 / 0.884]" in rows["jdsh"]
    parsed = list(csv.DictReader(io.StringIO(csv_table("ucm", table))))
    duch = next(r for r in parsed if r["method"] == "duch")
    assert (duch["n"], duch["seeds"]) == ("2", "1 2")
    assert float(duch["i2t_std"]) == pytest.approx(np.std([0.8, 0.7], ddof=1), abs=1e-6)
    assert (float(duch["paper_i2t"]), float(duch["paper_t2i"])) == paper
    assert next(r for r in parsed if r["method"] == "djsrh")["paper_i2t"] == ""


def test_table_refuses_two_runs_of_one_seed():
    from utils.errors import DUCHError
    from utils.train.compare import cells

    with pytest.raises(DUCHError, match="seed 1"):
        cells([fake_result("duch", 64, 1, 0.8, 0.9, 0.7, 0.6), fake_result("duch", 64, 1, 0.7, 0.8, 0.7, 0.6)])


def test_evaluate_compare_writes_the_table_of_run_folders(demo_features, tmp_path, capsys):
    import evaluate

    for seed in ("1", "2"):
        run_main(*base_args(demo_features, tmp_path / seed, "djsrh", "--epochs", "1", "--seed", seed))
    runs = [tmp_path / seed / "djsrh_demo_8_test_default" for seed in ("1", "2")]
    out = tmp_path / "cmp"
    argv = ["--compare", *map(str, runs), "--compare-dir", str(out)]
    written = evaluate.main(evaluate.get_args_parser().parse_args(argv))
    assert sorted(written["tables"]) == [str(out / "compare_demo.csv"), str(out / "compare_demo.md")]
    values = [json.loads((r / "metrics.json").read_text())["map@20"]["i2t"] for r in runs]
    row = next(csv.DictReader(io.StringIO((out / "compare_demo.csv").read_text())))
    assert (row["method"], row["n"], row["seeds"]) == ("djsrh", "2", "1 2")
    assert float(row["i2t_mean"]) == pytest.approx(np.mean(values), abs=1e-6)
    assert float(row["i2t_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-6)
    assert (out / "compare_demo_8.png").is_file()
    with pytest.raises(SystemExit) as exc:  # an unfinished run folder: one line
        evaluate.main(evaluate.get_args_parser().parse_args(["--compare", str(tmp_path)]))
    assert exc.value.code == 2 and "not a run folder" in capsys.readouterr().err
    assert row["select"] == "map"
    from utils.train.compare import file_part

    assert file_part("../x") == "_x" and file_part("..") == "dataset" and file_part("a b/c") == "a_b_c"
    # a config.json's dataset name never leads the outputs out of --compare-dir, nor names a folder path
    for seed, name in (("1", "../../escaped"), ("2", str(tmp_path / "abs" / "mine.json"))):
        config = json.loads((runs[int(seed) - 1] / "config.json").read_text())
        (runs[int(seed) - 1] / "config.json").write_text(json.dumps(dict(config, dataset=name)))
    out2 = tmp_path / "cmp2"
    written = evaluate.main(evaluate.get_args_parser().parse_args(["--compare", *map(str, runs), "--compare-dir",
                                                                   str(out2)]))
    made = sorted(p.name for p in out2.iterdir())
    assert all(Path(p).parent == out2 for p in written["tables"] + written["figures"])
    assert made == ["compare_escaped.csv", "compare_escaped.md", "compare_escaped_8.png",
                    "compare_mine.csv", "compare_mine.md", "compare_mine_8.png"]
    assert not list(tmp_path.glob("escaped*")) and not (tmp_path / "abs").exists()
